"""Issue 27's fault table, one row at a time (the rows fixed so far)."""

from __future__ import annotations

import json

import pandas as pd

from evo_snn.search import main

from test_search import TINY


def test_d5_generations_without_a_successful_evaluation(tmp_path, capsys):
    """D5: every evaluation fails (raise, no retries). The search goes through its
    generations (each logged as having no successful evaluation), then stops with status
    'failed', exit 1 and one line naming the errors, instead of an IndexError traceback."""
    out = tmp_path / "r"
    rc = main(["--dataset", "synthetic", "--population", "4", "--generations", "1", "--no-progress", *TINY,
               "--set", "faults.fail_rate=0.999", "--set", "faults.kinds=[raise]", "--set", "search.max_retries=0",
               "--out", str(out)])
    captured = capsys.readouterr()
    assert rc == 1
    err = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and "every one of the 8 evaluations failed" in err[0] and "InjectedFault" in err[0]
    assert "Traceback" not in captured.err
    assert captured.out.count("no successful evaluation yet (4 of 4 failed") == 2
    m = json.loads((out / "manifest.json").read_text())
    assert m["status"] == "failed" and "evaluations failed" in m["error"]
    assert list(pd.read_csv(out / "generations.csv")["gen"]) == [0, 1]
    assert not (out / "exported").exists() or not any((out / "exported").iterdir())


def test_d1_sigterm_with_ray_workers_ends_interrupted(tmp_path):
    """D1: SIGTERM to a driver with 2 Ray workers. ray.init replaces the driver's SIGTERM
    handler with one that aborts (exit 134, manifest left 'running'); the run reclaims it, so
    the run ends 'interrupted' with exit 130, the --resume command printed, and no Ray
    process of it left."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import psutil

    out = tmp_path / "r"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "evo_snn.search", "--dataset", "synthetic", "--population", "8",
                             "--generations", "50", "--workers", "2", "--no-progress", *TINY, "--out", str(out)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not (out / "checkpoints" / "state.json").exists() and proc.poll() is None:
        time.sleep(0.2)
    children = psutil.Process(proc.pid).children(recursive=True)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=90)
    assert proc.returncode == 130, err[-2000:]
    assert f"python -m evo_snn.search --resume {out}" in err and "SIGTERM received" not in err
    assert json.loads((out / "manifest.json").read_text())["status"] == "interrupted"
    gone, alive = psutil.wait_procs(children, timeout=30)
    assert not alive, [p.cmdline()[:2] for p in alive]
