"""Atomic file writes and JSON conversion (no torch, so pure-data modules such as
``genome``, ``config`` and ``nsga`` can use them)."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path


DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
"""OSError numbers of a full disk, a quota or a file-size limit (``ulimit -f``): the CLIs
report them in one line and exit non-zero (D7 of issue 27)."""


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via ``<name>.tmp-<pid>``, fsync, then ``os.replace``:
    readers see the old file or the whole new one, never a half-written one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # nothing half-written is left behind
        raise


def to_jsonable(x):
    """Tuples -> lists and numpy scalars -> Python numbers, recursively (dicts, lists, tuples)."""
    if isinstance(x, dict):
        return {k: to_jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [to_jsonable(v) for v in x]
    if hasattr(x, "item") and getattr(x, "ndim", None) == 0:  # numpy / torch scalar
        return x.item()
    return x


def json_default(x):
    """``json.dumps(default=...)``: scalars with ``.item()`` (numpy, torch), sets and tuples, paths."""
    if hasattr(x, "item"):
        return x.item()
    if isinstance(x, (set, tuple)):
        return list(x)
    if isinstance(x, Path):
        return str(x)
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


def read_jsonl(path: Path) -> tuple[list, int]:
    """The parsed lines of a JSON-lines file (e.g. ``evaluations.jsonl``), and how many
    lines were not JSON (one cut short by a crash, or being written). A missing file
    gives ([], 0). Bytes that are not UTF-8 make their line count as not JSON (no
    UnicodeDecodeError). Callers decide what to do with values that are not JSON objects."""
    path = Path(path)
    if not path.is_file():
        return [], 0
    values, bad = [], 0
    for line in path.read_bytes().splitlines():
        try:
            values.append(json.loads(line.decode("utf-8")))
        except ValueError:  # not JSON, or not UTF-8 (UnicodeDecodeError is a ValueError)
            bad += 1
    return values, bad
