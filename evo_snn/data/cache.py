"""On-disk cache of converted frames, so a second run does not parse the events again.

Directory: ``cfg.cache_dir``, else ``$XDG_CACHE_HOME/evo_snn``, else
``~/.cache/evo_snn``. One ``.npz`` per (data set, resolved data root, frames,
split_by, downsample, FORMAT_VERSION, size + mtime of every source file), named
``<dataset>-<sha256 prefix>.npz`` and holding ``train_frames``, ``train_labels``,
``test_frames``, ``test_labels`` (counts as uint8/int16/int32, labels int64).
Files are written atomically (``<name>.tmp-<pid>``, then ``os.replace``). A cache
that cannot be written or read back only warns; the data are then parsed anew.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
import zipfile
from pathlib import Path
from typing import Callable

import numpy as np

FORMAT_VERSION = 1
ARRAYS = ("train_frames", "train_labels", "test_frames", "test_labels")


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/evo_snn`` when XDG_CACHE_HOME is set (and non-empty), else ``~/.cache/evo_snn``."""
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "evo_snn"


def cache_key(dataset: str, root: Path, frames: int, split_by: str, downsample: int, files: list[Path]) -> str:
    """sha256 hex digest of the settings and every source file's path (relative to root), size and mtime."""
    stats = []
    for f in files:
        st = f.stat()
        try:
            rel = str(f.relative_to(root))
        except ValueError:
            rel = str(f)
        stats.append([rel, st.st_size, st.st_mtime_ns])
    payload = {
        "dataset": dataset,
        "root": str(Path(root).resolve()),
        "frames": frames,
        "split_by": split_by,
        "downsample": downsample,
        "format_version": FORMAT_VERSION,
        "files": stats,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def load(path: Path) -> dict[str, np.ndarray] | None:
    """The cached arrays, or None when the file is absent; a corrupt file warns and returns None."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in ARRAYS}
    except (OSError, KeyError, ValueError, zipfile.BadZipFile, EOFError) as e:
        warnings.warn(f"frame cache {path} is unreadable ({e}); parsing the data again", stacklevel=3)
        return None
    return arrays


def save(path: Path, arrays: dict[str, np.ndarray]) -> bool:
    """Write ``arrays`` to ``path`` atomically; warns and returns False if that fails."""
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)
        os.replace(tmp, path)
        return True
    except OSError as e:
        warnings.warn(
            f"cannot write the frame cache {path} ({e.strerror or e}); continuing without caching "
            "(set data.cache_dir to a writable folder)",
            stacklevel=3,
        )
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        return False


def cached(
    dataset: str,
    root: Path,
    *,
    frames: int,
    split_by: str,
    downsample: int,
    cache_dir: str | Path | None,
    files: list[Path],
    build: Callable[[], dict[str, np.ndarray]],
) -> dict[str, np.ndarray]:
    """The arrays from the cache when the key matches, else ``build()`` (then stored)."""
    directory = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    key = cache_key(dataset, root, frames, split_by, downsample, files)
    path = directory / f"{dataset}-{key[:32]}.npz"
    hit = load(path)
    if hit is not None:
        return hit
    arrays = build()
    save(path, arrays)
    return arrays
