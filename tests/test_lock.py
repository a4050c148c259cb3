"""One writer per run directory: ``run.lock`` (an OS lock through ``filelock``) refuses a
second search, and a lock left by a process that died (SIGKILL) is taken over."""

import signal
import subprocess
import sys
import time

import pytest

from evo_snn.rundir import LOCK_FILE, RunDir, RunDirError
from evo_snn.search import main

HOLD = """
import sys, time
from evo_snn.rundir import RunDir
run = RunDir.open(sys.argv[1])
run.lock()
print("locked", flush=True)
time.sleep(600)
"""


def _holder(path):
    """A child process that takes the run's lock and keeps it until it is killed."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_second_writer_in_this_process_is_refused_until_the_first_unlocks(tmp_path):
    run = RunDir.create(tmp_path / "r", "synthetic", "t")
    run.lock()
    run.lock()  # taking it twice is a no-op
    with pytest.raises(RunDirError, match=f"being written by another search.*{LOCK_FILE}"):
        RunDir.open(run.path).lock()
    run.unlock()
    other = RunDir.open(run.path)
    other.lock()  # free again
    other.unlock()


def test_resume_is_refused_while_another_process_holds_the_run_and_a_dead_holders_lock_is_taken_over(tmp_path, capsys):
    run = RunDir.create(tmp_path / "r", "synthetic", "t")
    run.write_json("manifest.json", {"pid": 4242, "host": "elsewhere", "status": "completed"})
    proc = _holder(run.path)
    try:
        assert main(["--resume", str(run.path), "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert "being written by another search (manifest.json: pid 4242 on host elsewhere)" in err
        assert str(run.path / LOCK_FILE) in err and len(err.strip().splitlines()) == 1
    finally:
        proc.send_signal(signal.SIGKILL)  # dies holding the lock: no cleanup code runs
        proc.wait(timeout=30)
    assert (run.path / LOCK_FILE).exists()  # the stale lock file is still there ...
    t0 = time.perf_counter()
    taker = RunDir.open(run.path)
    taker.lock()  # ... but the OS released its lock with the process
    assert time.perf_counter() - t0 < 5
    taker.unlock()
    # --resume now gets past the lock (and stops at the missing checkpoint instead)
    assert main(["--resume", str(run.path), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "being written" not in err and "checkpoint" in err
