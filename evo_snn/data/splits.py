"""FrameSet / Splits, the seeded stratified validation split, and ``load_splits``."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import ConfigError, DataConfig
from . import cache, cifar, dvs_gesture, nmnist, synthetic, tiny_imagenet
from .augment import SeqTransform, channel_mean_std
from .errors import DatasetFormatError
from .events import SPLIT_MODES, check_downsample

DATASETS = ("synthetic", "nmnist", "dvs_gesture", "cifar10", "cifar100", "tiny_imagenet")
EVENT_DATASETS = ("synthetic", "nmnist", "dvs_gesture")
IMAGE_DATASETS = ("cifar10", "cifar100", "tiny_imagenet")
_REAL = {"nmnist": nmnist, "dvs_gesture": dvs_gesture}
# standard augmentation of the static-image papers: random crop with this zero padding, horizontal flip
_IMAGE_PADDING = {"cifar10": 4, "cifar100": 4, "tiny_imagenet": 8}


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
            state.update(frames=self.frames)
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


@dataclass
class Splits:
    """A data set ready for training: train / val (held out from train) / test.

    frame_shape: ``(T, C, H, W)`` of one sample as the model sees it (``x_seq: [T, N, C, H, W]``;
    for static images T is ``data.frames``, the number of repeats);
    num_classes: output classes of a model.
    """

    name: str
    train: FrameSet
    val: FrameSet
    test: FrameSet
    num_classes: int
    frame_shape: tuple[int, int, int, int]


def stratified_split(labels: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded stratified hold-out: ``(train_idx, val_idx)``, both sorted int64, disjoint, covering all.

    The validation size is ``round(N * val_fraction)``, shared among classes in
    proportion to their sizes (largest remainder; ties to the lower class). A class
    with >= 2 samples keeps at least one in train; a class of 1 sample stays in
    train. Which samples go to val is a seeded permutation within each class.
    raises ValueError unless 0 < val_fraction < 1.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    labels = np.asarray(labels, dtype=np.int64)
    classes, sizes = np.unique(labels, return_counts=True)
    quota = sizes * val_fraction
    caps = np.maximum(sizes - 1, 0)
    n_val = np.minimum(np.floor(quota).astype(np.int64), caps)
    remaining = int(round(labels.size * val_fraction)) - int(n_val.sum())
    for k in sorted(range(classes.size), key=lambda k: (-(quota[k] - math.floor(quota[k])), k)):
        if remaining <= 0:
            break
        if n_val[k] < caps[k]:
            n_val[k] += 1
            remaining -= 1
    rng = np.random.default_rng([synthetic.seed_entropy(seed), 0x5EED])
    val_parts = []
    for c, k in zip(classes, n_val):
        members = np.flatnonzero(labels == c)
        val_parts.append(rng.permutation(members)[:k])
    val_idx = np.sort(np.concatenate(val_parts)) if val_parts else np.zeros(0, np.int64)
    mask = np.ones(labels.size, dtype=bool)
    mask[val_idx] = False
    return np.flatnonzero(mask).astype(np.int64), val_idx.astype(np.int64)


def _unstratified_split(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded random hold-out of max(1, round(n * val_fraction)) of n samples, for when
    stratification leaves nothing to validate on. Returns (train_idx, val_idx), sorted."""
    k = min(max(1, int(round(n * val_fraction))), n - 1)
    perm = np.random.default_rng([synthetic.seed_entropy(seed), 0x5EED, 1]).permutation(n)
    return np.sort(perm[k:]).astype(np.int64), np.sort(perm[:k]).astype(np.int64)


def _check_cfg(dataset: str, cfg: DataConfig) -> None:
    if cfg.frames < 1:
        raise ConfigError(f"data.frames must be >= 1, got {cfg.frames}")
    if cfg.split_by not in SPLIT_MODES:
        raise ConfigError(f"data.split_by must be one of {list(SPLIT_MODES)}, got {cfg.split_by!r}")
    if not 0.0 < cfg.val_fraction < 1.0:
        raise ConfigError(f"data.val_fraction must be in (0, 1), got {cfg.val_fraction}")
    if cfg.aug_translate_px is not None and (isinstance(cfg.aug_translate_px, bool) or not isinstance(cfg.aug_translate_px, int) or cfg.aug_translate_px < 0):
        raise ConfigError(f"data.aug_translate_px must be an integer >= 0 or null, got {cfg.aug_translate_px!r}")
    if cfg.aug_hflip is not None and not isinstance(cfg.aug_hflip, bool):
        raise ConfigError(f"data.aug_hflip must be true, false or null, got {cfg.aug_hflip!r}")
    if not 0.0 <= cfg.aug_event_drop < 1.0:
        raise ConfigError(f"data.aug_event_drop must be in [0, 1), got {cfg.aug_event_drop}")
    if dataset in IMAGE_DATASETS and cfg.downsample != 1:
        raise ConfigError(f"data.downsample={cfg.downsample}: {dataset} is read at its own resolution; use 1")


def _transform(dataset: str, cfg: DataConfig, extra: dict[str, Any]) -> SeqTransform:
    """The SeqTransform of ``dataset``: ``data.aug_*`` with null = the data set's default."""
    image = dataset in IMAGE_DATASETS
    translate = cfg.aug_translate_px if cfg.aug_translate_px is not None else _IMAGE_PADDING.get(dataset, 0)
    hflip = cfg.aug_hflip if cfg.aug_hflip is not None else image
    if not image:
        return SeqTransform("events", translate_px=translate, hflip=hflip, event_drop=cfg.aug_event_drop)
    return SeqTransform(
        "direct", steps=cfg.frames, translate_px=translate, hflip=hflip,
        mean=tuple(extra["mean"]), std=tuple(extra["std"]),
    )


def _require_root(dataset: str, data_root: str | Path | None) -> None:
    if data_root is None:
        raise DatasetFormatError(f"{dataset} needs its data files: pass --data-root PATH")


def _image_arrays(dataset: str, root: Path, progress: bool) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    arrays: dict[str, np.ndarray] = {}
    for split in ("train", "test"):
        if dataset == "tiny_imagenet":
            images, labels = tiny_imagenet.read_split(root, split, progress=progress)
        else:
            images, labels = cifar.read_split(root, dataset, split)
        arrays[f"{split}_frames"], arrays[f"{split}_labels"] = images, labels
    mean, std = channel_mean_std(arrays["train_frames"])
    if dataset == "tiny_imagenet":
        num_classes = len(tiny_imagenet.read_wnids(root / "wnids.txt"))
    else:
        num_classes = cifar.VARIANTS[dataset].num_classes
    return arrays, {"mean": mean, "std": std, "num_classes": num_classes}


def _load_files(
    dataset: str, data_root: str | Path | None, cfg: DataConfig, progress: bool
) -> tuple[dict[str, np.ndarray], dict[str, Any], Path | None]:
    """``(arrays, extra, cache folder or None)`` of a data set read from files (through the cache)."""
    _require_root(dataset, data_root)
    if dataset in _REAL:
        reader = _REAL[dataset]
        root = reader.resolve_root(data_root)
        settings = {"frames": cfg.frames, "split_by": cfg.split_by, "downsample": cfg.downsample}

        def build() -> tuple[dict[str, np.ndarray], dict[str, Any]]:
            arrays = {}
            for split in ("train", "test"):
                frames, labels = reader.read_split(
                    root, split, frames=cfg.frames, split_by=cfg.split_by, downsample=cfg.downsample, progress=progress
                )
                arrays[f"{split}_frames"], arrays[f"{split}_labels"] = frames, labels
            return arrays, {}

        files = reader.source_files(root)
    else:
        if dataset == "tiny_imagenet":
            root = tiny_imagenet.resolve_root(data_root)
            files = tiny_imagenet.source_files(root)
        else:
            root = cifar.resolve_root(data_root, dataset)
            files = cifar.source_files(root, dataset)
        settings = {}  # images are stored as decoded; T only repeats them in to_seq

        def build() -> tuple[dict[str, np.ndarray], dict[str, Any]]:
            return _image_arrays(dataset, root, progress)

    try:
        return cache.cached(dataset, root, settings=settings, cache_dir=cfg.cache_dir, files=files, build=build)
    except OSError as e:  # a source file vanished or became unreadable while being checksummed
        raise DatasetFormatError(f"{getattr(e, 'filename', None) or root}: cannot read: {e.strerror or e}") from e


def _base_sets(
    arrays: dict[str, np.ndarray], folder: Path | None, transform: SeqTransform
) -> tuple[FrameSet, FrameSet]:
    """Whole train and test FrameSets over ``arrays`` (memory-mapped from ``folder`` when given)."""
    out = []
    for split in ("train", "test"):
        data = arrays[f"{split}_frames"]
        labels = torch.from_numpy(np.array(arrays[f"{split}_labels"], dtype=np.int64))
        source = None
        if folder is not None:
            source = _Source(str(folder / f"{split}_frames.npy"), tuple(data.shape), data.dtype.str)
        if data.ndim == 4:  # images [N, C, H, W] -> [N, 1, C, H, W]
            data = data.reshape(data.shape[0], 1, *data.shape[1:])
        if source is None:
            fs = FrameSet(_as_tensor(np.ascontiguousarray(data)), labels, transform)
        else:
            fs = FrameSet._view(data, None, labels, transform, source)
        out.append(fs)
    return out[0], out[1]


def load_splits(
    dataset: str, data_root: str | Path | None, cfg: DataConfig, seed: int, progress: bool = False
) -> Splits:
    """Load ``dataset`` as train / val / test FrameSets.

    dataset: one of DATASETS. data_root: folder of the real data (required for
    all but synthetic). cfg: frames T, split_by, downsample, val_fraction,
    cache_dir, aug_*, synthetic_*. seed: drives the validation split (and the
    synthetic samples). progress: tqdm bar on stderr while parsing.

    Event data (synthetic, nmnist, dvs_gesture): FrameSets of
    ``[N, T, 2, H/downsample, W/downsample]`` counts. Static images (cifar10,
    cifar100, tiny_imagenet): uint8 ``[N, 1, 3, H, W]`` images, direct-encoded
    over T = ``cfg.frames`` steps by ``to_seq``. Train is the data set's training
    split minus a stratified ``val_fraction`` hold-out, val that hold-out, test the
    data set's own test split (untouched; Tiny-ImageNet's val/ folder). Data
    read from files are cached on disk and memory-mapped (see :mod:`evo_snn.data.cache`).
    raises DatasetFormatError (missing/bad data root or file), ConfigError
    (unknown dataset, bad cfg value, downsample not dividing the sensor size).
    """
    if dataset not in DATASETS:
        raise ConfigError(f"unknown dataset {dataset!r}; known: {list(DATASETS)}")
    _check_cfg(dataset, cfg)
    if dataset == "synthetic":
        height = width = cfg.synthetic_size
    elif dataset in _REAL:
        height, width = _REAL[dataset].HEIGHT, _REAL[dataset].WIDTH
    if dataset in EVENT_DATASETS:
        try:
            check_downsample(height, width, cfg.downsample, dataset)
        except ValueError as e:
            raise ConfigError(str(e)) from None

    folder: Path | None = None
    extra: dict[str, Any] = {}
    if dataset == "synthetic":
        common = dict(
            seed=seed, num_classes=cfg.synthetic_classes, size=cfg.synthetic_size, frames=cfg.frames,
            split_by=cfg.split_by, downsample=cfg.downsample,
        )
        try:
            train_frames, train_labels = synthetic.make_split("train", per_class=cfg.synthetic_train_per_class, **common)
            test_frames, test_labels = synthetic.make_split("test", per_class=cfg.synthetic_test_per_class, **common)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        arrays = {"train_frames": train_frames, "train_labels": train_labels,
                  "test_frames": test_frames, "test_labels": test_labels}
        num_classes = cfg.synthetic_classes
    else:
        arrays, extra, folder = _load_files(dataset, data_root, cfg, progress)
        num_classes = int(extra["num_classes"]) if dataset in IMAGE_DATASETS else _REAL[dataset].NUM_CLASSES

    train_all, test = _base_sets(arrays, folder, _transform(dataset, cfg, extra))
    train_labels = train_all.labels.numpy()
    train_idx, val_idx = stratified_split(train_labels, cfg.val_fraction, seed)
    if val_idx.size == 0 and train_labels.size >= 2:
        train_idx, val_idx = _unstratified_split(train_labels.size, cfg.val_fraction, seed)
        warnings.warn(
            f"{dataset}: every class has a single training sample, so a stratified validation split is empty; "
            f"holding out {val_idx.size} random sample(s) instead (their classes lose their only training sample). "
            "Fitness on such a tiny data set checks the pipeline, not generalisation.",
            stacklevel=2,
        )
    _, _, c, h, w = train_all._data.shape
    return Splits(
        name=dataset,
        train=train_all.subset(train_idx),
        val=train_all.subset(val_idx),
        test=test,
        num_classes=num_classes,
        frame_shape=(cfg.frames, int(c), int(h), int(w)),
    )
