"""``python -m evo_snn.search``: neuroevolutionary structure search for sparse SNNs.

CLI -> Config -> data set -> dense teacher -> NSGA-II over genomes (fitness: sparse
teacher -> KD-trained student -> validation accuracy and sparsity) -> Pareto front
-> run directory -> export of the best-accuracy and knee members (test accuracy
measured once, here, at the end).

Each trained student goes to the run's ``StudentStore`` (``<run>/checkpoints/students/``,
``evo_snn.state.store``) as its result arrives; the run logger and the checkpoint writer are
search callbacks (``cb(search)``). After every generation the search state goes to
``<run>/checkpoints/`` (``evo_snn.state.checkpoint``); ``--resume RUN_DIR`` continues an interrupted (or completed,
with a larger ``--generations``) run from its last checkpoint with the run's own
config.json, data root and teacher.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
import traceback
from dataclasses import replace
from pathlib import Path

import pandas as pd
import torch
from tqdm.auto import tqdm

from evo_snn.atomic import DISK_ERRNOS
from evo_snn.state.checkpoint import (
    Checkpoint,
    CheckpointError,
    CheckpointWriter,
    has_checkpoint,
    load_checkpoint,
    student_store,
)
from evo_snn.cli import show_progress
from evo_snn.config import Config, ConfigError, load_config, read_run_config
from evo_snn.data import DATASETS, DatasetFormatError, load_splits
from evo_snn.evaluation.evaluator import ReplayEvaluator, genome_fitness, make_evaluator
from evo_snn.deploy.export import finalize
from evo_snn.evaluation.fitness import FitnessContext, default_device
from evo_snn.structure.genome import GenomeOps
from evo_snn.training.kd import kd_mode
from evo_snn.models import build_model, check_backend_request, model_names, select_backend
from evo_snn.search.nsga import StructureSearch
from evo_snn.analysis.plots import plot_run
from evo_snn.structure.pruning import prunable_layers, weight_magnitudes
from evo_snn.state.rundir import (RunDir, RunDirError, RunLogger, SearchFailedError, failure_summary, pareto_frame, reclaim_sigterm,
                     row_metrics, sigterm_as_interrupt)
from evo_snn import threads
from evo_snn.training.teacher import PARTIAL_FILE, TeacherLoadError
from evo_snn.training.teacher import prepare as prepare_teachers
from evo_snn.training.train import check_hot_path, cpu_state

EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m evo_snn.search",
        description="Search sparse structure of a spiking neural network with NSGA-II: each genome's masks "
        "prune a dense teacher (the sparse teacher), which KD-trains a student; objectives are the student's "
        "validation accuracy and sparsity. Leaves a run directory with the Pareto front and exported checkpoints.",
    )
    p.add_argument("--dataset", choices=DATASETS, default=None,
                   help="data set (default: synthetic, embedded, needs no files)")
    p.add_argument("--data-root", default=None, help="folder of the data set (N-MNIST: holds Train/ and Test/; "
                   "DVS128 Gesture: the DvsGesture folder with the .aedat files and trials lists; CIFAR: "
                   "cifar-10-batches-py/ or cifar-100-python/ or their parent; Tiny-ImageNet: tiny-imagenet-200/)")
    p.add_argument("--config", default=None, help="search-space YAML (default: search_spaces/<dataset>.yaml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set kd.alpha=0.5 --set data.frames=16 (repeatable)")
    p.add_argument("--model", choices=model_names(), default=None,
                   help="model from the registry (model.name; default: the search space's)")
    p.add_argument("--population", type=int, default=None, help="population size, a multiple of 4 (search.population)")
    p.add_argument("--generations", type=int, default=None, help="generations after the initial one (search.generations)")
    p.add_argument("--workers", type=int, default=None, help="parallel evaluations; 1 = serial in this process, "
                   ">1 = local Ray actors (search.workers)")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="torch CPU threads of the driver and of each worker (train.threads; default: fitted to the "
                   "usable CPUs, the workers and the cores other processes keep busy, re-checked while training)")
    p.add_argument("--address", default=None, help="address of an existing Ray cluster (e.g. 'auto'); "
                   "evaluations then run on its workers")
    p.add_argument("--seed", type=int, default=None, help="root seed of the run (search.seed)")
    p.add_argument("--teacher", default=None, help="dense teacher state_dict (teacher/teacher.pt of an earlier run) "
                   "to load instead of training one")
    p.add_argument("--out", default=None, help="run directory (default: runs/<timestamp>-<dataset>-<tag>)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (per-generation lines remain); "
                   "bars are shown only when stderr is a terminal unless --progress is given")
    p.add_argument("--progress", action="store_true", help="progress bars even when stderr is not a terminal")
    p.add_argument("--resume", metavar="RUN_DIR", default=None,
                   help="continue the run in RUN_DIR from its last checkpoint (after an interruption, a crash, or to "
                   "extend a completed run with a larger --generations), with its own config.json, teacher and "
                   "data root; only --generations, --workers, --threads, --address, --data-root and --no-progress may be given")
    return p


# flags that would change the search space, the data or the output of a run: refused with --resume
RESUME_REFUSED = {"dataset": "--dataset", "config": "--config", "overrides": "--set", "seed": "--seed", "out": "--out",
                  "model": "--model", "population": "--population", "teacher": "--teacher"}


def next_steps(run_path: Path, uid: str | None = None) -> str:
    """The lines printed at the end of a run (and by ``--resume`` of a complete run): where
    the front and its plot are, and the commands that come next (``uid``: an exported member)."""
    r = str(run_path)
    cmds = [("front table", f"python -m evo_snn.pareto {r}"),
            ("vs pruning", f"python -m evo_snn.baselines {r}"),
            ("export", f"python -m evo_snn.export {r} --pick knee    (or --pick 'sparsity>=0.7')"),
            ("reload", f"python -c \"import evo_snn; s, t, info = evo_snn.load_exported('{r}/exported/{uid or '<uid>'}')\""
                       "    (reset_net between batches)")]
    return "\n".join([f"  front:       {run_path / 'pareto.csv'}", f"  plot:        {run_path / 'plots' / 'pareto.png'}",
                      "next:"] + [f"  {label + ':':<12} {c}" for label, c in cmds])


def _cli_overrides(args) -> list[str]:
    flags = {"model": "model.name", "population": "search.population", "generations": "search.generations",
             "workers": "search.workers", "seed": "search.seed", "threads": "train.threads"}
    return [f"{key}={getattr(args, name)}" for name, key in flags.items() if getattr(args, name) is not None]


def check_model(cfg, splits, device: torch.device | None = None) -> None:
    """Build the configured model once so that a bad model.* or genome.prunable fails
    before any output is written, and check that ``model.neuron_backend`` and ``train.amp``
    can run on ``device`` (default: the run's device); raises ConfigError."""
    try:
        net = build_model(cfg.model, splits.frame_shape, splits.num_classes)
        prunable_layers(net, cfg.genome.prunable)
    except ValueError as e:
        raise ConfigError(f"model {cfg.model.name!r} with input {list(splits.frame_shape)}: {e}") from e
    device = device or default_device()
    check_hot_path(cfg.train, device)
    check_backend_request(cfg.model.neuron_backend, device)
    if device.type == "cuda" and cfg.model.neuron_backend != "auto":
        select_backend(net.to(device), device, cfg.model.neuron_backend)  # imports and runs here, or ConfigError


def run_search(args, argv: list[str]) -> int:
    """A new run (or, with ``args.resume``, ``resume_search``); returns the exit code."""
    if args.resume is not None:
        return resume_search(args, argv)
    try:
        cfg = load_config(args.dataset or "synthetic", args.config, list(args.overrides) + _cli_overrides(args))
        progress = show_progress(args)
        splits = load_splits(cfg.dataset, args.data_root, cfg.data, seed=cfg.split_seed(), progress=progress)
        cfg = replace(cfg, data=replace(cfg.data, classes=splits.class_names or ()))  # into config.json
        check_model(cfg, splits)
        if args.teacher is not None and not Path(args.teacher).is_file():  # before any output is written
            raise RunDirError(f"--teacher {args.teacher}: no such file; pass the teacher/teacher.pt of an earlier run")
        run = RunDir.create(args.out, cfg.dataset, cfg.search.tag)
        _announce(run.path)
        run.lock()  # one writer per run directory (released by _execute, or when this process ends)
    except (ConfigError, DatasetFormatError, RunDirError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE

    device = default_device()
    n_evals = cfg.search.population * (cfg.search.generations + 1)
    if n_evals > 2000:  # a typo in --population or --generations should not run for days unnoticed
        tqdm.write(f"note: population {cfg.search.population} x {cfg.search.generations + 1} generations = {n_evals} "
                   "genome evaluations; the generation lines give the ETA after generation 0 (Ctrl-C stops, --resume continues)")
    run.write_json("config.json", cfg.to_dict())
    run.start(argv, cfg.search.seed, str(device), data_root=str(Path(args.data_root).resolve()) if args.data_root else None)
    tqdm.write(f"run directory: {run.path}")
    return _execute(run, cfg, splits, device, args)


def resume_search(args, argv: list[str]) -> int:
    """``--resume RUN_DIR``: continue a run from ``RUN_DIR/checkpoints``.

    Reads RUN_DIR/config.json (``--generations`` / ``--workers`` may replace
    search.generations / search.workers), reloads the data set from ``--data-root`` or
    the data root in manifest.json, the teacher from RUN_DIR/teacher/, and the search
    state; drops evaluations.jsonl lines of generations after the checkpoint (they are
    evaluated again, with the same uids and seeds). Exit 2 with a one-line error for a
    refused flag, a missing run directory, checkpoint or teacher file, an invalid
    config, a ``--generations`` below the checkpoint's generation, a run another
    process is writing (its ``run.lock`` is held; ``RunDir.lock`` is the only such
    check: a killed run's manifest still says 'running' and names a pid that may have
    been reused), or data that cannot be loaded (these leave manifest.json untouched), and
    for a teacher or checkpoint that does not fit the config (status 'failed'). A run
    stopped before its first checkpoint goes to ``restart_search``.
    """
    refused = [flag for name, flag in RESUME_REFUSED.items() if getattr(args, name) not in (None, [])]
    if refused:
        print(f"error: --resume continues RUN_DIR with its own config, seed, data and output folder; "
              f"{', '.join(refused)} would change them (start a new run instead, e.g. with --teacher "
              f"RUN_DIR/teacher/teacher.pt)", file=sys.stderr)
        return EXIT_USAGE
    progress = show_progress(args)
    run = None
    try:
        run = RunDir.open(args.resume)
        _announce(run.path)
        run.lock()  # refuses a second search on RUN_DIR; a lock left by a dead process is free again
        if (not has_checkpoint(run.checkpoints) and (run.path / "config.json").is_file()
                and run.manifest.get("status") in ("running", "interrupted", "failed")):
            return restart_search(run, args, argv)  # stopped before its first checkpoint
        ckpt = load_checkpoint(run.checkpoints)
        cfg = read_run_config(run.path / "config.json", generations=args.generations, workers=args.workers,
                              threads=args.threads)
        if cfg.search.generations < ckpt.gen:
            raise ConfigError(f"{run.path} has completed generation {ckpt.gen}; --generations {cfg.search.generations} "
                              f"would go back (give --generations >= {ckpt.gen})")
        if run.manifest.get("status") == "completed" and cfg.search.generations == ckpt.gen:
            run.unlock()
            tqdm.write(f"{run.path} is complete (generation {ckpt.gen}/{cfg.search.generations}, exported "
                       f"{', '.join(run.manifest.get('exported', [])) or 'nothing'}); nothing to do. To run more "
                       f"generations: --resume {run.path} --generations {ckpt.gen + 5}\n"
                       f"{next_steps(run.path, min(run.manifest.get('exported') or [None]))}")
            return 0
        needed = ["teacher.pt"] + (["ann_teacher.pt"] if kd_mode(cfg.kd.mode).needs_ann else [])
        for name in needed:
            if not (run.teacher / name).is_file():
                raise RunDirError(f"{run.teacher / name} not found; a run resumes with its own teacher"
                                  + (" (kd.mode 'ann' needs its ANN teacher too)" if name == "ann_teacher.pt" else ""))
        data_root = args.data_root or run.manifest.get("data_root")
        splits = load_splits(cfg.dataset, data_root, cfg.data, seed=cfg.split_seed(), progress=progress)
        check_model(cfg, splits)
    except (ConfigError, DatasetFormatError, RunDirError, CheckpointError) as e:
        if run is not None:
            run.unlock()
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE

    device = default_device()
    # evaluations that finished after the checkpoint: their metrics (rows) and students (store) are reused
    finished = {(r["genome_key"], r["seed"]): row_metrics(r) for r in run.evaluations_after(ckpt.gen)
                if r.get("status") == "ok"}
    rows, dropped = run.truncate_evaluations(ckpt.gen)
    rows, history = rebuild_history(run, rows, ckpt)
    run.write_json("config.json", cfg.to_dict())  # search.generations / workers may have changed
    if args.data_root:
        run.manifest["data_root"] = str(Path(args.data_root).resolve())
    run.resume(argv, ckpt.gen, str(device), dropped_evaluations=dropped, reused_evaluations=len(finished), **history)
    tqdm.write(f"resuming {run.path} after generation {ckpt.gen} (up to generation {cfg.search.generations})"
               + (f"; {len(finished)} finished evaluations of the unfinished generation are reused, the others "
                  f"redone ({dropped} lines of it dropped from evaluations.jsonl, logged again)" if dropped else ""))
    return _execute(run, cfg, splits, device, args, ckpt=ckpt, rows=rows, finished=finished)


def rebuild_history(run: RunDir, rows: list[dict], ckpt: Checkpoint) -> tuple[list[dict], dict]:
    """Rows of evaluations.jsonl missing for the checkpointed generations (a deleted, emptied
    or torn file; D6 of issue 27): those of the checkpoint's population and archive members
    are rebuilt from their records (``rebuilt: true``) and the file is rewritten atomically;
    the rest cannot be rebuilt and are reported. Returns (rows, fields for the manifest's
    resume record: ``rebuilt_evaluations``, ``lost_evaluations``; empty when nothing was
    missing), and prints a warning naming what was rebuilt and lost."""
    expected = sum(int(rec.get("n_evals", 0)) for rec in ckpt.logbook if int(rec.get("gen", -1)) <= ckpt.gen)
    if len(rows) >= expected:
        return rows, {}
    have = {r.get("uid") for r in rows}
    records = {rec["uid"]: rec for rec in ckpt.state["population"] + ckpt.state["archive"]}
    rebuilt = [{"gen": rec["gen"], "uid": rec["uid"], "parents": list(rec["parents"]), "genome_key": rec["genome_key"],
                "status": rec["status"], "seed": rec["seed"], "ratios": [round(r, 6) for r in rec["ratios"]],
                **rec.get("metrics", {}), "rebuilt": True}
               for uid, rec in sorted(records.items()) if uid not in have and rec["gen"] <= ckpt.gen]
    rows = sorted(rows + rebuilt, key=lambda r: r["gen"])  # stable: the logged order within a generation
    run.write_jsonl("evaluations.jsonl", rows)
    lost = max(0, expected - len(rows))
    tqdm.write(f"warning: {run.path / 'evaluations.jsonl'} lacks {expected - len(rows) + len(rebuilt)} of the "
               f"{expected} evaluations of generations 0-{ckpt.gen}: {len(rebuilt)} rebuilt from the checkpoint "
               f"(marked 'rebuilt': true), {lost} lost (their metrics are not in the checkpoint)")
    return rows, {"rebuilt_evaluations": len(rebuilt), "lost_evaluations": lost}


def _teacher_files(cfg: Config) -> list[str]:
    """The files of teacher/ that a complete teacher has (``RunDir.save_teachers``)."""
    return ["teacher.pt", "metrics.json"] + (["ann_teacher.pt", "ann_metrics.json"] if kd_mode(cfg.kd.mode).needs_ann else [])


def restart_search(run: RunDir, args, argv: list[str]) -> int:
    """``--resume`` of a run stopped before its first checkpoint (its manifest still says
    'running', or 'interrupted' / 'failed'): the search starts again in the same run
    directory, with the run's config.json and data root. A complete teacher (``teacher/``
    holds every file ``save_teachers`` writes) is reused, else the teacher is trained (or
    loaded from the run's original ``--teacher``) again; generation-0 evaluations that had
    finished are reused (``ReplayEvaluator``), the rest is redone. ``run`` is locked; it is
    unlocked on every path. Exit 2 with a one-line error as ``resume_search``."""
    progress = show_progress(args)
    try:
        cfg = read_run_config(run.path / "config.json", generations=args.generations, workers=args.workers,
                              threads=args.threads)
        original = build_parser().parse_args(list(run.manifest.get("argv", []))[3:])
        data_root = args.data_root or run.manifest.get("data_root")
        splits = load_splits(cfg.dataset, data_root, cfg.data, seed=cfg.split_seed(), progress=progress)
        check_model(cfg, splits)
    except (ConfigError, DatasetFormatError, RunDirError) as e:
        run.unlock()
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except SystemExit:  # the recorded argv does not parse
        run.unlock()
        print(f"error: {run.path / 'manifest.json'}: its argv does not parse; start a new run", file=sys.stderr)
        return EXIT_USAGE
    teacher_done = all((run.teacher / name).is_file() for name in _teacher_files(cfg))
    finished = {}
    if teacher_done:
        finished = {(r["genome_key"], r["seed"]): row_metrics(r) for r in run.evaluations_after(-1) if r.get("status") == "ok"}
    else:  # start over cleanly: no partial teacher files, but the epoch checkpoint of its training
        for f in run.teacher.iterdir():
            if f.name != PARTIAL_FILE:
                f.unlink()
    rows, dropped = run.truncate_evaluations(-1)  # everything goes; reused evaluations are logged again
    for name in ("generations.csv", "pareto.csv"):
        (run.path / name).unlink(missing_ok=True)
    device = default_device()
    run.write_json("config.json", cfg.to_dict())
    if args.data_root:
        run.manifest["data_root"] = str(Path(args.data_root).resolve())
    run.resume(argv, -1, str(device), dropped_evaluations=dropped, reused_evaluations=len(finished),
               teacher_reused=teacher_done)
    tqdm.write(f"restarting {run.path}, stopped before its first checkpoint: "
               + ("its teacher and " if teacher_done else "the teacher trained from its last saved epoch; " if (run.teacher / PARTIAL_FILE).is_file() else "a new teacher; ") + f"{len(finished)} finished evaluations reused")
    args.teacher = None if teacher_done else original.teacher
    return _execute(run, cfg, splits, device, args, finished=finished, reuse_teacher=teacher_done)


def _execute(run: RunDir, cfg: Config, splits, device, args, ckpt: Checkpoint | None = None, rows: list[dict] | None = None,
             finished: dict | None = None, reuse_teacher: bool = False) -> int:
    """The stages in order: teachers -> search (fresh, or continued from ``ckpt``) ->
    export (the test split, once) -> plots; returns the exit code and records the final
    status in manifest.json. finished: ``{(genome key, seed): metrics}`` of evaluations
    that finished after ``ckpt``, served from the store instead of trained again
    (``ReplayEvaluator``); reuse_teacher: load the run's own teacher without a checkpoint
    (``restart_search``)."""
    progress = show_progress(args)
    tqdm.write(f"{cfg.dataset}: {len(splits.train)} train / {len(splits.val)} val / {len(splits.test)} test samples, "
               f"frames [T, C, H, W] = {list(splits.frame_shape)}, {splits.num_classes} classes")
    evaluator = None
    search = None
    try:
        t0 = time.perf_counter()
        gov = threads.configure(1, cfg.train.threads)  # all usable CPUs for the teacher (the driver alone)
        run.note(threads=gov.describe() if gov else {"torch_defaults": True, "threads": torch.get_num_threads()})
        teachers = prepare_teachers(cfg, splits, device, run_teacher_dir=run.teacher, resume=ckpt is not None or reuse_teacher,
                                    teacher_path=args.teacher, progress=progress)
        if teachers.fresh:
            run.save_teachers(teachers)
        run.note(backend=select_backend(teachers.dense, device, cfg.model.neuron_backend),
                 neuron_backend_requested=cfg.model.neuron_backend)

        layers = tuple(prunable_layers(teachers.dense, cfg.genome.prunable))
        ctx = FitnessContext(cfg, splits.train, splits.val, splits.frame_shape, splits.num_classes,
                             cpu_state(teachers.dense), layers, teachers.ann_state)
        evaluator = make_evaluator(cfg.search.workers, args.address, max_retries=cfg.search.max_retries,
                                   eval_timeout_s=cfg.search.eval_timeout_s, faults=cfg.faults, threads=cfg.train.threads)
        if cfg.search.workers > 1 or args.address:  # the workers train; the driver keeps its share
            threads.configure(cfg.search.workers, cfg.train.threads)
        if cfg.search.workers > 1 or args.address:
            reclaim_sigterm()  # ray.init installed its own SIGTERM handler, which aborts the driver
        run.note(evaluator=evaluator.describe())  # e.g. Ray's node IP and auth mode ('token')
        students = student_store(run.checkpoints)  # filled as results arrive; checkpoints reference it
        logger = RunLogger(run, progress=progress)
        checkpoints = CheckpointWriter(run.checkpoints, students, logbook=lambda: logger.generations)
        search = StructureSearch(GenomeOps(weight_magnitudes(teachers.dense, layers), cfg.genome),
                                 genome_fitness(ctx, args.address), cfg.search, cfg.genome, evaluator=evaluator,
                                 store=students, callbacks=[logger, checkpoints], progress=progress)
        if search.screener is not None:  # forward-only screening: its measured currency goes to the manifest
            run.note(forward_cost_ratio=search.screener.forward_cost_ratio,
                     screen={"mode": cfg.search.screen, "bn_batches": cfg.search.screen_bn_batches,
                             "samples": int(len(search.screener.val_index))})
        if finished:  # before _restore: adopting the checkpoint must not delete their students
            search.evaluator = evaluator = ReplayEvaluator(evaluator, finished, students)
        if ckpt is not None:
            _restore(run, search, ckpt, logger, checkpoints, rows)
        archive = search.run()
        evaluator.close()
        evaluator = None
        threads.configure(1, cfg.train.threads)  # the export's retraining and test pass run here
        if not any(ind.status != "failed" for ind in archive):  # nothing to export, plot or test
            msg = (f"every one of the {len(logger.rows)} evaluations failed, so there is no front to export "
                   f"(errors: {failure_summary(logger.rows)}); see {run.path / 'evaluations.jsonl'}")
            run.finish("failed", error=msg, n_evaluations=len(logger.rows))
            print(f"error: {msg}", file=sys.stderr)
            return 1

        exported = finalize(run, ctx, archive, students, teachers.dense, splits, teachers.metrics)
        evals = pd.DataFrame([r for r in logger.rows if r.get("status") == "ok"])
        plot_run(run.plots, evals, pareto_frame(archive), pd.DataFrame(logger.generations), teachers.metrics["val_accuracy"], exported)
        run.finish("completed", n_evaluations=len(logger.rows), exported=sorted(r["uid"] for r in exported),
                   wall_s=time.perf_counter() - t0)
        tqdm.write(f"done: {run.path}\n{next_steps(run.path, min((r['uid'] for r in exported), default=None))}")
        return 0
    except SearchFailedError as e:  # search.max_failed_generations generations without a successful evaluation
        run.finish("failed", error=str(e))
        print(f"error: {e}", file=sys.stderr)
        return 1
    except (TeacherLoadError, CheckpointError) as e:
        previous = (run.manifest.get("resumes") or [{}])[-1].get("previous_status") if (ckpt or reuse_teacher) else None
        if previous == "completed":  # a failed resume never rewrites a completed run's status (D9 of issue 27)
            entry = run.manifest["resumes"][-1]
            entry["error"] = f"{type(e).__name__}: {e}"
            run.manifest.update(status="completed", end=entry.get("previous_end"))
            run.write_json("manifest.json", run.manifest)
        else:
            run.finish("failed", error=f"{type(e).__name__}: {e}")
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        run.finish("interrupted")
        print(interrupted_message(run, cfg, search), file=sys.stderr)
        return 130
    except OSError as e:
        if e.errno not in DISK_ERRNOS:
            run.finish("failed", error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc())
            raise
        msg = f"{e.strerror or e} while writing {e.filename or run.path}: free some space, then continue with: " \
              f"python -m evo_snn.search --resume {run.path}"
        try:
            run.finish("failed", error=msg)
        except OSError:  # the manifest cannot be written either: it still says 'running'
            pass
        print(f"error: {msg}", file=sys.stderr)
        return 1
    except Exception as e:
        run.finish("failed", error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc())
        raise
    finally:
        if evaluator is not None:
            evaluator.close()
        run.unlock()


def interrupted_message(run: RunDir, cfg: Config, search: StructureSearch | None) -> str:
    """What Ctrl-C / SIGTERM prints: where the run stands and the command that continues it."""
    resume = f"python -m evo_snn.search --resume {run.path}"
    G = cfg.search.generations
    if search is None or search.gen < 0:
        teacher = all((run.teacher / name).is_file() for name in _teacher_files(cfg))
        partial = run.teacher / PARTIAL_FILE
        if teacher:
            where = "before generation 0 finished; the teacher is saved, so --resume starts generation 0 with it"
        elif partial.is_file():
            where = "while training the teacher; --resume continues its training from the last finished epoch"
        else:
            where = "while preparing the teacher, before its first epoch ended; --resume trains it again"
    elif search.gen >= G:
        where = f"after the last generation ({G}/{G}) was checkpointed, during the export; --resume exports again"
    else:
        where = (f"during generation {search.gen + 1}/{G}; generations 0-{search.gen} are checkpointed in "
                 f"{run.checkpoints}, and finished evaluations of generation {search.gen + 1} are reused")
    return f"interrupted {where}.\ncontinue with:\n  {resume}"


def _restore(run: RunDir, search: StructureSearch, ckpt: Checkpoint, logger: RunLogger, checkpoints: CheckpointWriter,
             rows: list[dict] | None) -> None:
    """Continue ``search`` from ``ckpt``: its state, the driver's torch RNG, the logger's rows
    and logbook, and the run's generations.csv / pareto.csv as of the checkpoint."""
    try:
        search.load_state_dict(ckpt.state)
    except ValueError as e:
        raise CheckpointError(f"checkpoint in {run.checkpoints} does not fit {run.path / 'config.json'}: {e}") from e
    if ckpt.torch_rng is not None:
        torch.set_rng_state(ckpt.torch_rng)
    checkpoints.adopt(ckpt)
    logger.rows = list(rows or [])
    logger.generations = list(ckpt.logbook)
    run.write_csv("generations.csv", pd.DataFrame(logger.generations))
    run.write_csv("pareto.csv", pareto_frame(search.archive))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    with sigterm_as_interrupt():
        return run_search(args, ["python", "-m", "evo_snn.search", *argv])


_ANNOUNCE_FD: int | None = None  # set in the child of ``supervised``: where the run directory is announced


def _announce(path: Path) -> None:
    """Tell the supervising parent (``supervised``) which run directory this process writes."""
    if _ANNOUNCE_FD is not None:
        os.write(_ANNOUNCE_FD, (str(Path(path).resolve()) + "\n").encode())


def supervised(argv: list[str] | None = None) -> int:
    """``python -m evo_snn.search``: ``main`` in a forked child, watched by this process.

    A search can die where Python cannot catch it: Ray's local node fate-shares with its
    dashboard agent and raylet, and when one of them is killed, Ray's core worker ends the
    driver at once (exit 1, no traceback, manifest.json left at 'running'; D2 of issue 27).
    The parent forwards SIGTERM and SIGHUP to the child, ignores SIGINT (Ctrl-C reaches the
    child through the terminal), and when the child ends while its manifest still says
    'running', marks the run 'failed' with a one-line reason and prints the ``--resume``
    command. Where ``os.fork`` is missing (Windows) it is ``main`` itself."""
    global _ANNOUNCE_FD
    if not hasattr(os, "fork"):
        return main(argv)
    read_fd, write_fd = os.pipe()
    parent = os.getpid()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the search
        _die_with_parent(parent)
        os.close(read_fd)
        _ANNOUNCE_FD = write_fd
        code = 1
        try:
            code = main(argv)
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
        except BaseException:
            traceback.print_exc()
            code = 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    os.close(write_fd)
    forward = lambda signum, frame: os.kill(pid, signum)  # noqa: E731
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, forward)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except InterruptedError:
            continue
    with os.fdopen(read_fd) as f:
        announced = [line.strip() for line in f if line.strip()]
    code = os.waitstatus_to_exitcode(status)
    if announced:
        _check_run_ended(Path(announced[-1]), pid, code)
    return code if code >= 0 else 128 - code


def _die_with_parent(parent: int) -> None:
    """SIGKILL this process when ``parent`` dies (Linux ``prctl(PR_SET_PDEATHSIG)``), so that
    a SIGKILL of ``python -m evo_snn.search`` still ends the search, as it did without the
    supervising parent; elsewhere nothing."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(137)


def _check_run_ended(path: Path, pid: int, code: int) -> None:
    """After the search process ``pid`` ended with ``code`` (negative: killed by that
    signal): a manifest it left at 'running' becomes 'failed' with the reason, and the
    ``--resume`` command is printed."""
    try:
        run = RunDir.open(path)
    except RunDirError:
        return
    m = run.manifest
    if m.get("status") != "running" or m.get("pid") != pid:
        return
    how = f"was killed by signal {-code}" if code < 0 else f"ended with exit code {code}"
    msg = (f"the search process {how} without recording why: Ray's local node dies with its raylet, GCS or dashboard "
           "agent, and then ends the driver at once (or the process was killed or ran out of memory); continue with: "
           f"python -m evo_snn.search --resume {run.path}")
    run.finish("failed", error=msg)
    print(f"error: {msg}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(supervised())
