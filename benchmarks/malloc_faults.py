"""One fitness evaluation and the plain loop under evo_snn.malloc's thresholds against glibc's own.

``python benchmarks/malloc_faults.py --datasets nmnist cifar10 --rounds 4``

Each round starts one process per mode, in alternating order: ``EVO_SNN_MALLOC=tuned``
(the default: ``M_MMAP_THRESHOLD`` and ``M_TRIM_THRESHOLD`` fixed at import) and
``EVO_SNN_MALLOC=system`` (glibc's dynamic thresholds). Each process builds the data set's
fitness and ``fitness_overhead.Plain`` (same net, batches, genome and seed as
``benchmarks/fitness_overhead.py``), warms both up, then times ``--calls`` of each,
interleaved, counting the minor page faults of each call (``getrusage``). Prints the
medians per mode, tuned / system, and fitness / plain per mode. One torch thread. Not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODES = ("tuned", "system")


def child(dataset: str, data_dir: Path, calls: int, seed: int) -> dict:
    """In a process of one mode: seconds and minor faults of each timed call."""
    import torch

    sys.path.insert(0, str(HERE))
    import fitness_overhead as fo

    from evo_snn.evaluation.fitness import GenomeFitness
    from evo_snn.structure.genome import GenomeOps
    from evo_snn.structure.pruning import weight_magnitudes

    torch.set_num_threads(1)
    root = data_dir / {"nmnist": "nmnist_subset", "cifar10": "cifar10_jpeg"}[dataset]
    ctx, teacher = fo.context(dataset, root)
    fit = GenomeFitness(ctx, torch.device("cpu"))
    genome = GenomeOps(weight_magnitudes(fit.teacher, ctx.layers), ctx.cfg.genome).global_magnitude(0.5)
    plain = fo.Plain(ctx, teacher, seed)
    runs = {"fitness": lambda: fit(genome, seed), "plain": lambda: plain(genome.mask_dict())}
    out = {name: {"s": [], "faults": []} for name in runs}
    for fn in runs.values():
        fn()  # warm-up
    for _ in range(calls):
        for name, fn in runs.items():
            fit._teacher_acc.clear()  # every call a first evaluation (with search.measure_teacher)
            f0, t0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.perf_counter()
            fn()
            out[name]["s"].append(time.perf_counter() - t0)
            out[name]["faults"].append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", nargs="+", default=["nmnist"], choices=["nmnist", "cifar10"])
    ap.add_argument("--rounds", type=int, default=4, help="processes per mode")
    ap.add_argument("--calls", type=int, default=2, help="timed calls of each per process")
    ap.add_argument("--seed", type=int, default=123)
    ap.add_argument("--data-dir", type=Path, default=HERE.parent.parent / "shared" / "data",
                    help="holds nmnist_subset/ and cifar10_jpeg/ (default ../shared/data)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.data_dir, args.calls, args.seed)))
        return
    for dataset in args.datasets:
        res = {m: {"fitness": {"s": [], "faults": []}, "plain": {"s": [], "faults": []}} for m in MODES}
        for r in range(args.rounds):
            for mode in (MODES if r % 2 == 0 else MODES[::-1]):
                env = {**os.environ, "EVO_SNN_MALLOC": mode, "OMP_NUM_THREADS": "1", "EVO_SNN_THREADS": "1"}
                cmd = [sys.executable, __file__, "--child", dataset, "--calls", str(args.calls), "--seed", str(args.seed),
                       "--data-dir", str(args.data_dir)]
                p = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True)
                if p.returncode != 0:
                    sys.exit(f"{dataset} ({mode}) failed:\n{p.stderr[-3000:]}")
                got = json.loads(p.stdout.strip().splitlines()[-1])
                for name in got:
                    for k in ("s", "faults"):
                        res[mode][name][k] += got[name][k]
        n = args.rounds * args.calls
        print(f"\n== {dataset}: median of {n} ({args.rounds} processes per mode x {args.calls} calls, alternating)")
        med = {m: {name: {k: statistics.median(v[k]) for k in v} for name, v in res[m].items()} for m in MODES}
        for m in MODES:
            f, p = med[m]["fitness"], med[m]["plain"]
            print(f"{m:7s} fitness {f['s']:7.3f} s  {f['faults']:9.0f} faults | plain {p['s']:7.3f} s  {p['faults']:9.0f} faults"
                  f" | fitness / plain = {f['s'] / p['s']:.3f}")
        for name in ("fitness", "plain"):
            print(f"{name}: tuned / system = {med['tuned'][name]['s'] / med['system'][name]['s']:.3f}")


if __name__ == "__main__":
    main()
