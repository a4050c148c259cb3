"""``python -m evo_snn.search``: neuroevolutionary structure search for sparse SNNs.

CLI -> Config -> data set -> dense teacher -> NSGA-II over genomes (fitness: sparse
teacher -> KD-trained student -> validation accuracy and sparsity) -> Pareto front
-> run directory -> export of the best-accuracy and knee members (test accuracy
measured once, here, at the end).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
import time
import traceback

import pandas as pd
from tqdm.auto import tqdm

from .config import ConfigError, load_config
from .data import DATASETS, DatasetFormatError, load_splits
from .evaluator import make_evaluator
from .export import choose_exports, export_member
from .fitness import FitnessContext, default_device
from .genome import GenomeOps
from .models import build_model, model_names, select_backend
from .nsga import StructureSearch, hypervolume
from .plots import plot_run
from .pruning import prunable_layers, weight_magnitudes
from .rundir import RunDir, RunDirError, save_state_dict, sigterm_as_interrupt
from .teacher import TeacherLoadError, load_teacher, train_teacher
from .train import accuracy

EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m evo_snn.search",
        description="Search sparse structure of a spiking neural network with NSGA-II: each genome's masks "
        "prune a dense teacher (the sparse teacher), which KD-trains a student; objectives are the student's "
        "validation accuracy and sparsity. Leaves a run directory with the Pareto front and exported checkpoints.",
    )
    p.add_argument("--dataset", choices=DATASETS, default="synthetic",
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
    p.add_argument("--address", default=None, help="address of an existing Ray cluster (e.g. 'auto'); "
                   "evaluations then run on its workers")
    p.add_argument("--seed", type=int, default=None, help="root seed of the run (search.seed)")
    p.add_argument("--teacher", default=None, help="dense teacher state_dict (teacher/teacher.pt of an earlier run) "
                   "to load instead of training one")
    p.add_argument("--out", default=None, help="run directory (default: runs/<timestamp>-<dataset>-<tag>)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (per-generation lines remain)")
    return p


def _cli_overrides(args) -> list[str]:
    flags = {"model": "model.name", "population": "search.population", "generations": "search.generations",
             "workers": "search.workers", "seed": "search.seed"}
    return [f"{key}={getattr(args, name)}" for name, key in flags.items() if getattr(args, name) is not None]


class RunLogger:
    """Writes evaluations.jsonl, generations.csv and pareto.csv as the search goes."""

    def __init__(self, run: RunDir):
        self.run = run
        self.rows: list[dict] = []
        self.generations: list[dict] = []

    def on_evaluation(self, ind, result) -> None:
        row = {"gen": ind.gen, "uid": ind.uid, "parents": list(ind.parents), "genome_key": ind.genome.key,
               "status": ind.status, "seed": ind.seed, "ratios": [round(r, 6) for r in ind.genome.ratios], **ind.metrics}
        self.rows.append(row)
        self.run.append_jsonl("evaluations.jsonl", row)

    def on_generation(self, gen, pop, archive, n_evals, elapsed_s) -> None:
        front = pareto_frame(archive)
        rec = {"gen": gen, "n_evals": n_evals, "hypervolume": hypervolume(list(archive)),
               "best_accuracy": max(ind.fitness.values[0] for ind in pop),
               "mean_sparsity": sum(ind.fitness.values[1] for ind in pop) / len(pop),
               "front_size": len(front), "elapsed_s": elapsed_s}
        self.generations.append(rec)
        self.run.write_csv("generations.csv", pd.DataFrame(self.generations))
        self.run.write_csv("pareto.csv", front)
        top = front.sort_values("accuracy").iloc[-1]
        sparse = front.sort_values("sparsity").iloc[-1]
        tqdm.write(f"gen {gen}: {n_evals} evals, front {len(front)}, HV {rec['hypervolume']:.4f}, "
                   f"best acc {top.accuracy:.3f} @ sparsity {top.sparsity:.2f}, "
                   f"sparsest {sparse.sparsity:.2f} @ acc {sparse.accuracy:.3f}, {elapsed_s:.0f} s")


def pareto_frame(archive) -> pd.DataFrame:
    cols = ["uid", "accuracy", "sparsity", "teacher_accuracy", "genome_sparsity", "gen", "genome_key", "parents"]
    rows = [{"uid": ind.uid, "accuracy": ind.fitness.values[0], "sparsity": ind.fitness.values[1],
             "teacher_accuracy": ind.metrics.get("teacher_accuracy"), "genome_sparsity": ind.genome.sparsity,
             "gen": ind.gen, "genome_key": ind.genome.key, "parents": " ".join(ind.parents)}
            for ind in archive if ind.status != "failed"]
    return pd.DataFrame(rows, columns=cols).sort_values("sparsity", ignore_index=True)


def check_model(cfg, splits) -> None:
    """Build the configured model once so that a bad model.* or genome.prunable fails
    before any output is written; raises ConfigError."""
    try:
        prunable_layers(build_model(cfg.model, splits.frame_shape, splits.num_classes), cfg.genome.prunable)
    except ValueError as e:
        raise ConfigError(f"model {cfg.model.name!r} with input {list(splits.frame_shape)}: {e}") from e


def run_search(args, argv: list[str]) -> int:
    try:
        cfg = load_config(args.dataset, args.config, list(args.overrides) + _cli_overrides(args))
        progress = not args.no_progress
        seed = cfg.search.seed
        splits = load_splits(cfg.dataset, args.data_root, cfg.data, seed=seed, progress=progress)
        check_model(cfg, splits)
        run = RunDir.create(args.out, cfg.dataset, cfg.search.tag)
    except (ConfigError, DatasetFormatError, RunDirError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE

    device = default_device()
    run.write_json("config.json", cfg.to_dict())
    run.start(argv, seed, str(device))
    tqdm.write(f"run directory: {run.path}")
    tqdm.write(f"{cfg.dataset}: {len(splits.train)} train / {len(splits.val)} val / {len(splits.test)} test samples, "
               f"frames [T, C, H, W] = {list(splits.frame_shape)}, {splits.num_classes} classes")
    evaluator = None
    try:
        t0 = time.perf_counter()
        if args.teacher:
            teacher, tmetrics = load_teacher(args.teacher, cfg, splits, device)
        else:
            teacher, tmetrics = train_teacher(cfg, splits, seed, device, progress)
        run.note(backend=select_backend(teacher, device))
        save_state_dict(run.teacher / "teacher.pt", teacher.state_dict())
        run.write_json("teacher/metrics.json", tmetrics)
        tqdm.write(f"dense teacher: validation accuracy {tmetrics['val_accuracy']:.3f} ({time.perf_counter() - t0:.0f} s)")

        ann_state = None
        if cfg.kd.mode == "ann":  # ANN-teacher KD: train the ReLU twin of the teacher once
            ann_cfg = replace(cfg, model=replace(cfg.model, neuron="relu"))
            ann, ann_metrics = train_teacher(ann_cfg, splits, seed, device, progress)
            ann_state = {k: v.detach().cpu() for k, v in ann.state_dict().items()}
            save_state_dict(run.teacher / "ann_teacher.pt", ann_state)
            run.write_json("teacher/ann_metrics.json", ann_metrics)
            tqdm.write(f"ANN teacher: validation accuracy {ann_metrics['val_accuracy']:.3f}")

        layers = tuple(prunable_layers(teacher, cfg.genome.prunable))
        ctx = FitnessContext(cfg, splits.train, splits.val, splits.frame_shape, splits.num_classes,
                             {k: v.detach().cpu() for k, v in teacher.state_dict().items()}, layers, ann_state)
        ops = GenomeOps(weight_magnitudes(teacher, layers), cfg.genome)
        evaluator = make_evaluator(ctx, cfg.search.workers, args.address)
        logger = RunLogger(run)
        search = StructureSearch(ops, evaluator, cfg.search, cfg.genome, logger.on_evaluation, logger.on_generation, progress)
        archive = search.run()
        evaluator.close()
        evaluator = None

        # --- the end of the run: the test split is used here, once ---
        front = [ind for ind in archive if ind.status != "failed"]
        roles = choose_exports(front)
        by_uid = {ind.uid: ind for ind in front}
        exported = []
        model_args = (cfg.model, splits.frame_shape, splits.num_classes)
        for uid, r in roles.items():
            ind = by_uid[uid]
            rec = export_member(run, uid, r, ind.genome, ind.metrics, search.results[ind.genome.key].student_state,
                                teacher, model_args, splits.test, layers)
            exported.append(rec)
            tqdm.write(f"exported {uid} ({', '.join(r)}): val acc {rec['accuracy']:.3f}, test acc {rec['test_accuracy']:.3f}, "
                       f"sparsity {rec['sparsity']:.3f} -> {run.exported / uid}")
        tmetrics["test_accuracy"] = accuracy(teacher, splits.test)
        run.write_json("teacher/metrics.json", tmetrics)
        tqdm.write(f"dense teacher: test accuracy {tmetrics['test_accuracy']:.3f}")

        evals = pd.DataFrame([r for r in logger.rows if r["status"] == "ok"])
        plot_run(run.plots, evals, pareto_frame(archive), pd.DataFrame(logger.generations), tmetrics["val_accuracy"], exported)
        run.finish("completed", n_evaluations=len(logger.rows), exported=sorted(roles), wall_s=time.perf_counter() - t0)
        tqdm.write(f"done: {run.path}")
        return 0
    except TeacherLoadError as e:
        run.finish("failed", error=f"{type(e).__name__}: {e}")
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        run.finish("interrupted")
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        run.finish("failed", error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc())
        raise
    finally:
        if evaluator is not None:
            evaluator.close()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    with sigterm_as_interrupt():
        return run_search(args, ["python", "-m", "evo_snn.search", *argv])


if __name__ == "__main__":
    sys.exit(main())
