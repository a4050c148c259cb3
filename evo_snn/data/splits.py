"""FrameSet / Splits, the seeded stratified validation split, and ``load_splits``."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..config import ConfigError, DataConfig
from . import cache, dvs_gesture, nmnist, synthetic
from .errors import DatasetFormatError
from .events import SPLIT_MODES, check_downsample

DATASETS = ("synthetic", "nmnist", "dvs_gesture")
_REAL = {"nmnist": nmnist, "dvs_gesture": dvs_gesture}


@dataclass
class FrameSet:
    """Samples as frames.

    frames: ``[N, T, C, H, W]`` float32 event counts (C = 2 polarities: 0 OFF, 1 ON).
    labels: ``[N]`` int64 class indices (0-based).
    """

    frames: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        if self.frames.dim() != 5:
            raise ValueError(f"FrameSet.frames must be [N, T, C, H, W], got shape {tuple(self.frames.shape)}")
        if self.labels.shape != (self.frames.shape[0],):
            raise ValueError(
                f"FrameSet.labels must be [N] with N={self.frames.shape[0]}, got shape {tuple(self.labels.shape)}"
            )

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def class_counts(self, num_classes: int | None = None) -> dict[int, int]:
        """``{class: samples}`` for the classes present, or for every class ``0..num_classes-1`` if given."""
        n = max(num_classes or 0, int(self.labels.max()) + 1 if len(self) else 0)
        counts = torch.bincount(self.labels, minlength=n).tolist() if n else []
        return {c: int(k) for c, k in enumerate(counts) if k or num_classes is not None}

    def events_per_sample(self) -> torch.Tensor:
        """``[N]`` int64: total event count of each sample (sum over T, C, H, W)."""
        if not len(self):
            return torch.zeros(0, dtype=torch.int64)
        return self.frames.sum(dim=(1, 2, 3, 4), dtype=torch.float64).round().to(torch.int64)

    def to_seq(self, x: torch.Tensor, *, train: bool = False, generator: torch.Generator | None = None) -> torch.Tensor:
        """A batch of this set's samples in the spikingjelly layout.

        x: ``[N, T, C, H, W]`` (a batch of ``frames``) -> ``x_seq: [T, N, C, H, W]`` float32.
        train: True for training batches (where augmentation, if any, applies);
        generator: the random stream of that augmentation.
        """
        return x.transpose(0, 1).float()

    def subset(self, index: torch.Tensor | np.ndarray) -> "FrameSet":
        """The samples at ``index`` (an int index array), as a new FrameSet."""
        index = torch.as_tensor(np.asarray(index), dtype=torch.int64)
        return FrameSet(self.frames[index], self.labels[index])


@dataclass
class Splits:
    """A data set ready for training: train / val (held out from train) / test.

    frame_shape: ``(T, C, H, W)`` of one sample; num_classes: output classes of a model.
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


def _frame_set(frames: np.ndarray, labels: np.ndarray) -> FrameSet:
    return FrameSet(torch.from_numpy(np.ascontiguousarray(frames)).to(torch.float32), torch.from_numpy(labels).to(torch.int64))


def _check_cfg(cfg: DataConfig) -> None:
    if cfg.frames < 1:
        raise ConfigError(f"data.frames must be >= 1, got {cfg.frames}")
    if cfg.split_by not in SPLIT_MODES:
        raise ConfigError(f"data.split_by must be one of {list(SPLIT_MODES)}, got {cfg.split_by!r}")
    if not 0.0 < cfg.val_fraction < 1.0:
        raise ConfigError(f"data.val_fraction must be in (0, 1), got {cfg.val_fraction}")


def _load_real(dataset: str, data_root: str | Path | None, cfg: DataConfig, progress: bool) -> dict[str, np.ndarray]:
    reader = _REAL[dataset]
    if data_root is None:
        raise DatasetFormatError(f"{dataset} needs its data files: pass --data-root PATH")
    root = reader.resolve_root(data_root)

    def build() -> dict[str, np.ndarray]:
        arrays = {}
        for split in ("train", "test"):
            frames, labels = reader.read_split(
                root, split, frames=cfg.frames, split_by=cfg.split_by, downsample=cfg.downsample, progress=progress
            )
            arrays[f"{split}_frames"], arrays[f"{split}_labels"] = frames, labels
        return arrays

    return cache.cached(
        dataset,
        root,
        frames=cfg.frames,
        split_by=cfg.split_by,
        downsample=cfg.downsample,
        cache_dir=cfg.cache_dir,
        files=reader.source_files(root),
        build=build,
    )


def load_splits(
    dataset: str, data_root: str | Path | None, cfg: DataConfig, seed: int, progress: bool = False
) -> Splits:
    """Load ``dataset`` as train / val / test frames.

    dataset: one of DATASETS. data_root: folder of the real data (required for
    nmnist and dvs_gesture; ignored for synthetic). cfg: frames T, split_by,
    downsample, val_fraction, cache_dir, synthetic_*. seed: drives the validation
    split (and the synthetic samples). progress: tqdm bar on stderr while parsing.

    Returns Splits whose FrameSets hold ``[N, T, 2, H/downsample, W/downsample]``
    float32 counts: train minus a stratified ``val_fraction`` hold-out, val, and
    the data set's own test split (untouched). Real data are cached on disk
    (see :mod:`evo_snn.data.cache`).
    raises DatasetFormatError (missing/bad data root or file), ConfigError
    (unknown dataset, bad cfg value, downsample not dividing the sensor size).
    """
    if dataset not in DATASETS:
        raise ConfigError(f"unknown dataset {dataset!r}; known: {list(DATASETS)}")
    _check_cfg(cfg)
    if dataset == "synthetic":
        size = cfg.synthetic_size
        height = width = size
        num_classes = cfg.synthetic_classes
    else:
        height, width, num_classes = _REAL[dataset].HEIGHT, _REAL[dataset].WIDTH, _REAL[dataset].NUM_CLASSES
    try:
        check_downsample(height, width, cfg.downsample, dataset)
    except ValueError as e:
        raise ConfigError(str(e)) from None

    if dataset == "synthetic":
        common = dict(
            seed=seed, num_classes=num_classes, size=size, frames=cfg.frames, split_by=cfg.split_by,
            downsample=cfg.downsample,
        )
        try:
            train_frames, train_labels = synthetic.make_split("train", per_class=cfg.synthetic_train_per_class, **common)
            test_frames, test_labels = synthetic.make_split("test", per_class=cfg.synthetic_test_per_class, **common)
        except ValueError as e:
            raise ConfigError(str(e)) from None
    else:
        arrays = _load_real(dataset, data_root, cfg, progress)
        train_frames, train_labels = arrays["train_frames"], arrays["train_labels"]
        test_frames, test_labels = arrays["test_frames"], arrays["test_labels"]

    train_idx, val_idx = stratified_split(train_labels, cfg.val_fraction, seed)
    if val_idx.size == 0 and train_labels.size >= 2:
        train_idx, val_idx = _unstratified_split(train_labels.size, cfg.val_fraction, seed)
        warnings.warn(
            f"{dataset}: every class has a single training sample, so a stratified validation split is empty; "
            f"holding out {val_idx.size} random sample(s) instead (their classes lose their only training sample). "
            "Fitness on such a tiny data set checks the pipeline, not generalisation.",
            stacklevel=2,
        )
    frame_shape = (cfg.frames, 2, height // cfg.downsample, width // cfg.downsample)
    return Splits(
        name=dataset,
        train=_frame_set(train_frames[train_idx], train_labels[train_idx]),
        val=_frame_set(train_frames[val_idx], train_labels[val_idx]),
        test=_frame_set(test_frames, test_labels),
        num_classes=num_classes,
        frame_shape=frame_shape,
    )
