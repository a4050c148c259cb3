"""``python -m evo_snn.search --resume RUN_DIR``: continue a run in its own directory, with
its own config.json, teacher and data root.

``resume_search`` continues from the last checkpoint (``evo_snn.state.checkpoint``; or
extends a completed run with a larger ``--generations``); a run stopped before its first
checkpoint goes to ``restart_search``, which starts the search again in the same
directory. Both reuse the evaluations that had finished after the checkpoint (their
students are in the run's store) and hand the prepared run to ``execute``, the stages
(``evo_snn.search.run._execute``), whose exit code they return.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable

from tqdm.auto import tqdm

from evo_snn.cli import show_progress
from evo_snn.config import ConfigError, read_run_config
from evo_snn.data import DatasetFormatError
from evo_snn.evaluation.fitness import default_device
from evo_snn.search.endings import next_steps
from evo_snn.search.options import EXIT_USAGE, RESUME_REFUSED, build_parser
from evo_snn.search.setup import data_stage
from evo_snn.search.stages import teacher_files
from evo_snn.search.supervise import announce
from evo_snn.state.checkpoint import Checkpoint, CheckpointError, has_checkpoint, load_checkpoint
from evo_snn.state.rundir import RunDir, RunDirError
from evo_snn.state.runlog import row_metrics
from evo_snn.training.kd import kd_mode
from evo_snn.training.teacher import PARTIAL_FILE


def resume_search(args, argv: list[str], execute: Callable[..., int]) -> int:
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
        announce(run.path)
        run.lock()  # refuses a second search on RUN_DIR; a lock left by a dead process is free again
        if (not has_checkpoint(run.checkpoints) and (run.path / "config.json").is_file()
                and run.manifest.get("status") in ("running", "interrupted", "failed")):
            return restart_search(run, args, argv, execute)  # stopped before its first checkpoint
        ckpt = load_checkpoint(run.checkpoints)
        cfg = read_run_config(run.path / "config.json", generations=args.generations, workers=args.workers,
                              threads=args.threads)
        if _nothing_to_do(run, cfg, ckpt):
            return 0
        splits = data_stage(cfg, args.data_root or run.manifest.get("data_root"), progress)
    except (ConfigError, DatasetFormatError, RunDirError, CheckpointError) as e:
        if run is not None:
            run.unlock()
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE

    device = default_device()
    # evaluations that finished after the checkpoint: their metrics (rows) and students (store) are reused
    finished = _finished_after(run, ckpt.gen)
    rows, dropped = run.truncate_evaluations(ckpt.gen)
    rows, history = rebuild_history(run, rows, ckpt)
    _record_resume(run, cfg, args, argv, ckpt.gen, device, dropped_evaluations=dropped,
                   reused_evaluations=len(finished), **history)
    tqdm.write(f"resuming {run.path} after generation {ckpt.gen} (up to generation {cfg.search.generations})"
               + (f"; {len(finished)} finished evaluations of the unfinished generation are reused, the others "
                  f"redone ({dropped} lines of it dropped from evaluations.jsonl, logged again)" if dropped else ""))
    return execute(run, cfg, splits, device, args, ckpt=ckpt, rows=rows, finished=finished)


def _nothing_to_do(run: RunDir, cfg, ckpt: Checkpoint) -> bool:
    """True (the run unlocked, the message and ``next_steps`` printed) when the run is
    complete up to ``search.generations``; else checks that it can go on: raises
    ConfigError for a ``--generations`` below the checkpoint's and RunDirError for a missing
    teacher file."""
    if cfg.search.generations < ckpt.gen:
        raise ConfigError(f"{run.path} has completed generation {ckpt.gen}; --generations {cfg.search.generations} "
                          f"would go back (give --generations >= {ckpt.gen})")
    if run.manifest.get("status") == "completed" and cfg.search.generations == ckpt.gen:
        run.unlock()
        tqdm.write(f"{run.path} is complete (generation {ckpt.gen}/{cfg.search.generations}, exported "
                   f"{', '.join(run.manifest.get('exported', [])) or 'nothing'}); nothing to do. To run more "
                   f"generations: --resume {run.path} --generations {ckpt.gen + 5}\n"
                   f"{next_steps(run.path, min(run.manifest.get('exported') or [None]))}")
        return True
    needed = ["teacher.pt"] + (["ann_teacher.pt"] if kd_mode(cfg.kd.mode).needs_ann else [])
    for name in needed:
        if not (run.teacher / name).is_file():
            raise RunDirError(f"{run.teacher / name} not found; a run resumes with its own teacher"
                              + (" (kd.mode 'ann' needs its ANN teacher too)" if name == "ann_teacher.pt" else ""))
    return False


def _finished_after(run: RunDir, gen: int) -> dict:
    """``{(genome key, seed): metrics}`` of the successful evaluations.jsonl rows of the
    generations after ``gen``: reused (``ReplayEvaluator``), not trained again."""
    return {(r["genome_key"], r["seed"]): row_metrics(r) for r in run.evaluations_after(gen) if r.get("status") == "ok"}


def _record_resume(run: RunDir, cfg, args, argv: list[str], from_gen: int, device, **fields) -> None:
    """config.json rewritten (search.generations / workers may have changed), a given
    ``--data-root`` kept, and the resume entry (``fields`` included) in manifest.json."""
    run.write_json("config.json", cfg.to_dict())
    if args.data_root:
        run.manifest["data_root"] = str(Path(args.data_root).resolve())
    run.resume(argv, from_gen, str(device), **fields)


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


def restart_search(run: RunDir, args, argv: list[str], execute: Callable[..., int]) -> int:
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
        splits = data_stage(cfg, args.data_root or run.manifest.get("data_root"), progress)
    except (ConfigError, DatasetFormatError, RunDirError) as e:
        run.unlock()
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except SystemExit:  # the recorded argv does not parse
        run.unlock()
        print(f"error: {run.path / 'manifest.json'}: its argv does not parse; start a new run", file=sys.stderr)
        return EXIT_USAGE
    teacher_done = all((run.teacher / name).is_file() for name in teacher_files(cfg))
    finished = {}
    if teacher_done:
        finished = _finished_after(run, -1)
    else:  # start over cleanly: no partial teacher files, but the epoch checkpoint of its training
        for f in run.teacher.iterdir():
            if f.name != PARTIAL_FILE:
                f.unlink()
    rows, dropped = run.truncate_evaluations(-1)  # everything goes; reused evaluations are logged again
    for name in ("generations.csv", "pareto.csv"):
        (run.path / name).unlink(missing_ok=True)
    device = default_device()
    _record_resume(run, cfg, args, argv, -1, device, dropped_evaluations=dropped, reused_evaluations=len(finished),
                   teacher_reused=teacher_done)
    tqdm.write(f"restarting {run.path}, stopped before its first checkpoint: "
               + ("its teacher and " if teacher_done else "the teacher trained from its last saved epoch; " if (run.teacher / PARTIAL_FILE).is_file() else "a new teacher; ") + f"{len(finished)} finished evaluations reused")
    args.teacher = None if teacher_done else original.teacher
    return execute(run, cfg, splits, device, args, finished=finished, reuse_teacher=teacher_done)
