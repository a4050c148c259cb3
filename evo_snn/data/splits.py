"""``load_splits``: spec lookup -> frame cache -> seeded stratified validation split.

``load_splits`` knows no data set by name: every fact about one (encoding, sensor
size, class count, augmentation defaults, how to find and read its files) is in
its :class:`~evo_snn.data.registry.DatasetSpec`.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from evo_snn.config import DataConfig
from evo_snn.data import cache, synthetic
from evo_snn.data.augment import SeqTransform
from evo_snn.data.errors import DatasetFormatError
from evo_snn.data.frameset import FrameSet
from evo_snn.data.registry import DatasetSpec, dataset_names, get_dataset, require_root

DATASETS = dataset_names()
EVENT_DATASETS = tuple(n for n in DATASETS if get_dataset(n).encoding == "events")
IMAGE_DATASETS = tuple(n for n in DATASETS if get_dataset(n).encoding == "direct")


@dataclass
class Splits:
    """A data set ready for training: train / val (held out from train) / test.

    frame_shape: ``(T, C, H, W)`` of one sample as the model sees it (``x_seq: [T, N, C, H, W]``;
    for static images T is ``data.frames``, the number of repeats);
    num_classes: output classes of a model.
    class_names: class names in label order (None when the data set names none);
    layout: the file layout that was read (``python -m evo_snn.data describe`` prints it).
    """

    name: str
    train: FrameSet
    val: FrameSet
    test: FrameSet
    num_classes: int
    frame_shape: tuple[int, int, int, int]
    class_names: tuple[str, ...] | None = None  # in label order; None when the data set names none
    layout: str | None = None  # the file layout read (e.g. 'python_batches' or 'image_folder' for CIFAR)


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


def check_data_config(spec: DatasetSpec, cfg: DataConfig) -> None:
    """The ``data.*`` range checks of a load, then the data set's own (``spec.check_config``). raises ConfigError."""
    cfg.check()
    spec.check_config(cfg)


def _transform(spec: DatasetSpec, cfg: DataConfig, extra: dict[str, Any]) -> SeqTransform:
    """The SeqTransform of the data set: ``data.aug_*`` with null = the spec's default."""
    translate = cfg.aug_translate_px if cfg.aug_translate_px is not None else spec.aug_translate_px
    hflip = cfg.aug_hflip if cfg.aug_hflip is not None else spec.aug_hflip
    if spec.encoding == "events":
        return SeqTransform("events", translate_px=translate, hflip=hflip, event_drop=cfg.aug_event_drop)
    return SeqTransform(
        "direct", steps=cfg.frames, translate_px=translate, hflip=hflip,
        mean=tuple(extra["mean"]), std=tuple(extra["std"]),
    )


def _read_all(spec: DatasetSpec, root: Path | None, cfg: DataConfig, progress: bool, seed: int
              ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Both splits of the data set (``cache.ARRAYS``) and the spec's ``build_extra`` of them."""
    arrays: dict[str, np.ndarray] = {}
    for split in ("train", "test"):
        arrays[f"{split}_frames"], arrays[f"{split}_labels"] = spec.read_split(root, split, cfg, progress, seed=seed)
    return arrays, spec.build_extra(arrays, root, cfg)


def load_arrays(
    spec: DatasetSpec, data_root: str | Path | None, cfg: DataConfig, seed: int, progress: bool = False
) -> tuple[dict[str, np.ndarray], dict[str, Any], Path | None, Path | None]:
    """``(arrays, extra, cache folder or None, root or None)`` of a data set: generated, or read through the cache.

    raises DatasetFormatError (root, files), ConfigError (settings that do not fit the data).
    """
    if not spec.needs_root:
        arrays, extra = _read_all(spec, None, cfg, progress, seed)
        return arrays, extra, None, None
    root = require_root(spec, data_root)
    spec.check_root(root, cfg)
    if not spec.cached:
        arrays, extra = _read_all(spec, root, cfg, progress, seed)
        return arrays, extra, None, root
    try:
        arrays, extra, folder = cache.cached(
            spec.name, root, settings=spec.cache_settings(root, cfg), cache_dir=cfg.cache_dir,
            files=spec.source_files(root, cfg), build=lambda: _read_all(spec, root, cfg, progress, seed),
        )
    except OSError as e:  # a source file vanished or became unreadable while being checksummed
        raise DatasetFormatError(f"{getattr(e, 'filename', None) or root}: cannot read: {e.strerror or e}") from e
    return arrays, extra, folder, root


def load_splits(
    dataset: str, data_root: str | Path | None, cfg: DataConfig, seed: int, progress: bool = False
) -> Splits:
    """Load ``dataset`` as train / val / test FrameSets.

    dataset: one of DATASETS (a registered :class:`~evo_snn.data.registry.DatasetSpec`).
    data_root: folder of the real data (required for all but synthetic). cfg:
    frames T, split_by, downsample, val_fraction, cache_dir, aug_*, image_size,
    resize_filter, classes, synthetic_*. seed: drives the validation split (and the
    synthetic samples). progress: tqdm bar on stderr while parsing.

    Event data (synthetic, nmnist, dvs_gesture): FrameSets of
    ``[N, T, 2, H/downsample, W/downsample]`` counts. Static images (cifar10,
    cifar100, tiny_imagenet, image_folder): uint8 ``[N, 1, 3, H, W]`` images, direct-encoded
    over T = ``cfg.frames`` steps by ``to_seq``. Train is the data set's training
    split minus a stratified ``val_fraction`` hold-out, val that hold-out, test the
    data set's own test split (untouched; Tiny-ImageNet's val/ folder). Data
    read from files are cached on disk and memory-mapped (see :mod:`evo_snn.data.cache`).
    raises DatasetFormatError (missing/bad data root or file; classes other than a
    non-empty ``cfg.classes``), ConfigError (unknown dataset, bad cfg value,
    downsample not dividing the sensor size).
    """
    spec = get_dataset(dataset)
    check_data_config(spec, cfg)
    arrays, extra, folder, root = load_arrays(spec, data_root, cfg, seed, progress)
    names = spec.class_names(root, cfg, extra)
    if cfg.classes and (names is None or tuple(names) != tuple(cfg.classes)):
        raise DatasetFormatError(
            f"{root or dataset}: the data set's classes {names} are not data.classes {list(cfg.classes)} "
            "(the classes this config or run was made for); pass the data root it was made with"
        )

    transform = _transform(spec, cfg, extra)
    train_all, test = (
        FrameSet.from_array(arrays[f"{split}_frames"], arrays[f"{split}_labels"], transform,
                            None if folder is None else folder / f"{split}_frames.npy")
        for split in ("train", "test")
    )
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
    _, _, c, h, w = train_all.shape
    return Splits(
        name=dataset,
        train=train_all.subset(train_idx),
        val=train_all.subset(val_idx),
        test=test,
        num_classes=spec.classes(cfg, extra),
        frame_shape=(cfg.frames, int(c), int(h), int(w)),
        class_names=tuple(names) if names is not None else None,
        layout=spec.layout(root),
    )
