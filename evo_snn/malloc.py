"""glibc malloc thresholds that keep a training loop's freed memory in the process.

On the CPU torch allocates tensors with the C library's ``malloc``: it has no caching
allocator there. glibc serves a request above ``M_MMAP_THRESHOLD`` with a fresh ``mmap``,
and it returns the top of the heap to the OS once more than ``M_TRIM_THRESHOLD`` is free
there. Both thresholds move with the sizes freed so far. Memory that went back to the OS
costs a minor page fault, plus a zeroed 4 KiB page, when the next step touches it again.

Measured on N-MNIST (``conv_snn`` 16-32, T=8, batch 32, 15 KD steps, one torch thread;
``benchmarks/malloc_faults.py``, median of 8): one fitness evaluation took 181,000 minor
faults and 3.38 s with glibc's own thresholds, and 8,000 faults and 2.94 s with the two
thresholds fixed here.

``malloc_defaults`` (called by ``import evo_snn``) fixes ``M_MMAP_THRESHOLD`` at 32 MiB
(glibc's largest; bigger requests are still mapped and unmapped) and ``M_TRIM_THRESHOLD``
at 512 MiB, with ``mallopt``. A process then keeps up to 512 MiB of freed heap for its next
step instead of returning it. It does nothing:

- where the C library is not glibc (macOS, musl, Windows);
- where glibc's own variables ``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_`` or
  ``MALLOC_TOP_PAD_`` are set (the user's choice stands);
- with ``EVO_SNN_MALLOC=system`` (glibc's dynamic thresholds, as before this module).

Results do not change: only where the bytes come from does.
"""

from __future__ import annotations

import ctypes
import os
import sys

ENV = "EVO_SNN_MALLOC"
"""Environment variable: 'tuned' (default: the thresholds below) or 'system' (glibc's own)."""

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
"""``mallopt`` parameter numbers (glibc's malloc.h)."""

MMAP_THRESHOLD = 32 << 20
"""bytes; glibc's upper bound for ``M_MMAP_THRESHOLD`` on 64-bit hosts (larger values are refused)."""
TRIM_THRESHOLD = 512 << 20
"""bytes of free heap top a process keeps instead of returning it to the OS."""
GLIBC_VARIABLES = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")
APPLIED: dict[str, int] = {}
"""What ``import evo_snn``'s ``malloc_defaults`` call set in this process ({parameter name: bytes}; {} for
nothing), for manifest.json."""


def env_mode(environ=None) -> str:
    """``EVO_SNN_MALLOC`` as 'tuned' or 'system'; raises ValueError for anything else."""
    value = (os.environ if environ is None else environ).get(ENV, "tuned").strip().lower() or "tuned"
    if value not in ("tuned", "system"):
        raise ValueError(f"{ENV}={value!r}: expected 'tuned' (the default) or 'system' (glibc's own thresholds)")
    return value


def _glibc():
    """This process's C library when it is glibc (it has ``mallopt`` and ``gnu_get_libc_version``), else None.
    ``CDLL(None)``: the symbols already loaded, so no library search (``ctypes.util.find_library`` runs
    ``ldconfig``) at every ``import evo_snn``."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
    except OSError:
        return None
    return libc if hasattr(libc, "gnu_get_libc_version") else None  # glibc only (musl's mallopt is a stub)


def malloc_defaults(environ=None, libc=None) -> dict[str, int]:
    """Fix glibc's ``M_MMAP_THRESHOLD`` and ``M_TRIM_THRESHOLD`` for this process (see the
    module docstring); returns {parameter name: bytes} of what was set, {} where nothing
    was (not glibc, glibc's variables set, ``EVO_SNN_MALLOC=system``, or an invalid
    ``EVO_SNN_MALLOC``, reported by ``env_mode``). libc: the C library to call (a test
    double; default the process's glibc)."""
    environ = os.environ if environ is None else environ
    try:
        if env_mode(environ) == "system":
            return {}
    except ValueError:
        return {}  # import evo_snn must not fail on it; python -m evo_snn.search reports it (exit 2)
    if any(v in environ for v in GLIBC_VARIABLES):
        return {}
    libc = libc if libc is not None else _glibc()
    if libc is None:
        return {}
    done = {}
    for name, param, value in (("M_MMAP_THRESHOLD", M_MMAP_THRESHOLD, MMAP_THRESHOLD),
                               ("M_TRIM_THRESHOLD", M_TRIM_THRESHOLD, TRIM_THRESHOLD)):
        if libc.mallopt(param, value) == 1:  # 1 on success, 0 when glibc refuses the value
            done[name] = value
    return done
