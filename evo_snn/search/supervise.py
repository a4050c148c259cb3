"""The watcher of ``python -m evo_snn.search``: the search (``main`` of
``evo_snn.search.run``) runs in a forked child, and this process records how it ended
when the child could not.

A search can die where Python cannot catch it: Ray's local node fate-shares with its
dashboard agent and raylet, and when one of them is killed, Ray's core worker ends the
driver at once (exit 1, no traceback, manifest.json left at 'running'; D2 of issue 27).
The child tells the parent which run directory it writes (``announce``, through a pipe);
when the child ends while that run's manifest still says 'running', the parent marks
the run 'failed' with a one-line reason and prints the ``--resume`` command.
"""

from __future__ import annotations

import os
import signal
import sys
import traceback
from pathlib import Path
from typing import Callable

from evo_snn.state.rundir import RunDir, RunDirError

_ANNOUNCE_FD: int | None = None  # set in the child of ``supervise``: where the run directory is announced


def announce(path: Path) -> None:
    """Tell the supervising parent (``supervise``) which run directory this process writes."""
    if _ANNOUNCE_FD is not None:
        os.write(_ANNOUNCE_FD, (str(Path(path).resolve()) + "\n").encode())


def supervise(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> int:
    """``main(argv)`` in a forked child, watched by this process; returns the child's exit
    code (128 + N when signal N killed it).

    The parent forwards SIGTERM and SIGHUP to the child, ignores SIGINT (Ctrl-C reaches the
    child through the terminal), and when the child ends while its manifest still says
    'running', marks the run 'failed' with a one-line reason and prints the ``--resume``
    command. Where ``os.fork`` is missing (Windows) it is ``main(argv)`` itself."""
    if not hasattr(os, "fork"):
        return main(argv)
    read_fd, write_fd = os.pipe()
    parent = os.getpid()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the search
        _child(main, argv, parent, read_fd, write_fd)
    os.close(write_fd)
    forward = lambda signum, frame: os.kill(pid, signum)  # noqa: E731
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, forward)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except InterruptedError:
            continue
    with os.fdopen(read_fd) as f:
        announced = [line.strip() for line in f if line.strip()]
    code = os.waitstatus_to_exitcode(status)
    if announced:
        _check_run_ended(Path(announced[-1]), pid, code)
    return code if code >= 0 else 128 - code


def _child(main: Callable[[list[str] | None], int], argv: list[str] | None, parent: int, read_fd: int,
           write_fd: int) -> None:
    """The forked child: ``main(argv)``, announcing its run directory on ``write_fd``; ends
    the process with main's exit code (1 after an uncaught exception, printed)."""
    global _ANNOUNCE_FD
    _die_with_parent(parent)
    os.close(read_fd)
    _ANNOUNCE_FD = write_fd
    code = 1
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _die_with_parent(parent: int) -> None:
    """SIGKILL this process when ``parent`` dies (Linux ``prctl(PR_SET_PDEATHSIG)``), so that
    a SIGKILL of ``python -m evo_snn.search`` still ends the search, as it did without the
    supervising parent; elsewhere nothing."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(137)


def _check_run_ended(path: Path, pid: int, code: int) -> None:
    """After the search process ``pid`` ended with ``code`` (negative: killed by that
    signal): a manifest it left at 'running' becomes 'failed' with the reason, and the
    ``--resume`` command is printed."""
    try:
        run = RunDir.open(path)
    except RunDirError:
        return
    m = run.manifest
    if m.get("status") != "running" or m.get("pid") != pid:
        return
    how = f"was killed by signal {-code}" if code < 0 else f"ended with exit code {code}"
    msg = (f"the search process {how} without recording why: Ray's local node dies with its raylet, GCS or dashboard "
           "agent, and then ends the driver at once (or the process was killed or ran out of memory); continue with: "
           f"python -m evo_snn.search --resume {run.path}")
    run.finish("failed", error=msg)
    print(f"error: {msg}", file=sys.stderr)
