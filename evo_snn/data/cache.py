"""On-disk cache of converted frames (or decoded images), memory-mapped when read.

Directory: ``cfg.cache_dir``, else ``$XDG_CACHE_HOME/evo_snn``, else
``~/.cache/evo_snn``. One folder per key,
``<cache_dir>/<dataset>-<sha256 prefix>/``, holding one uncompressed ``.npy`` per
array (``train_frames.npy``, ``train_labels.npy``, ``test_frames.npy``,
``test_labels.npy``: counts uint8/int16/int32 ``[N, T, C, H, W]`` or images uint8
``[N, C, H, W]``; labels int64 ``[N]``) and ``meta.json`` (format version, key,
shape and dtype of every array, data set statistics). The arrays are opened
with ``np.load(path, mmap_mode=...)``, so several processes (Ray workers) on one
machine share one copy in the page cache.

The key is a sha256 of the data set name, :data:`FORMAT_VERSION`, every setting
that changes the arrays (``settings``: T, split_by, downsample for event data;
layout, image size and resize filter for image folders)
and the path (relative to the data root) and **content checksum** (blake2b-128
of the bytes) of every source file. Changing a source file or a setting
therefore selects another folder; a stale one is never served.

Checksums are remembered in ``<cache_dir>/<dataset>-checksums.json``, keyed by
(path, size, mtime_ns, ctime_ns, inode). An entry is trusted only when the file
had not been modified for :data:`RACY_S` seconds before it was hashed (as git
treats "racily clean" files), so a rewrite within one timestamp tick is hashed
again. Any write of a file changes its ctime, which no tool can set back.

A folder is written as ``<name>.tmp-<pid>-<random>`` and renamed into place
(``os.rename`` of a folder is atomic), so a reader sees all arrays or none. A cache
that cannot be written warns and the data stay in memory; an unreadable or
inconsistent folder warns and is rebuilt.

Files in the cache are never modified in place (a rebuilt folder replaces the
old one, whose files are unlinked), so a process that still maps an old file
keeps reading valid data. Do not truncate or overwrite a cache file by hand
while a search runs: a memory-mapped reader of a truncated file gets SIGBUS.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np

from evo_snn.atomic import atomic_write_bytes

FORMAT_VERSION = 2
ARRAYS = ("train_frames", "train_labels", "test_frames", "test_labels")
META = "meta.json"
RACY_S = 3.0
_MMAP_MODE = "c"  # copy-on-write: shared page cache, writable (no torch warning), writes stay private


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/evo_snn`` when XDG_CACHE_HOME is set (and non-empty), else ``~/.cache/evo_snn``."""
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "evo_snn"


# ------------------------------------------------------------------ checksums
def file_digest(path: Path) -> str:
    """blake2b-128 hex digest of the bytes of ``path`` (read in chunks)."""
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _stat_key(st: os.stat_result) -> list[int]:
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev]


def file_digests(files: list[Path], sidecar: Path | None) -> list[str]:
    """Content digests of ``files`` (see module doc); reuses and updates ``sidecar`` when given.

    raises OSError when a file cannot be read (the caller's readers have checked they exist).
    """
    memo: dict[str, Any] = {}
    if sidecar is not None:
        try:
            memo = json.loads(sidecar.read_text())
            if not isinstance(memo, dict):
                memo = {}
        except (OSError, ValueError):
            memo = {}
    out, changed = [], False
    for f, name in zip(files, resolved_names(files)):
        st = os.stat(f)
        entry = memo.get(name)
        if (
            isinstance(entry, dict)
            and entry.get("stat") == _stat_key(st)
            and max(st.st_mtime_ns, st.st_ctime_ns) < entry.get("hashed_at_ns", 0) - RACY_S * 1e9
            and isinstance(entry.get("digest"), str)
        ):
            out.append(entry["digest"])
            continue
        hashed_at = time.time_ns()
        digest = file_digest(Path(f))
        st_after = os.stat(f)
        if _stat_key(st_after) == _stat_key(st):  # unchanged while hashing: remember it
            memo[name] = {"stat": _stat_key(st), "hashed_at_ns": hashed_at, "digest": digest}
            changed = True
        out.append(digest)
    if sidecar is not None and changed:
        _atomic_write_text(sidecar, json.dumps(memo), quiet=True)
    return out


def resolved_names(files: list[Path]) -> list[str]:
    """``str(Path(f).resolve())`` of every file, resolving each distinct folder once (fast for 10^5 files)."""
    folders: dict[str, str] = {}
    out = []
    for f in files:
        folder, name = os.path.split(os.path.abspath(os.fspath(f)))
        real = folders.get(folder)
        if real is None:
            real = folders[folder] = os.path.realpath(folder)
        full = os.path.join(real, name)
        out.append(os.path.realpath(full) if os.path.islink(full) else full)
    return out


def cache_key(dataset: str, root: Path, settings: dict[str, Any], files: list[Path], digests: list[str]) -> str:
    """sha256 hex digest of the data set, FORMAT_VERSION, ``settings`` and every file's relative path + checksum."""
    base = str(Path(root).resolve())
    prefix = base.rstrip(os.sep) + os.sep
    entries = []
    for full, d in zip(resolved_names(files), digests):
        rel = Path(full[len(prefix):]).as_posix() if full.startswith(prefix) else full
        entries.append([rel, d])
    payload = {"dataset": dataset, "format_version": FORMAT_VERSION, "settings": settings, "files": entries}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


# ------------------------------------------------------------------ folders
def _atomic_write_text(path: Path, text: str, quiet: bool = False) -> bool:
    """:func:`evo_snn.atomic.atomic_write_bytes` of ``text``; on OSError warns (unless quiet) and returns False."""
    try:
        atomic_write_bytes(path, text.encode())
        return True
    except OSError as e:
        if not quiet:
            warnings.warn(f"cannot write {path} ({e.strerror or e})", stacklevel=3)
        try:
            path.with_name(f"{path.name}.tmp-{os.getpid()}").unlink(missing_ok=True)
        except OSError:
            pass
        return False


def open_array(path: Path) -> np.ndarray:
    """A cached ``.npy`` as a copy-on-write memory map (no pickle). raises OSError / ValueError."""
    return np.load(path, mmap_mode=_MMAP_MODE, allow_pickle=False)


def load(folder: Path, key: str) -> tuple[dict[str, np.ndarray], dict[str, Any]] | None:
    """``(arrays, meta)`` of a cache folder, arrays memory-mapped; None when absent.

    A folder whose meta, key, shapes or dtypes do not match warns and returns None.
    """
    if not (folder / META).is_file():
        return None
    try:
        meta = json.loads((folder / META).read_text())
        if meta.get("format_version") != FORMAT_VERSION or meta.get("key") != key:
            raise ValueError("meta.json does not match this key")
        arrays = {}
        for name in ARRAYS:
            a = open_array(folder / f"{name}.npy")
            shape, dtype = meta["arrays"][name]
            if list(a.shape) != list(shape) or a.dtype.str != dtype:
                raise ValueError(f"{name}.npy is {a.dtype.str} {list(a.shape)}, meta.json says {dtype} {shape}")
            arrays[name] = a
        for split in ("train", "test"):
            if arrays[f"{split}_frames"].shape[0] != arrays[f"{split}_labels"].shape[0]:
                raise ValueError(f"{split} frames and labels differ in length")
    except (OSError, KeyError, TypeError, ValueError, EOFError) as e:
        warnings.warn(f"frame cache {folder} is unreadable ({e}); parsing the data again", stacklevel=3)
        return None
    return arrays, meta


def save(folder: Path, key: str, arrays: dict[str, np.ndarray], extra: dict[str, Any]) -> bool:
    """Write ``arrays`` (+ ``extra`` in meta.json) to ``folder`` atomically; warns and returns False on failure."""
    tmp = folder.with_name(f"{folder.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        tmp.mkdir(parents=True)
        for name in ARRAYS:
            np.save(tmp / f"{name}.npy", np.ascontiguousarray(arrays[name]), allow_pickle=False)
        meta = {
            "format_version": FORMAT_VERSION,
            "key": key,
            "arrays": {n: [list(arrays[n].shape), np.asarray(arrays[n]).dtype.str] for n in ARRAYS},
            **extra,
        }
        (tmp / META).write_text(json.dumps(meta, indent=1))
        if folder.exists():  # an unreadable folder of the same key: move it aside first
            trash = folder.with_name(f"{folder.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}")
            os.rename(folder, trash)
            shutil.rmtree(trash, ignore_errors=True)
        try:
            os.rename(tmp, folder)
        except OSError:
            if not (folder / META).is_file():  # not a concurrent writer of the same key
                raise
            shutil.rmtree(tmp, ignore_errors=True)
        return True
    except OSError as e:
        warnings.warn(
            f"cannot write the frame cache {folder} ({e.strerror or e}); continuing without caching "
            "(set data.cache_dir to a writable folder)",
            stacklevel=3,
        )
        shutil.rmtree(tmp, ignore_errors=True)
        return False


def cached(
    dataset: str,
    root: Path,
    *,
    settings: dict[str, Any],
    cache_dir: str | Path | None,
    files: list[Path],
    build: Callable[[], tuple[dict[str, np.ndarray], dict[str, Any]]],
) -> tuple[dict[str, np.ndarray], dict[str, Any], Path | None]:
    """``(arrays, extra, folder)``: from the cache when the key matches, else ``build()`` (then stored).

    build() returns the arrays of :data:`ARRAYS` and a JSON-able ``extra`` dict
    (e.g. per-channel image statistics) stored in meta.json. ``folder`` is the
    cache folder whose ``<name>.npy`` files back the returned memory-mapped
    arrays, or None when the cache could not be written (arrays in memory).
    """
    directory = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    sidecar = directory / f"{dataset}-checksums.json"
    digests = file_digests(files, sidecar if directory.is_dir() or _can_create(directory) else None)
    key = cache_key(dataset, root, settings, files, digests)
    folder = directory / f"{dataset}-{key[:32]}"
    hit = load(folder, key)
    if hit is not None:
        arrays, meta = hit
        return arrays, meta.get("extra", {}), folder
    arrays, extra = build()
    if save(folder, key, arrays, {"dataset": dataset, "settings": settings, "extra": extra}):
        reread = load(folder, key)
        if reread is not None:
            return reread[0], extra, folder
    return arrays, extra, None


def _can_create(directory: Path) -> bool:
    try:
        directory.mkdir(parents=True, exist_ok=True)
        return True
    except OSError:
        return False
