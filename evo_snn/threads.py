"""Torch CPU threads that fit the machine, beside other busy processes too.

Measured on a 2-core host (``benchmarks/threads.py``, BENCHMARKS.md): torch's default of
one OpenMP thread per core collapses when another process shares the cores. Each
parallel region waits at a barrier for its slowest thread, and a thread the kernel has
descheduled for the neighbour stalls the others, which spin (libgomp spins for ~300,000
iterations by default) and so take CPU from the neighbour as well. Beside a 1-thread
torch training loop, 2 threads trained ``resnet18_tiny`` at 0.4x the speed of 1 thread.
Two things fix it:

1. ``openmp_defaults`` (called by ``import evo_snn``, before torch loads) sets
   ``GOMP_SPINCOUNT`` (libgomp, torch's OpenMP on Linux) to ``SPINCOUNT`` unless it is
   set already: a waiting thread yields the core after a short spin, so an oversubscribed
   barrier costs a context switch, not a time slice. Alone, a short spin costs nothing
   measurable (``OMP_WAIT_POLICY=PASSIVE``, no spin at all, cost 25 %).
2. ``ThreadGovernor`` picks the thread count from the CPUs this process may use
   (``os.sched_getaffinity``) divided by the number of workers, less the cores that other
   processes keep busy (``psutil.cpu_times`` of those CPUs minus this process's own CPU
   time), and re-checks at most once per ``interval_s`` while training and evaluating
   (``tick``, called by the training and validation loops), so a neighbour that starts
   later is seen too.

Override: ``--threads N`` / ``train.threads: N`` fixes N threads (no governor); the
environment variable ``EVO_SNN_THREADS=torch`` leaves torch's own defaults alone (no
``GOMP_SPINCOUNT``, no governor: the behaviour before this module, for benchmarks), and
``EVO_SNN_THREADS=N`` fixes N threads as ``--threads`` does.

No torch import at module level: ``openmp_defaults`` must run before torch loads.
"""

from __future__ import annotations

import math
import os
import sys
import time

ENV = "EVO_SNN_THREADS"
"""Environment variable: 'auto' (default), 'torch' (torch's defaults) or a thread count."""

SPINCOUNT = "1000"
"""``GOMP_SPINCOUNT`` set by ``openmp_defaults``: spin iterations before a waiting
OpenMP thread sleeps (libgomp's default with no OMP_WAIT_POLICY is 300,000)."""

IDLE_SLACK = 0.3
"""Cores of other processes' load ignored when counting free cores (Ray's daemons, a shell)."""


def env_mode(environ=None) -> str | int:
    """``EVO_SNN_THREADS`` as 'auto', 'torch' or an int >= 1; raises ValueError for
    anything else (naming the variable and the values it takes)."""
    value = (os.environ if environ is None else environ).get(ENV, "auto").strip().lower() or "auto"
    if value in ("auto", "torch"):
        return value
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise ValueError(f"{ENV}={value!r}: expected 'auto', 'torch' or a thread count >= 1")
    return n


def openmp_defaults(environ=None) -> dict[str, str]:
    """Set ``GOMP_SPINCOUNT`` in ``environ`` (default ``os.environ``) unless it, or
    ``OMP_WAIT_POLICY``, is set already, or ``EVO_SNN_THREADS=torch``; returns what was
    set. Has an effect only before torch (libgomp) is loaded in this process, and in the
    processes started after it (Ray actors inherit the driver's environment)."""
    environ = os.environ if environ is None else environ
    try:
        if env_mode(environ) == "torch":
            return {}
    except ValueError:
        return {}  # reported where the mode is read (ThreadGovernor / resolve_threads)
    if "GOMP_SPINCOUNT" in environ or "OMP_WAIT_POLICY" in environ:
        return {}
    environ["GOMP_SPINCOUNT"] = SPINCOUNT
    return {"GOMP_SPINCOUNT": SPINCOUNT}


def usable_cpus() -> list[int]:
    """The CPU ids this process may run on (``os.sched_getaffinity(0)``; all of
    ``os.cpu_count()`` where the platform has no affinity)."""
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return list(range(os.cpu_count() or 1))


def cpu_share(workers: int = 1, cpus: int | None = None) -> int:
    """Threads per worker when ``workers`` share ``cpus`` (default: ``usable_cpus``):
    ``max(1, cpus // workers)``."""
    cpus = len(usable_cpus()) if cpus is None else cpus
    return max(1, int(cpus) // max(1, int(workers)))


def threads_for(share: int, others_busy: float, cpus: int) -> int:
    """Threads for a process whose share is ``share`` threads when other processes keep
    ``others_busy`` cores (a float, in cores) of its ``cpus`` busy: the free cores, less
    ``IDLE_SLACK`` of noise, clipped to [1, share]."""
    free = cpus - max(0, math.ceil(others_busy - IDLE_SLACK))
    return max(1, min(int(share), free))


class CpuMeter:
    """Cores kept busy by other processes, over the interval since the last reading.

    ``read()`` returns ``(others_busy, wall_s)``: the busy time of ``cpus`` (user, system,
    nice, irq, steal from ``psutil.cpu_times(percpu=True)``) less this process's own CPU
    time, divided by the wall time since the previous reading, in cores (0 on the first
    reading, which only starts the interval). Counts every other process on those CPUs,
    the workers of this run included.
    """

    def __init__(self, cpus: list[int] | None = None):
        import psutil

        self._psutil = psutil
        self._proc = psutil.Process()
        self.cpus = usable_cpus() if cpus is None else list(cpus)
        self._last = None

    def _sample(self) -> tuple[float, float, float]:
        per = self._psutil.cpu_times(percpu=True)
        busy = 0.0
        for i in self.cpus:
            if i < len(per):
                t = per[i]
                busy += sum(getattr(t, f, 0.0) for f in ("user", "system", "nice", "irq", "softirq", "steal"))
        own = sum(self._proc.cpu_times()[:2])
        return time.monotonic(), busy, own

    def read(self) -> tuple[float, float]:
        now = self._sample()
        last, self._last = self._last, now
        if last is None or now[0] <= last[0]:
            return 0.0, 0.0
        wall = now[0] - last[0]
        return max(0.0, ((now[1] - last[1]) - (now[2] - last[2])) / wall), wall


class ThreadGovernor:
    """Sets torch's intra-op threads for this process and keeps them fitted to the free cores.

    share: the most threads this process may use (``cpu_share(workers)``); fixed: a thread
    count given by the user (``--threads``), set once and never changed; interval_s:
    the least wall time between two re-checks. ``tick()`` is cheap (one clock read) until
    ``interval_s`` has passed. ``changes`` counts the thread-count changes made.
    """

    def __init__(self, share: int, fixed: int | None = None, interval_s: float = 2.0, meter: CpuMeter | None = None):
        self.share = max(1, int(share))
        self.fixed = None if fixed is None else max(1, int(fixed))
        self.interval_s = float(interval_s)
        self.meter = meter
        if self.fixed is None and self.meter is None:
            self.meter = CpuMeter()
        self.threads = self.fixed or self.share
        self.changes = 0
        self._next = 0.0
        if self.meter is not None:
            self.meter.read()  # starts the first interval
            self._next = time.monotonic() + min(0.25, self.interval_s)  # first re-check soon
        set_torch_threads(self.threads)

    def tick(self) -> int:
        """Re-check the free cores if ``interval_s`` has passed (the first time after 0.25 s);
        returns the thread count in force."""
        if self.fixed is not None or time.monotonic() < self._next:
            return self.threads
        others, wall = self.meter.read()
        self._next = time.monotonic() + self.interval_s
        if wall > 0:
            n = threads_for(self.share, others, len(self.meter.cpus))
            if n != self.threads:
                self.threads = n
                self.changes += 1
                set_torch_threads(n)
        return self.threads

    def describe(self) -> dict:
        """``{'threads', 'share', 'fixed', 'changes', 'GOMP_SPINCOUNT'}`` for the manifest."""
        return {"threads": self.threads, "share": self.share, "fixed": self.fixed, "changes": self.changes,
                "GOMP_SPINCOUNT": os.environ.get("GOMP_SPINCOUNT")}


def set_torch_threads(n: int) -> None:
    """``torch.set_num_threads(n)`` if torch is loaded in this process and uses another
    count (never imports torch: Ray actors load it only when a function needs it)."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.get_num_threads() != n:
        torch.set_num_threads(n)


_GOVERNOR: ThreadGovernor | None = None


def resolve_threads(requested: int | None) -> int | str | None:
    """The thread setting in force: ``requested`` (``--threads`` / ``train.threads``) if
    given, else ``EVO_SNN_THREADS`` ('auto' -> None, 'torch', or an int). raises ValueError
    for a bad ``EVO_SNN_THREADS``."""
    if requested is not None:
        return int(requested)
    mode = env_mode()
    return None if mode == "auto" else mode


def configure(workers: int = 1, requested: int | None = None, *, share: int | None = None,
              interval_s: float = 2.0) -> ThreadGovernor | None:
    """Install this process's governor: ``requested`` threads fixed, or (None) a governor
    over ``share`` threads (default ``cpu_share(workers)``); with ``EVO_SNN_THREADS=torch``
    and nothing requested, nothing is installed and None is returned. Returns the governor
    that ``tick`` uses. raises ValueError for a bad ``EVO_SNN_THREADS``."""
    global _GOVERNOR
    setting = resolve_threads(requested)
    if setting == "torch":
        _GOVERNOR = None
        return None
    share = cpu_share(workers) if share is None else share
    _GOVERNOR = ThreadGovernor(share, fixed=setting, interval_s=interval_s)
    return _GOVERNOR


def tick() -> None:
    """The installed governor's ``tick`` (nothing when none is installed, e.g. library use)."""
    if _GOVERNOR is not None:
        _GOVERNOR.tick()


def governor() -> ThreadGovernor | None:
    """The installed governor, or None."""
    return _GOVERNOR
