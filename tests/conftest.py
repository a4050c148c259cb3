"""Shared fixtures: tiny configs and data, one Ray session for the whole test run."""

from __future__ import annotations

import os
from pathlib import Path

# One fixed torch thread in every run the tests start (in this process, CLI subprocesses and
# Ray actors): evo_snn.threads' governor would otherwise fit the count to the load, and float
# results may differ in the last bits between thread counts (exact-resume and golden tests).
# tests/test_threads.py tests the governor itself.
os.environ.setdefault("EVO_SNN_THREADS", "1")

import pytest

from evo_snn.config import Config
from tinycfg import tiny_config  # noqa: F401  (also importable from here, as before)

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session", autouse=True)
def no_disk_flush():
    """``os.fsync`` in this test process checks its file descriptor (an open regular file or
    folder, as fsync needs) but does not wait for the disk. fsync only makes a write survive
    an OS crash or a power cut, which no test simulates or can observe: the tests' crashes
    are exceptions and SIGKILLs, after which the page cache still holds every write. Every
    atomic write (``evo_snn.atomic``) paid ~2.5 ms here, some thousands of them per test run.
    Child processes (the CLI runs, Ray workers) keep the real fsync."""
    import os
    import stat

    def checked_fsync(fd):
        mode = os.fstat(fd if isinstance(fd, int) else fd.fileno()).st_mode  # EBADF as fsync
        if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            raise OSError(22, "Invalid argument")  # EINVAL as fsync on a pipe or socket

    mp = pytest.MonkeyPatch()
    mp.setattr(os, "fsync", checked_fsync)
    yield
    mp.undo()


@pytest.fixture(scope="session")
def tiny_cfg() -> Config:
    return tiny_config()


@pytest.fixture(scope="session")
def tiny_splits(tiny_cfg):
    from evo_snn.data import load_splits

    return load_splits("synthetic", None, tiny_cfg.data, seed=0)


@pytest.fixture(scope="session", autouse=True)
def torch_one_thread_in_this_process():
    """Every test runs torch on one thread in this process (``one_torch_thread`` for all): the
    tests' nets are tiny, and two OpenMP threads spin-wait, against each other and against the
    Ray actors and CLI processes that the tests start on the same 2 cores. Measured on ten test
    files that had run on the default 2 threads (export, energy, checkpoint, pareto, plots, kd,
    pruning, train, two data files), loaded 2-core box: 21.2 / 23.2 s -> 13.6 / 14.8 s. Ray
    actors and child processes set their own threads."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny nets run fastest on one thread, and 2 OpenMP threads on a shared 2-core box spin-wait."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray (2 CPUs, listening on loopback only) for all tests that need it (~4 s to
    start), started as the evaluator starts its own (``init_local_ray``)."""
    ray = pytest.importorskip("ray")
    from evo_snn.evaluation.evaluator import init_local_ray

    init_local_ray(num_cpus=2)
    yield ray
    ray.shutdown()


class SharedRayEvaluator:
    """One 2-actor ``RayEvaluator`` on the session's Ray for the tests that only need working
    actors (every new actor is a process that imports torch: ~2 s each, more on a loaded box).
    Its actors hold the session's 2 CPUs: a test that starts actors of its own (a search with
    ``--workers 2`` in this process) asks for ``ray_cpus_free``, which closes it; the next
    ``ray_evaluator`` starts a new one."""

    def __init__(self):
        self.ev = None

    def get(self):
        from evo_snn.evaluation.evaluator import RayEvaluator

        if self.ev is None:
            self.ev = RayEvaluator(workers=2)
        self.reset()
        return self.ev

    def reset(self):
        """As a new evaluator: default retries, no timeout, no faults, no function held (a test's
        first map loads its function on every actor, replacing one that died while idle)."""
        ev = self.ev
        ev.max_retries, ev.timeout_s, ev.faults = 2, 0.0, None
        ev._fn = ev._fn_ref = None

    def release(self):
        if self.ev is not None:
            self.ev.close()
            self.ev = None


def pytest_collection_modifyitems(session, config, items):
    """Tests that close the shared Ray evaluator (``ray_cpus_free``) run last, so that its two
    actors (a torch import each, ~2 s) start once per session instead of again after each."""
    items.sort(key=lambda item: "ray_cpus_free" in getattr(item, "fixturenames", ()))  # stable: order kept otherwise


@pytest.fixture(scope="session")
def shared_ray(ray_session):
    shared = SharedRayEvaluator()
    yield shared
    shared.release()


@pytest.fixture
def ray_evaluator(shared_ray):
    """The shared 2-actor evaluator (``SharedRayEvaluator``), reset before and after the test;
    the test may kill its actors (the evaluator replaces them) but must not close it."""
    ev = shared_ray.get()
    yield ev
    if shared_ray.ev is not None:
        assert ev.actors, "a test closed the shared RayEvaluator"
        shared_ray.reset()


@pytest.fixture
def ray_cpus_free(shared_ray):
    """The session's Ray with no actor of the shared evaluator (all its CPUs free)."""
    shared_ray.release()
    yield shared_ray.ev
