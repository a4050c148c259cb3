"""Torch threads beside other busy processes: today's defaults against evo_snn's (issue 25).

    python benchmarks/threads.py                       # the whole table (about 6 min on 2 cores)
    python benchmarks/threads.py --seconds 5 --workloads teacher --neighbours none train1

Each cell runs one workload in a fresh subprocess under one thread setting, alone or
beside one neighbour process started a few seconds before it, and prints its throughput:

workloads
  teacher  ``evo_snn.training.train.train_steps`` (the loop that trains the dense teacher and every
           student) on the CIFAR-10 space's net (resnet18_tiny, width 2, T = 2, batch 64,
           random 32x32 RGB frames) for ``--seconds``: training samples/s.
  search   ``python -m evo_snn.search --dataset synthetic --no-progress`` (the quick start,
           teacher + 4 generations + export): 1 / wall time, printed as runs/min.
settings
  torch    today's defaults: ``EVO_SNN_THREADS=torch`` (torch's one thread per core,
           libgomp's default spin).
  evo_snn  the new defaults (``evo_snn.threads``: GOMP_SPINCOUNT, the thread governor).
  pinned1  one thread: ``OMP_NUM_THREADS=1 EVO_SNN_THREADS=1``.
neighbours
  none     alone.
  train1   a 1-thread plain torch training loop (the same net, ``OMP_NUM_THREADS=1``).
  search   a second synthetic search, looping, under the same setting as the workload.

The last column is the cell's throughput over the pinned1 cell beside the same neighbour
(>1: faster than one thread). Target (issue 25): evo_snn beside train1 >= 1/1.3 = 0.77.
Run it on an otherwise idle machine: other load skews every cell.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SETTINGS = {
    "torch": {"EVO_SNN_THREADS": "torch"},
    "evo_snn": {},
    "pinned1": {"OMP_NUM_THREADS": "1", "EVO_SNN_THREADS": "1"},
}

TEACHER = r"""
import sys, time
import torch
from evo_snn import threads
from evo_snn.config import ModelConfig
from evo_snn.data import FrameSet
from evo_snn.models import build_model
from evo_snn.training.train import ce_loss, train_steps
seconds, plain = float(sys.argv[1]), sys.argv[2] == "plain"
if not plain:
    threads.configure(1)  # as evo_snn.search.run does for the teacher
torch.manual_seed(0)
net = build_model(ModelConfig(name="resnet18_tiny", width=2.0), (2, 3, 32, 32), 10)
fs = FrameSet(torch.rand(640, 2, 3, 32, 32), torch.randint(0, 10, (640,)))
train_steps(net, fs, epochs=0.2, batch_size=64, lr=1e-3, loss_fn=ce_loss, seed=0)  # warm-up
steps, t0 = 0, time.perf_counter()
while time.perf_counter() - t0 < seconds:
    train_steps(net, fs, epochs=0.2, batch_size=64, lr=1e-3, loss_fn=ce_loss, seed=steps)  # 2 steps
    steps += 2
print(f"RESULT {steps * 64 / (time.perf_counter() - t0):.1f}", flush=True)
"""


def _env(setting: dict) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "EVO_SNN_THREADS", "GOMP_SPINCOUNT",
                                                            "OMP_WAIT_POLICY", "MKL_NUM_THREADS")}
    env.update(setting)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def _search_cmd(out: str) -> list[str]:
    return [sys.executable, "-m", "evo_snn.search", "--dataset", "synthetic", "--no-progress", "--out", out]


def start_neighbour(kind: str, setting: dict, tmp: str) -> subprocess.Popen | None:
    if kind == "none":
        return None
    if kind == "train1":
        cmd = [sys.executable, "-c", TEACHER, "1e9", "plain"]
        env = _env({"OMP_NUM_THREADS": "1", "EVO_SNN_THREADS": "torch"})
    elif kind == "search":
        loop = f"i=0; while true; do i=$((i+1)); {' '.join(_search_cmd(tmp + '/nb-$i'))} >/dev/null 2>&1; done"
        cmd, env = ["bash", "-c", loop], _env(setting)
    else:
        raise ValueError(f"unknown neighbour {kind!r}")
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    time.sleep(4.0)  # let it reach its steady state
    return p


def stop(p: subprocess.Popen | None) -> None:
    if p is not None:
        try:
            os.killpg(p.pid, 9)
        except ProcessLookupError:
            pass
        p.wait()


def run_workload(workload: str, setting: dict, seconds: float, tmp: str) -> float:
    """Throughput: training samples/s (teacher) or runs/min (search)."""
    env = _env(setting)
    if workload == "teacher":
        out = subprocess.run([sys.executable, "-c", TEACHER, str(seconds), "evo"], env=env, capture_output=True,
                             text=True, check=True).stdout
        return float(next(line.split()[1] for line in out.splitlines() if line.startswith("RESULT")))
    if workload == "search":
        t0 = time.perf_counter()
        subprocess.run(_search_cmd(tempfile.mkdtemp(dir=tmp)), env=env, capture_output=True, check=True)
        return 60.0 / (time.perf_counter() - t0)
    raise ValueError(f"unknown workload {workload!r}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=12.0, help="seconds of training per teacher cell")
    p.add_argument("--workloads", nargs="+", default=["teacher", "search"], choices=["teacher", "search"])
    p.add_argument("--neighbours", nargs="+", default=["none", "train1", "search"], choices=["none", "train1", "search"])
    p.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    args = p.parse_args(argv)
    if "pinned1" not in args.settings:
        args.settings.append("pinned1")
    print(f"{os.cpu_count()} CPUs, usable {len(os.sched_getaffinity(0))}; teacher cells {args.seconds:g} s")
    print(f"{'workload':<8} {'neighbour':<9} {'setting':<8} {'throughput':>12}  {'vs pinned1':>10}")
    with tempfile.TemporaryDirectory() as tmp:
        for workload in args.workloads:
            unit = "samples/s" if workload == "teacher" else "runs/min"
            for nb in args.neighbours:
                res = {}
                for name in args.settings:
                    neighbour = start_neighbour(nb, SETTINGS[name], tmp)
                    try:
                        res[name] = run_workload(workload, SETTINGS[name], args.seconds, tmp)
                    finally:
                        stop(neighbour)
                for name in args.settings:
                    print(f"{workload:<8} {nb:<9} {name:<8} {res[name]:>8.1f} {unit:<9} {res[name] / res['pinned1']:>6.2f}x",
                          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
