"""No finished evaluation is lost: a search whose driver gets SIGKILL at random moments,
resumed after each kill, ends with the uninterrupted run's evaluations and front, and
the evaluations that had finished before a kill are reused, not trained again."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from evo_snn.state.checkpoint import has_checkpoint
from evo_snn.search.run import main
from test_search import TINY

ROOT = str(Path(__file__).resolve().parents[1])
ARGS = ["--dataset", "synthetic", "--population", "4", "--generations", "40", "--seed", "5", "--no-progress", *TINY,
        "--set", "kd.epochs=2.0"]


def _rows(run):
    path = run / "evaluations.jsonl"
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:  # a line cut short by the kill
            pass
    return out


def _start(argv, env):
    return subprocess.Popen([sys.executable, "-m", "evo_snn.search", *argv], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _table(rows):
    cols = ["uid", "genome_key", "status", "seed", "gen", "parents", "ratios", "accuracy", "sparsity", "train_loss"]
    return sorted(({k: r.get(k) for k in cols} for r in rows), key=lambda r: r["uid"])


def _kill_and_resume(out, workers, kills, ray_tmp):
    """Start the run, SIGKILL its driver ``kills`` times while it evaluates (a random moment
    after a new evaluation row appears), resume after each; returns the finished evaluations
    seen before each resume as {uid: (worker, wall_s)}."""
    rng = random.Random(1234)
    env = {**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1", "RAY_TMPDIR": ray_tmp}
    finished_before_resume = {}
    argv = [*ARGS, "--workers", str(workers), "--out", str(out)]
    for k in range(kills):
        proc = _start(argv, env)
        try:
            seen = {r["uid"] for r in _rows(out)}
            deadline = time.time() + 300
            while time.time() < deadline and proc.poll() is None and not (
                    has_checkpoint(out / "checkpoints") and {r["uid"] for r in _rows(out)} - seen):
                time.sleep(0.05)
            assert proc.poll() is None, f"the run ended before kill {k + 1}; make it longer"
            time.sleep(rng.uniform(0.0, 1.0))
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
        gen = json.loads((out / "checkpoints" / "state.json").read_text())["gen"]
        for r in _rows(out):
            if r["gen"] > gen and r["status"] == "ok":
                finished_before_resume[r["uid"]] = (r["worker"], r["wall_s"])
        argv = ["--resume", str(out), "--no-progress", "--workers", str(workers)]
    proc = _start(argv, env)
    assert proc.wait(timeout=600) == 0
    return finished_before_resume


def _leftover_ray(ray_tmp):
    import psutil

    return [p for p in psutil.process_iter(["pid", "cmdline"]) if ray_tmp in " ".join(p.info["cmdline"] or [])]


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_driver_killed_5_times_resumes_to_the_same_front_without_retraining(workers, tmp_path, one_torch_thread):
    ref = tmp_path / "straight"
    assert main([*ARGS, "--out", str(ref)]) == 0
    import shutil
    import tempfile

    out = tmp_path / "killed"
    ray_tmp = tempfile.mkdtemp(prefix="evo-ray-")  # short: Ray's unix socket paths must fit 107 bytes
    try:
        finished = _kill_and_resume(out, workers, kills=5, ray_tmp=ray_tmp)
    finally:
        leftover = _leftover_ray(ray_tmp)  # Ray processes of the killed drivers (found by their own temp dir)
        print(f"Ray processes left by the killed drivers: {len(leftover)}")
        for p in leftover:
            p.kill()
        shutil.rmtree(ray_tmp, ignore_errors=True)
    rows = _rows(out)
    assert _table(rows) == _table(_rows(ref))  # every evaluation, once, with the same results
    front = ["uid", "accuracy", "sparsity", "genome_key"]
    pd.testing.assert_frame_equal(pd.read_csv(out / "pareto.csv")[front], pd.read_csv(ref / "pareto.csv")[front])
    by_uid = {r["uid"]: (r["worker"], r["wall_s"]) for r in rows}
    retrained = [uid for uid, seen in finished.items() if by_uid[uid] != seen]
    manifest = json.loads((out / "manifest.json").read_text())
    reused = sum(r.get("reused_evaluations", 0) for r in manifest["resumes"])
    print(f"workers={workers}: 5 driver kills, {len(finished)} evaluations had finished in unfinished generations, "
          f"{reused} reused, {len(retrained)} trained again")
    assert len(manifest["resumes"]) == 5 and manifest["status"] == "completed"
    assert finished and not retrained  # target: 0 finished evaluations trained again
    n_trainings = sum(r["status"] == "ok" for r in rows)
    assert n_trainings == sum(r["status"] == "ok" for r in _rows(ref))


def _kill_each_when(runs, env):
    """Start every run at once (their interpreters start in parallel) and SIGKILL each as soon
    as its own ``ready()`` holds; runs: [(argv, ready, what)]."""
    procs = [(_start(argv, env), ready, what) for argv, ready, what in runs]
    try:
        deadline = time.time() + 300
        waiting = list(procs)
        while waiting and time.time() < deadline:
            for item in list(waiting):
                proc, ready, what = item
                if proc.poll() is not None or ready():
                    assert proc.poll() is None, f"the run ended before {what}"
                    proc.send_signal(signal.SIGKILL)
                    proc.wait(timeout=60)
                    waiting.remove(item)
            time.sleep(0.02)
        assert not waiting, f"not ready after 300 s: {[what for _, _, what in waiting]}"
    finally:
        for proc, _, _ in procs:
            if proc.poll() is None:
                proc.kill()


def test_a_run_killed_before_its_first_checkpoint_resumes(tmp_path, one_torch_thread):
    """Killed while training the teacher: --resume starts over in the same directory; killed
    during generation 0 (teacher saved, no checkpoint yet): it reuses the teacher and the
    finished evaluations. Both end with the straight run's evaluations and front."""
    args = [a for a in ARGS]
    args[args.index("--generations") + 1] = "1"
    args[args.index("--population") + 1] = "8"
    ref = tmp_path / "straight"
    assert main([*args, "--out", str(ref)]) == 0
    env = {**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1"}
    front = ["uid", "accuracy", "sparsity", "genome_key"]

    early, mid = tmp_path / "in_teacher", tmp_path / "in_gen0"
    _kill_each_when([([*args, "--out", str(early)], lambda: (early / "manifest.json").is_file(), "the teacher"),
                     ([*args, "--out", str(mid)], lambda: len(_rows(mid)) >= 2, "generation 0")], env)
    assert not (early / "teacher" / "metrics.json").exists() and not has_checkpoint(early / "checkpoints")
    assert main(["--resume", str(early), "--no-progress"]) == 0
    m = json.loads((early / "manifest.json").read_text())
    assert m["status"] == "completed" and m["resumes"][0]["from_gen"] == -1 and not m["resumes"][0]["teacher_reused"]

    assert not has_checkpoint(mid / "checkpoints")
    finished = {r["uid"]: (r["worker"], r["wall_s"]) for r in _rows(mid) if r["status"] == "ok"}
    assert main(["--resume", str(mid), "--no-progress"]) == 0
    m = json.loads((mid / "manifest.json").read_text())
    assert m["resumes"][0]["teacher_reused"] and m["resumes"][0]["reused_evaluations"] == len(finished) >= 2
    by_uid = {r["uid"]: (r["worker"], r["wall_s"]) for r in _rows(mid)}
    assert all(by_uid[uid] == seen for uid, seen in finished.items())  # not trained again
    for run in (early, mid):
        assert _table(_rows(run)) == _table(_rows(ref))
        pd.testing.assert_frame_equal(pd.read_csv(run / "pareto.csv")[front], pd.read_csv(ref / "pareto.csv")[front])
