"""One writer per run directory: ``run.lock`` (an OS lock through ``filelock``) refuses a
second search, and a lock left by a process that died (SIGKILL) is taken over."""

import signal
import subprocess
import sys
import time

import pytest

from evo_snn.state.rundir import LOCK_FILE, RunDir, RunDirError
from evo_snn.search.run import main

HOLD = """
import sys
from evo_snn.state.rundir import RunDir
held = {}
for line in sys.stdin:  # 'lock PATH' / 'unlock PATH'; ends with this test process (stdin closed)
    cmd, path = line.rstrip("\\n").split(" ", 1)
    if cmd == "lock":
        held[path] = RunDir.open(path)
        held[path].lock()
    else:
        held.pop(path).unlock()
    print(cmd + "ed", flush=True)
"""


class Holder:
    """A child process that takes a run's lock as a search does (``RunDir.lock``) and keeps it
    until told to unlock or until it is killed. One per module (a new process imports torch
    through evo_snn.state.rundir: ~2 s); started again after a test kills it."""

    proc = None

    def _send(self, cmd, path):
        if self.proc is None or self.proc.poll() is not None:
            self.proc = subprocess.Popen([sys.executable, "-c", HOLD], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         text=True)
        self.proc.stdin.write(f"{cmd} {path}\n")
        self.proc.stdin.flush()
        assert self.proc.stdout.readline().strip() == cmd + "ed"

    def lock(self, path):
        self._send("lock", path)

    def unlock(self, path):
        self._send("unlock", path)

    def kill(self):
        """SIGKILL: the holder dies holding its locks, no cleanup code runs."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)
        self.proc = None

    def close(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def holder():
    h = Holder()
    yield h
    h.close()


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


# ------------------------------------------- the lock is the only "still running?" check
def _killed_run(tmp_path, *, checkpoint: bool):
    """A tiny synthetic run as a SIGKILLed search leaves it: manifest.json still says
    'running', with a pid that now belongs to a live, unrelated process (pid 1)."""
    from evo_snn.state.checkpoint import CheckpointWriter, student_store
    from evo_snn.config import load_config

    cfg = load_config("synthetic", None, ["data.synthetic_classes=3", "data.synthetic_train_per_class=8",
                                          "data.synthetic_test_per_class=2", "data.synthetic_size=8", "data.frames=2",
                                          "model.channels=[4]"])
    run = RunDir.create(tmp_path / "r", "synthetic", "t")
    run.write_json("config.json", cfg.to_dict())
    run.start(["python", "-m", "evo_snn.search", "--dataset", "synthetic"], seed=0, device="cpu")
    run.write_json("manifest.json", {**run.manifest, "pid": 1})  # status 'running', pid alive on this host
    if checkpoint:
        (run.teacher / "teacher.pt").write_bytes(b"")  # resume_search checks that it is there; _execute would load it
        ckpts = run.path / "checkpoints"
        CheckpointWriter(ckpts, student_store(ckpts)).save({"gen": 0, "population": [], "archive": [], "results": {},
                                                            "genomes": {}})
    return run


@pytest.mark.parametrize("checkpoint", [True, False], ids=["resume", "restart-before-first-checkpoint"])
def test_a_live_pid_in_the_manifest_does_not_block_resume_only_a_held_lock_does(tmp_path, capsys, monkeypatch, checkpoint,
                                                                                holder):
    import json
    import os

    import evo_snn.search.run as search_mod

    run = _killed_run(tmp_path, checkpoint=checkpoint)
    os.kill(1, 0)  # pid 1 is alive (PermissionError would mean alive too, and fails this test loudly)
    calls = []

    def fake_execute(run_, cfg, splits, device, args, ckpt=None, **kw):  # the stages themselves are tested elsewhere
        calls.append((run_.path, ckpt.gen if ckpt is not None else None))
        assert run_._lock is not None  # it runs as the run's one writer
        return 0

    monkeypatch.setattr(search_mod, "_execute", fake_execute)
    holder.lock(run.path)  # a search holds the run: refused whatever the manifest says
    try:
        assert main(["--resume", str(run.path), "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and str(run.path / LOCK_FILE) in err
        assert "being written by another search (manifest.json: pid 1 on host" in err
        assert "wait for that search to end or stop it" in err and calls == []
    finally:
        holder.unlock(run.path)
    # nobody holds run.lock: the manifest's live pid 1 is not the run's search, --resume goes on
    assert main(["--resume", str(run.path), "--no-progress"]) == 0, capsys.readouterr().err
    assert calls == [(run.path, 0 if checkpoint else None)]
    m = json.loads((run.path / "manifest.json").read_text())
    assert m["pid"] == os.getpid() and m["resumes"][-1]["previous_status"] == "running"


# last in the module: it kills the module's holder process
def test_resume_is_refused_while_another_process_holds_the_run_and_a_dead_holders_lock_is_taken_over(tmp_path, capsys, holder):
    run = RunDir.create(tmp_path / "r", "synthetic", "t")
    run.write_json("manifest.json", {"pid": 4242, "host": "elsewhere", "status": "completed"})
    holder.lock(run.path)
    try:
        assert main(["--resume", str(run.path), "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert "being written by another search (manifest.json: pid 4242 on host elsewhere)" in err
        assert str(run.path / LOCK_FILE) in err and len(err.strip().splitlines()) == 1
    finally:
        holder.kill()  # dies holding the lock: no cleanup code runs
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
