"""``python -m evo_snn.reproduce``: the papers' protocol, outside the search.

For each seed: (1) train a dense teacher; (2) magnitude-prune it at each ratio
(every prunable layer at the same ratio, Eq. 3 of the sparse-KD paper); (3) train a
student of the same architecture from scratch with each KD variant under one budget;
(4) write ``reproduce.csv`` (one row per seed, variant and teacher ratio),
``reproduce_summary.csv`` (mean ± std over seeds) and ``plots/reproduce.png`` —
the shape of Table 1/2 and Figure 2 of the sparse-KD paper.

Accuracies here are test accuracies (fractions in [0, 1]); nothing is selected on
them. Variants that do not depend on the teacher's prune ratio ('none', 'default',
'self', 'ann') are trained once per seed and reported on every ratio row. With few
test samples, one sample is 1/N of accuracy: read the std before any gain.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from evo_snn.cli import choice_list, ratio_list, show_progress
from evo_snn.config import ConfigError, load_config
from evo_snn.data import DATASETS, DatasetFormatError, load_splits
from evo_snn.evaluation.fitness import default_device
from evo_snn.structure.genome import GenomeOps
from evo_snn.training.kd import KD_MODES, kd_mode, student_loss, teacher_for
from evo_snn.models import build_model, model_names
from evo_snn.analysis.plots import plot_reproduction
from evo_snn.structure.pruning import prunable_layers, sparse_copy, weight_magnitudes
from evo_snn.state.rundir import RunDir, RunDirError, save_state_dict, sigterm_as_interrupt
from evo_snn.training.teacher import train_teacher
from evo_snn.training.train import accuracy, train_steps


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m evo_snn.reproduce", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", choices=DATASETS, default="synthetic", help="data set (default: synthetic)")
    p.add_argument("--data-root", default=None, help="folder of the real data set")
    p.add_argument("--model", default=None, choices=model_names(), help="model name (default: the search space's)")
    p.add_argument("--ratios", type=ratio_list, default=[0.0, 0.1, 0.3, 0.5, 0.7],
                   help="teacher prune ratios, comma-separated (default: 0,0.1,0.3,0.5,0.7)")
    p.add_argument("--kd", type=choice_list(KD_MODES, "KD variant(s)"), default=["sparse", "default", "none"],
                   help=f"KD variants, comma-separated, from {list(KD_MODES)} (default: sparse,default,none)")
    p.add_argument("--seeds", type=int, default=3, help="number of repeated seeds (default: 3)")
    p.add_argument("--student-epochs", type=float, default=None,
                   help="student training budget in epochs (default: teacher.epochs of the search space)")
    p.add_argument("--config", default=None, help="search-space YAML (default: search_spaces/<dataset>.yaml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set kd.alpha=0.5 (repeatable)")
    p.add_argument("--out", default=None, help="run directory (default: runs/<timestamp>-<dataset>-reproduce)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def summarise(rows: pd.DataFrame) -> pd.DataFrame:
    """Mean and std (ddof=1; NaN for one seed) over seeds per (kd, teacher_ratio)."""
    g = rows.groupby(["kd", "teacher_ratio"], sort=False)
    out = g.agg(seeds=("seed", "nunique"),
                teacher_accuracy_mean=("teacher_accuracy", "mean"), teacher_accuracy_std=("teacher_accuracy", "std"),
                student_accuracy_mean=("student_accuracy", "mean"), student_accuracy_std=("student_accuracy", "std"),
                improvement_mean=("improvement_over_none", "mean"), improvement_std=("improvement_over_none", "std"))
    return out.reset_index()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    with sigterm_as_interrupt():
        return run(args, argv)


def run(args, argv: list[str]) -> int:
    """The protocol of ``args`` (``build_parser``) in a new run directory; 0 when done, 2 for
    a bad config, data set or run directory, 130 when interrupted."""
    try:
        overrides = list(args.overrides) + ([f"model.name={args.model}"] if args.model else [])
        cfg = load_config(args.dataset, args.config, overrides)
        if args.seeds < 1:
            raise ConfigError("--seeds must be >= 1")
        splits = load_splits(cfg.dataset, args.data_root, cfg.data, seed=cfg.split_seed(), progress=show_progress(args))
        run = RunDir.create(args.out, cfg.dataset, "reproduce")
    except (ConfigError, DatasetFormatError, RunDirError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    progress = show_progress(args)
    device = default_device()
    epochs = args.student_epochs if args.student_epochs is not None else float(cfg.teacher.epochs)
    run.write_json("config.json", {**cfg.to_dict(), "reproduce": {"ratios": args.ratios, "kd": args.kd,
                                                                   "seeds": args.seeds, "student_epochs": epochs}})
    run.start(["python", "-m", "evo_snn.reproduce", *argv], cfg.search.seed, str(device))
    t0 = time.perf_counter()
    rows: list[dict] = []
    try:
        for s in range(args.seeds):
            rows += seed_rows(cfg, splits, cfg.search.seed + s, args.ratios, args.kd, epochs, device, run, progress, t0)
            run.write_csv("reproduce.csv", pd.DataFrame(rows))
        write_summary(run, pd.DataFrame(rows))
        run.finish("completed", wall_s=time.perf_counter() - t0)
        print(f"done: {run.path}")
        return 0
    except KeyboardInterrupt:
        run.finish("interrupted")
        return 130
    except Exception as e:
        run.finish("failed", error=f"{type(e).__name__}: {e}")
        raise


def seed_rows(cfg, splits, seed: int, ratios, modes, epochs: float, device, run: RunDir, progress: bool,
              t0: float) -> list[dict]:
    """The reproduce.csv rows of one seed, one per (teacher prune ratio, KD variant): the dense
    teacher trained (and saved in ``run``), pruned at each ratio, and a student trained with each
    variant of ``modes`` (``epochs`` epochs); test accuracies. ``t0``: the run's start (the note
    printed at the end of the seed)."""
    teacher, _ = train_teacher(cfg, splits, seed, device, progress=False)
    dense_acc = accuracy(teacher, splits.test)
    save_state_dict(run.teacher / f"teacher_seed{seed}.pt", teacher.state_dict())
    ann = None
    if "ann" in modes:
        ann, _ = train_teacher(replace(cfg, model=cfg.model.ann_twin()), splits, seed, device, progress=False)
    layers = tuple(prunable_layers(teacher, cfg.genome.prunable))
    ops = GenomeOps(weight_magnitudes(teacher, layers), replace(cfg.genome, ratio_min=0.0, ratio_max=0.999))
    cache: dict[tuple[str, float], float] = {}

    # every student of this seed starts from the same init (a paired comparison),
    # drawn from a stream distinct from the teacher's so no student replays it
    student_seed = int(np.random.SeedSequence([seed, 1]).generate_state(1)[0])

    def student_accuracy(mode: str, ratio: float, teaching) -> float:
        key = (mode, ratio if kd_mode(mode).ratio_dependent else 0.0)
        if key not in cache:
            cache[key] = train_student(cfg, splits, mode, teaching, epochs, student_seed, device)
        return cache[key]

    rows = []
    bar = tqdm(total=len(ratios) * len(modes), desc=f"seed {seed}", disable=not progress, leave=False)
    for ratio in ratios:
        pruned = sparse_copy(teacher, ops.magnitude([ratio] * len(layers)).mask_dict())
        t_acc = accuracy(pruned, splits.test)
        for mode in modes:
            rows.append({"seed": seed, "student_seed": student_seed, "kd": mode, "teacher_ratio": ratio, "teacher_accuracy": t_acc,
                         "student_accuracy": student_accuracy(mode, ratio, teacher_for(mode, sparse=pruned, dense=teacher, ann=ann)),
                         "dense_teacher_accuracy": dense_acc})
            bar.update(1)
    bar.close()
    none_acc = student_accuracy("none", 0.0, None)
    for r in rows:
        r["improvement_over_none"] = r["student_accuracy"] - none_acc
    tqdm.write(f"seed {seed}: dense teacher test accuracy {dense_acc:.3f}, student with 'none' {none_acc:.3f} "
               f"({time.perf_counter() - t0:.0f} s)")
    return rows


def train_student(cfg, splits, mode: str, teaching, epochs: float, student_seed: int, device) -> float:
    """Test accuracy of a student of the config's model trained from the init of ``student_seed``
    for ``epochs`` epochs with KD variant ``mode`` taught by ``teaching`` (the teacher's batch
    size, lr and weight decay)."""
    torch.manual_seed(student_seed)
    student = build_model(cfg.model, splits.frame_shape, splits.num_classes).to(device)
    loss = student_loss(replace(cfg.kd, mode=mode), splits.num_classes, teaching)
    train_steps(student, splits.train, epochs=epochs, batch_size=cfg.teacher.batch_size,
                lr=cfg.teacher.lr, weight_decay=cfg.teacher.weight_decay, loss_fn=loss, seed=student_seed,
                hot_path=cfg.train)
    return accuracy(student, splits.test)


def write_summary(run: RunDir, rows: pd.DataFrame) -> None:
    """reproduce_summary.csv (``summarise`` of the rows of all seeds), plots/reproduce.png, and the summary printed."""
    summary = summarise(rows)
    run.write_csv("reproduce_summary.csv", summary)
    plot_reproduction(summary, run.plots / "reproduce.png")
    with pd.option_context("display.width", 160, "display.max_columns", 20):
        print(summary.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
