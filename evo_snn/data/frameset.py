"""``FrameSet``: the samples of one split, in memory or memory-mapped from the frame cache."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from evo_snn.data import cache
from evo_snn.data.augment import SeqTransform
from evo_snn.data.errors import DatasetFormatError


@dataclass(frozen=True)
class _Source:
    """The cache file behind a FrameSet: ``path`` of a ``.npy`` holding all samples of a split."""

    path: str
    shape: tuple[int, ...]  # as stored: [M, T, C, H, W] (events) or [M, C, H, W] (images)
    dtype: str

    def open(self) -> np.ndarray:
        """The array as a copy-on-write memory map, viewed as ``[M, T, C, H, W]`` (T = 1 for images)."""
        try:
            arr = cache.open_array(Path(self.path))
        except (OSError, ValueError) as e:
            raise DatasetFormatError(
                f"{self.path}: cannot open the frame cache file behind this FrameSet ({e}); "
                "it was removed or changed after load_splits: load the data again"
            ) from None
        if tuple(arr.shape) != tuple(self.shape) or arr.dtype.str != self.dtype:
            raise DatasetFormatError(
                f"{self.path}: byte 0: expected a {self.dtype} array {list(self.shape)}, got {arr.dtype.str} "
                f"{list(arr.shape)}; the cache file changed after load_splits: load the data again"
            )
        return arr.reshape(arr.shape[0], 1, *arr.shape[1:]) if arr.ndim == 4 else arr


class FrameSet:
    """Samples of one split, stored sample-major.

    frames: ``[N, T, C, H, W]`` tensor in the storage dtype: event counts (uint8,
      int16 or int32 as :func:`load_splits` makes them, the smallest that holds the
      largest count; float32 if you pass float32; C = 2 polarities, 0 OFF, 1 ON), or,
      for static images (``encoding == 'direct'``), uint8 pixels ``[N, 1, C, H, W]``
      (one stored frame; :meth:`to_seq` repeats it over T). Use :meth:`to_seq` to
      get float32 ``x_seq: [T, N, C, H, W]``.
    labels: ``[N]`` int64 class indices (0-based).
    transform: the :class:`~evo_snn.data.augment.SeqTransform` of :meth:`to_seq`
      (default: event counts, no augmentation).

    A FrameSet made by :func:`load_splits` from a cache file is a view: the file is
    memory-mapped (copy-on-write, so ``frames`` is writable, and writes stay private
    to the process) and a :meth:`subset` only keeps an index. Such a FrameSet
    pickles as (file path, index, labels, transform), so sending it to a Ray actor
    copies no frames: the actor re-opens the memory map, and all processes share
    one copy in the page cache. A FrameSet held in memory (synthetic data, or an
    unwritable cache) pickles with its frames. For an indexed subset, ``frames`` is materialized
    (copied into memory) on first access; ``fs[i]`` and
    ``DataLoader(fs, ...)`` read single samples without that copy.
    """

    def __init__(
        self, frames: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray, transform: SeqTransform | None = None
    ) -> None:
        labels = torch.as_tensor(np.asarray(labels) if not isinstance(labels, torch.Tensor) else labels)
        if frames.ndim != 5:
            raise ValueError(f"FrameSet.frames must be [N, T, C, H, W], got shape {tuple(frames.shape)}")
        if tuple(labels.shape) != (frames.shape[0],):
            raise ValueError(
                f"FrameSet.labels must be [N] with N={frames.shape[0]}, got shape {tuple(labels.shape)}"
            )
        self._data: torch.Tensor | np.ndarray = frames
        self._index: np.ndarray | None = None
        self._source: _Source | None = None
        self._frames: torch.Tensor | None = frames if isinstance(frames, torch.Tensor) else None
        self.labels: torch.Tensor = labels.to(torch.int64)
        self.transform: SeqTransform = transform or SeqTransform()

    @classmethod
    def from_array(
        cls, data: np.ndarray, labels: np.ndarray, transform: SeqTransform, path: str | Path | None = None
    ) -> "FrameSet":
        """A whole split over a numpy array: ``data`` ``[N, T, C, H, W]`` counts or ``[N, C, H, W]``
        images (viewed as ``[N, 1, C, H, W]``), ``labels`` ``[N]``.

        path: the cache ``.npy`` file that ``data`` is memory-mapped from (the set then
        pickles as that path, see the class doc); None keeps ``data`` in memory.
        """
        labels_t = torch.from_numpy(np.array(labels, dtype=np.int64))
        source = None if path is None else _Source(str(path), tuple(data.shape), data.dtype.str)
        if data.ndim == 4:  # images [N, C, H, W] -> [N, 1, C, H, W]
            data = data.reshape(data.shape[0], 1, *data.shape[1:])
        if source is None:
            return cls(_as_tensor(np.ascontiguousarray(data)), labels_t, transform)
        return cls._view(data, None, labels_t, transform, source)

    @classmethod
    def _view(cls, data, index, labels: torch.Tensor, transform: SeqTransform, source: _Source | None) -> "FrameSet":
        fs = cls.__new__(cls)
        fs._data, fs._index, fs._source, fs._frames = data, index, source, None
        fs.labels, fs.transform = labels, transform
        return fs

    # ------------------------------------------------------------------ access
    @property
    def frames(self) -> torch.Tensor:
        """``[N, T, C, H, W]`` in the storage dtype (see the class doc)."""
        if self._frames is None:
            if self._index is None:
                self._frames = _as_tensor(self._data)
            else:
                self._frames = self._take(self._index)
        return self._frames

    @property
    def shape(self) -> tuple[int, int, int, int, int]:
        """``(N, T, C, H, W)`` of ``frames``, without materializing them."""
        return (len(self), *(int(d) for d in self._data.shape[1:]))  # type: ignore[return-value]

    @property
    def encoding(self) -> str:
        """'events' (count frames) or 'direct' (static images repeated over T by :meth:`to_seq`)."""
        return self.transform.encoding

    @property
    def memory_mapped(self) -> bool:
        """True when the samples are read from a cache file (and pickling copies no frames)."""
        return self._source is not None

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, i) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x, y)``: sample ``i`` (``x: [T, C, H, W]`` storage dtype, ``y`` int64 scalar), or a batch for an index array.

        So ``DataLoader(fs, batch_size=...)`` yields the same batches as
        ``DataLoader(TensorDataset(fs.frames, fs.labels), ...)`` without materializing ``frames``.
        """
        if self._frames is not None:
            return self._frames[i], self.labels[i]
        if isinstance(i, torch.Tensor):
            i = i.item() if i.dim() == 0 else i.numpy()
        if isinstance(i, (int, np.integer)):  # one sample: the DataLoader's path, kept cheap
            n = len(self)
            if not -n <= i < n:
                raise IndexError(f"index {i} is out of range for a FrameSet of {n} samples")
            i = int(i) % n
            base = int(self._index[i]) if self._index is not None else i
            return self._take(base), self.labels[i]
        pos = np.arange(len(self))[i]  # validates i like a tensor index would
        base = self._index[pos] if self._index is not None else pos
        return self._take(base), self.labels[torch.from_numpy(np.asarray(pos, dtype=np.int64))]

    def _take(self, base) -> torch.Tensor:
        if isinstance(self._data, torch.Tensor):
            return self._data[torch.as_tensor(base)]
        return _as_tensor(self._data[base])

    def _chunks(self, size: int = 1024):
        """Yield ``[<=size, T, C, H, W]`` tensors covering the set in order (no full materialization)."""
        for start in range(0, len(self), size):
            yield self[np.arange(start, min(start + size, len(self)))][0]

    # ------------------------------------------------------------------ summaries
    def class_counts(self, num_classes: int | None = None) -> dict[int, int]:
        """``{class: samples}`` for the classes present, or for every class ``0..num_classes-1`` if given."""
        n = max(num_classes or 0, int(self.labels.max()) + 1 if len(self) else 0)
        counts = torch.bincount(self.labels, minlength=n).tolist() if n else []
        return {c: int(k) for c, k in enumerate(counts) if k or num_classes is not None}

    def events_per_sample(self) -> torch.Tensor:
        """``[N]`` int64: total event count of each sample (sum over T, C, H, W).

        For static images (``encoding == 'direct'``) there are no events: this is
        the sum of the sample's uint8 pixel values (0-255 per channel), which is what
        ``python -m evo_snn.data describe`` reports for them.
        """
        if not len(self):
            return torch.zeros(0, dtype=torch.int64)
        if self._frames is not None:
            return _sample_sums(self._frames)
        return torch.cat([_sample_sums(x) for x in self._chunks()])

    # ------------------------------------------------------------------ batches
    def to_seq(self, x: torch.Tensor, *, train: bool = False, generator: torch.Generator | None = None) -> torch.Tensor:
        """A batch of this set's samples in the spikingjelly layout.

        x: ``[N, T, C, H, W]`` (a batch of ``frames``, any dtype) -> ``x_seq: [T, N, C, H, W]``
        float32: event counts, or for static images the normalised image repeated
        over T (direct encoding). train: True for training batches, which get the
        configured augmentation (``data.aug_*``; see :mod:`evo_snn.data.augment`;
        no horizontal flip by default for event data: DVS128 Gesture's left- and
        right-hand gestures are different classes); False (evaluation) never
        changes the data at random. generator: the random stream of that augmentation.
        raises ValueError (x of the wrong rank).
        """
        return self.transform(x, train=train, generator=generator)

    def subset(self, index: torch.Tensor | np.ndarray) -> "FrameSet":
        """The samples at ``index`` (an int index array), as a new FrameSet (a view; no frames copied)."""
        index = np.asarray(index.numpy() if isinstance(index, torch.Tensor) else index, dtype=np.int64).reshape(-1)
        pos = np.arange(len(self))[index]
        base = self._index[pos] if self._index is not None else pos
        return FrameSet._view(
            self._data,
            base,
            self.labels[torch.from_numpy(pos)],
            self.transform,
            self._source,
        )

    def to(self, device: torch.device | str, max_bytes: int | None = None) -> "FrameSet":
        """This set with its frames (storage dtype, e.g. uint8) held on ``device``, so that a
        batch is gathered, converted to float, augmented and repeated over T there
        (``to_seq`` runs on the batch's device; the random draws stay on the CPU generator,
        so the batches equal the host's). Labels stay on the CPU. Returns ``self`` for the
        CPU, and when the frames take more than ``max_bytes`` (they then stay on the host
        and each batch is copied). Pickles with its frames (moved back to the host)."""
        device = torch.device(device)
        n, t, c, h, w = self.shape
        nbytes = n * t * c * h * w * self._data.dtype.itemsize
        if device.type == "cpu" or (max_bytes is not None and nbytes > max_bytes):
            return self
        return FrameSet(self.frames.to(device), self.labels, self.transform)

    def in_memory(self) -> "FrameSet":
        """This set with its frames copied into memory, so that it pickles with them
        (for processes that cannot open the cache file, e.g. other nodes of a cluster)."""
        if self._source is None and self._index is None:
            return self
        return FrameSet(self.frames.clone(), self.labels.clone(), self.transform)

    # ------------------------------------------------------------------ pickling
    def __getstate__(self) -> dict[str, Any]:
        state: dict[str, Any] = {"labels": self.labels, "transform": self.transform}
        if self._source is not None:
            state.update(source=self._source, index=self._index)
        else:
            state.update(frames=self.frames.cpu())
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.labels, self.transform = state["labels"], state["transform"]
        self._frames, self._index = None, None
        self._source = state.get("source")
        if self._source is None:
            self._data = self._frames = state["frames"]
            return
        self._data = self._source.open()
        self._index = state["index"]
        if self._index is not None and self._index.size and int(self._index.max()) >= self._data.shape[0]:
            raise DatasetFormatError(f"{self._source.path}: holds {self._data.shape[0]} samples, fewer than this FrameSet needs")

    def __repr__(self) -> str:
        shape = (len(self), *self._data.shape[1:])
        where = f"memory map {self._source.path}" if self._source else "memory"
        return f"FrameSet(N={len(self)}, shape={list(shape)}, encoding={self.encoding!r}, {where})"


def _as_tensor(a: np.ndarray | torch.Tensor) -> torch.Tensor:
    """A tensor over ``a`` without copying when ``a`` is writable (a copy-on-write memmap is)."""
    if isinstance(a, torch.Tensor):
        return a
    if not a.flags.writeable:
        a = np.array(a)
    return torch.from_numpy(a)


def _sample_sums(x: torch.Tensor) -> torch.Tensor:
    if not x.is_floating_point():
        return x.reshape(x.shape[0], -1).sum(dim=1, dtype=torch.int64)
    return x.reshape(x.shape[0], -1).sum(dim=1, dtype=torch.float64).round().to(torch.int64)
