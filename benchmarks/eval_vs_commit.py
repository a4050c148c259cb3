"""One fitness evaluation of this checkout against another commit's, side by side.

    git worktree add /tmp/old 49bc0f2        # the reference (issue 26: the code before its item 1)
    flock /tmp/evo_cpu.lock python benchmarks/eval_vs_commit.py --ref /tmp/old \
        [--datasets cifar10 nmnist] [--rounds 5] [--calls 2]

For each data set (the data, model and kd sections of this checkout's search space, for both trees; the net at its initialisation as the dense
teacher, seeded; the global-magnitude genome at 50 %; seed 123), the two trees are timed
in separate processes (``PYTHONPATH`` = the tree, ``OMP_NUM_THREADS=1``, one torch thread),
interleaved over ``--rounds`` rounds (the order alternates); each process builds the
``GenomeFitness`` once, runs one warm-up evaluation, then ``--calls`` timed evaluations
(the sparse teacher's cached accuracy is forgotten before each, so that every call is
a first evaluation of its genome, as in a search). Prints the median wall time of one
evaluation per tree, the ratio ``this / ref`` and whether the metrics (every metric but
wall time, worker, threads) are identical. Not a test; the timings are noisy on a
shared machine: read the medians.

``--worker TREE`` is the per-process entry (prints one JSON line).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
SHARED = HERE.parent / "shared" / "data"
DATA = {"cifar10": "cifar10_jpeg", "nmnist": "nmnist_subset"}  # under --data-dir
VOLATILE = ("wall_s", "worker", "threads", "group_wall_s")


def space_overrides(dataset: str) -> list[str]:
    """``section.key=value`` for every key of the evaluation's sections (data, model, kd) of
    this checkout's ``search_spaces/<dataset>.yaml``: both trees evaluate the space shipped here."""
    import yaml

    raw = yaml.safe_load((HERE / "search_spaces" / f"{dataset}.yaml").read_text())
    return [f"{sec}.{k}={json.dumps(v)}" for sec in ("data", "model", "kd") for k, v in (raw.get(sec) or {}).items()]


def worker(dataset: str, root: str, calls: int, seed: int, overrides: list[str]) -> None:
    import torch

    torch.set_num_threads(1)
    from evo_snn.config import load_config
    from evo_snn.data import load_splits
    from evo_snn.models import build_model
    try:  # the package layout of issue 24
        from evo_snn.evaluation.fitness import FitnessContext, GenomeFitness
        from evo_snn.structure.genome import GenomeOps
        from evo_snn.structure.pruning import prunable_layers, weight_magnitudes
        from evo_snn.training.train import cpu_state
    except ImportError:  # the flat layout before it
        from evo_snn.fitness import FitnessContext, GenomeFitness
        from evo_snn.genome import GenomeOps
        from evo_snn.pruning import prunable_layers, weight_magnitudes
        from evo_snn.train import cpu_state
    cfg = load_config(dataset, overrides=overrides)
    splits = load_splits(dataset, Path(root), cfg.data, seed=0)
    torch.manual_seed(0)
    teacher = build_model(cfg.model, splits.frame_shape, splits.num_classes)
    layers = tuple(prunable_layers(teacher, cfg.genome.prunable))
    ctx = FitnessContext(cfg, splits.train, splits.val, splits.frame_shape, splits.num_classes, cpu_state(teacher), layers)
    fit = GenomeFitness(ctx, torch.device("cpu"))
    genome = GenomeOps(weight_magnitudes(fit.teacher, layers), cfg.genome).global_magnitude(0.5)
    times, metrics = [], None
    for i in range(calls + 1):
        if hasattr(fit, "_teacher_acc"):
            fit._teacher_acc.clear()
        t0 = time.perf_counter()
        out = fit(genome, seed)
        if i:
            times.append(time.perf_counter() - t0)
        metrics = {k: v for k, v in out.metrics.items() if k not in VOLATILE}
    print(json.dumps({"times": times, "metrics": metrics}, default=str))


def spawn(tree: Path, dataset: str, calls: int, seed: int, data_dir: Path, extra: list[str] = ()) -> dict:
    env = dict(os.environ, PYTHONPATH=str(tree), OMP_NUM_THREADS="1", EVO_SNN_THREADS="1")
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", str(tree), "--datasets", dataset,
           "--calls", str(calls), "--seed", str(seed), "--data-dir", str(data_dir), "--set", *space_overrides(dataset), *extra]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=tree)
    if res.returncode:
        raise SystemExit(f"{tree} {dataset}: exit {res.returncode}\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ref", type=Path, help="the reference tree (a worktree of the other commit)")
    ap.add_argument("--datasets", nargs="+", default=["cifar10", "nmnist"])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--calls", type=int, default=2, help="timed evaluations per process")
    ap.add_argument("--seed", type=int, default=123)
    ap.add_argument("--data-dir", type=Path, default=SHARED, help="holds cifar10_jpeg/ and nmnist_subset/ (default ../shared/data)")
    ap.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--set", nargs="*", default=[], help=argparse.SUPPRESS)
    ap.add_argument("--this-set", nargs="*", default=[], metavar="SECTION.KEY=VALUE",
                    help="overrides for this checkout only, e.g. search.measure_teacher=true (the reference keeps its defaults)")
    args = ap.parse_args(argv)
    if args.worker:
        worker(args.datasets[0], str(args.data_dir / DATA[args.datasets[0]]), args.calls, args.seed, args.set)
        return
    if args.ref is None:
        ap.error("--ref is required")
    trees = {"this": HERE, "ref": args.ref.resolve()}
    for ds in args.datasets:
        times = {name: [] for name in trees}
        metrics = {}
        for r in range(args.rounds):
            for name in (list(trees) if r % 2 == 0 else list(trees)[::-1]):
                out = spawn(trees[name], ds, args.calls, args.seed, args.data_dir.resolve(),
                            args.this_set if name == "this" else ())
                times[name] += out["times"]
                metrics[name] = out["metrics"]
        this, ref = statistics.median(times["this"]), statistics.median(times["ref"])
        same = metrics["this"] == metrics["ref"]
        print(f"== {ds}: one evaluation{' with ' + ' '.join(args.this_set) if args.this_set else ''}, median of {len(times['this'])} ({args.rounds} rounds x {args.calls} calls, interleaved)")
        print(f"ref  {args.ref}: {ref:.3f} s   (all: {', '.join(f'{t:.2f}' for t in times['ref'])})")
        print(f"this {HERE}: {this:.3f} s   (all: {', '.join(f'{t:.2f}' for t in times['this'])})")
        print(f"ratio this / ref = {this / ref:.3f}  (speed-up {ref / this:.2f}x); metrics identical: {same}")
        if not same:
            diff = {k: (metrics['ref'].get(k), metrics['this'].get(k)) for k in set(metrics['ref']) | set(metrics['this'])
                    if metrics['ref'].get(k) != metrics['this'].get(k)}
            print("  differing metrics (ref, this):", json.dumps(diff, default=str)[:2000])
        sys.stdout.flush()


if __name__ == "__main__":
    main()
