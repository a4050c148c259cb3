"""The run directory: every file a run leaves, written atomically (tmp + ``os.replace``).

Layout::

  config.json  manifest.json  evaluations.jsonl  generations.csv  pareto.csv
  teacher/  checkpoints/ (evo_snn.state.checkpoint)  exported/<uid>/  plots/

``RunDir.create`` makes a new run directory; ``RunDir.open`` an existing one, for
``--resume`` (``RunDir.resume`` then records the resume in manifest.json).

One writer per run directory: ``RunDir.lock`` takes ``run.lock`` (an OS file lock,
``fcntl.flock`` through the ``filelock`` package) and a second search on the same
directory is refused; the OS drops the lock when its process dies, however it dies
(SIGKILL included), so a lock left by a dead search is simply taken over. The lock is
the only "is this run still being written?" check: manifest.json's ``pid`` and
``status`` are a record, not a claim (a killed run's manifest still says 'running',
and its pid may since belong to an unrelated process).

The logs a search writes into it as it goes (evaluations.jsonl, generations.csv,
pareto.csv: ``RunLogger``) are in ``evo_snn.state.runlog``, re-exported here.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import os
import platform
import signal
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pandas as pd
import torch
from tqdm.auto import tqdm

from evo_snn.atomic import atomic_write_bytes, json_default, read_jsonl
from evo_snn.training.train import cpu_state

# re-exported: the run's logs moved to evo_snn.state.runlog
from evo_snn.state.runlog import (ENERGY_COLUMNS, EVALUATION_FIELDS, RunLogger, SearchFailedError,  # noqa: F401
                                  duration, failure_summary, pareto_frame, row_metrics)

PACKAGES = ("evo_snn", "torch", "spikingjelly", "deap", "ray", "numpy", "pandas")


LOCK_FILE = "run.lock"


class RunDirError(RuntimeError):
    """The output directory cannot be used (exists and is not empty, not writable, or
    locked by another search)."""


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def save_state_dict(path: Path, state: dict[str, torch.Tensor]) -> None:
    """torch.save of plain tensors only (loads with ``weights_only=True``), atomically."""
    buf = io.BytesIO()
    torch.save(cpu_state(state), buf)
    atomic_write_bytes(path, buf.getvalue())


def git_revision() -> dict:
    root = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, timeout=10)
        if sha.returncode == 0:
            return {"sha": sha.stdout.strip(), "dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        pass
    return {"sha": None, "dirty": None}


def package_versions() -> dict:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


class RunDir:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.teacher = self.path / "teacher"
        self.exported = self.path / "exported"
        self.plots = self.path / "plots"
        self.checkpoints = self.path / "checkpoints"
        self.manifest: dict = {}
        self._lock = None

    def lock(self) -> None:
        """Become the one writer of this run directory: take ``<run>/run.lock`` (an OS lock,
        held until ``unlock()`` or the end of this process, which releases it even on
        SIGKILL). raises RunDirError naming the lock file, and the pid of the search that
        manifest.json says runs it, when another process holds it."""
        from filelock import FileLock, Timeout

        if self._lock is not None:
            return
        lock = FileLock(str(self.path / LOCK_FILE), timeout=0, thread_local=False)
        try:
            lock.acquire()
        except Timeout:
            try:
                m = json.loads((self.path / "manifest.json").read_text())
                who = f" (manifest.json: pid {m['pid']} on host {m.get('host')})"
            except (OSError, ValueError, TypeError, KeyError):
                who = ""
            raise RunDirError(f"{self.path} is being written by another search{who}: {self.path / LOCK_FILE} is "
                              "locked; wait for that search to end or stop it, or choose another run directory") from None
        except OSError as e:
            raise RunDirError(f"cannot lock {self.path / LOCK_FILE}: {e}; the run directory must be writable") from e
        self._lock = lock

    def unlock(self) -> None:
        """Release the lock taken by ``lock()`` (nothing when it holds none)."""
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    @classmethod
    def open(cls, path: str | Path) -> "RunDir":
        """An existing run directory, with its manifest.json read (``{}`` when absent);
        raises RunDirError when ``path`` is not a directory or the manifest is not JSON."""
        path = Path(path)
        if not path.is_dir():
            raise RunDirError(f"run directory {path} not found")
        run = cls(path)
        mf = path / "manifest.json"
        try:
            run.manifest = json.loads(mf.read_text()) if mf.is_file() else {}
        except (OSError, ValueError) as e:  # UnicodeDecodeError is a ValueError
            raise RunDirError(f"{mf}: not readable JSON ({e})") from e
        if not isinstance(run.manifest, dict):
            raise RunDirError(f"{mf}: a JSON {type(run.manifest).__name__}, expected an object (the file has been "
                              "altered: restore it, or delete it to resume without the run's history)")
        if not mf.is_file() and (path / "config.json").is_file():
            tqdm.write(f"warning: {mf} is missing: the run's original argv, seed, versions and resume history are "
                       "lost; resuming from config.json and the checkpoint")
        for d in (run.teacher, run.exported, run.plots):
            d.mkdir(parents=True, exist_ok=True)
        return run

    @classmethod
    def create(cls, out: str | Path | None, dataset: str, tag: str, root: str | Path = "runs") -> "RunDir":
        """``out`` or ``<root>/<YYYYmmdd-HHMMSS>-<dataset>-<tag>``; raises RunDirError if it holds files."""
        if out is None:
            stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
            out = Path(root) / f"{stamp}-{dataset}-{tag}"
        path = Path(out)
        if path.exists() and any(path.iterdir()):
            raise RunDirError(f"output directory {path} is not empty; choose another --out or remove it")
        try:
            for d in ("", "teacher", "exported", "plots"):
                (path / d).mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise RunDirError(f"cannot create output directory {path}: {e}; pass a writable --out") from e
        return cls(path)

    # ------------------------------------------------------------------ writers
    def write_json(self, rel: str | Path, obj) -> None:
        atomic_write_bytes(self.path / rel, (json.dumps(obj, indent=2, default=json_default) + "\n").encode())

    def append_jsonl(self, rel: str, obj) -> None:
        with open(self.path / rel, "a") as f:
            f.write(json.dumps(obj, default=json_default) + "\n")

    def write_jsonl(self, rel: str, rows: list) -> None:
        """Replace ``rel`` with one JSON line per row, atomically."""
        atomic_write_bytes(self.path / rel, "".join(json.dumps(r, default=json_default) + "\n" for r in rows).encode())

    def write_csv(self, rel: str, df: pd.DataFrame) -> None:
        atomic_write_bytes(self.path / rel, df.to_csv(index=False).encode())

    def save_teachers(self, teachers) -> None:
        """teacher/teacher.pt, metrics.json, split.json (when known) and, for kd.mode 'ann',
        ann_teacher.pt + ann_metrics.json of an ``evo_snn.training.teacher.Teachers``; then deletes
        teacher/partial.pt (``evo_snn.training.teacher.train_teacher``'s epoch checkpoint)."""
        save_state_dict(self.teacher / "teacher.pt", teachers.dense.state_dict())
        self.write_json("teacher/metrics.json", teachers.metrics)
        if teachers.split is not None:
            self.write_json("teacher/split.json", teachers.split)
        if teachers.ann_state is not None:
            save_state_dict(self.teacher / "ann_teacher.pt", teachers.ann_state)
            self.write_json("teacher/ann_metrics.json", teachers.ann_metrics)
        (self.teacher / "partial.pt").unlink(missing_ok=True)  # the epoch checkpoint of teacher training

    def truncate_evaluations(self, gen: int) -> tuple[list[dict], int]:
        """Rows of evaluations.jsonl with ``gen <= gen``, and how many other lines there were
        (an unfinished generation, or a line cut short by a crash); rewrites the file
        atomically without those lines (``--resume``)."""
        values, dropped = read_jsonl(self.path / "evaluations.jsonl")
        rows = []
        for row in values:
            if isinstance(row, dict) and isinstance(row.get("gen"), int) and row["gen"] <= gen:
                rows.append(row)
            else:
                dropped += 1
        if dropped:
            self.write_jsonl("evaluations.jsonl", rows)
        return rows, dropped

    def evaluations_after(self, gen: int) -> list[dict]:
        """The readable rows of evaluations.jsonl with ``gen > gen`` (those of a generation
        that a kill left unfinished; ``--resume`` reuses the finished ones, see
        ``row_metrics``); lines cut short by a crash are skipped."""
        values, _ = read_jsonl(self.path / "evaluations.jsonl")
        return [row for row in values if isinstance(row, dict) and isinstance(row.get("gen"), int) and row["gen"] > gen]

    # ------------------------------------------------------------------ manifest
    def start(self, argv: list[str], seed: int, device: str, data_root: str | None = None) -> None:
        """Write manifest.json with status 'running'; ``data_root`` (absolute path or
        None for embedded data) is what ``--resume`` reloads the data set from."""
        self.manifest = {
            "argv": list(argv),
            "seed": seed,
            "device": device,
            "git": git_revision(),
            "versions": package_versions(),
            "host": platform.node(),
            "start": now_iso(),
            "end": None,
            "status": "running",
            "executable": sys.executable,
            "pid": os.getpid(),
            "data_root": data_root,
        }
        self.write_json("manifest.json", self.manifest)

    def resume(self, argv: list[str], from_gen: int, device: str, **extra) -> None:
        """Mark the run 'running' again: sets ``resumed_from_gen`` and appends an entry
        (argv, start, from_gen, device, git, previous status and error, ``extra``) to
        the manifest's ``resumes`` list; the original argv and start stay as they were."""
        m = self.manifest
        entry = {"argv": list(argv), "start": now_iso(), "from_gen": from_gen, "device": device, "git": git_revision(),
                 "host": platform.node(), "pid": os.getpid(), "previous_status": m.get("status"),
                 "previous_end": m.get("end"), **extra}
        if "error" in m:
            entry["previous_error"] = m.pop("error")
        m.pop("traceback", None)
        m.setdefault("resumes", []).append(entry)
        m.update(status="running", end=None, resumed_from_gen=from_gen, pid=os.getpid(), host=platform.node())
        self.write_json("manifest.json", m)

    def note(self, **fields) -> None:
        """Add fields to manifest.json (e.g. the neuron backend once it is known)."""
        self.manifest.update(fields)
        self.write_json("manifest.json", self.manifest)

    def finish(self, status: str, error: str | None = None, **extra) -> None:
        self.manifest.update(end=now_iso(), status=status, **extra)
        if error:
            self.manifest["error"] = error
        self.write_json("manifest.json", self.manifest)


@contextlib.contextmanager
def sigterm_as_interrupt():
    """Within the block, SIGTERM (e.g. a scheduler ending the job) raises KeyboardInterrupt,
    so that a run records status 'interrupted' in manifest.json instead of staying
    'running'. The previous handler is restored afterwards (main thread only)."""

    previous = signal.signal(signal.SIGTERM, _sigterm_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _sigterm_handler(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def reclaim_sigterm() -> None:
    """Install ``sigterm_as_interrupt``'s handler again (main thread only; no-op elsewhere).
    ``ray.init`` replaces the driver's SIGTERM handler with one that aborts the process
    (exit 134, the manifest left at 'running'); called after Ray has started, it makes
    SIGTERM end a run with Ray workers as 'interrupted' (exit 130), its workers stopped."""
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _sigterm_handler)
