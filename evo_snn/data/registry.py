"""The data-set registry: one :class:`DatasetSpec` per data set, registered by name.

A spec holds every fact about a data set that the rest of the package needs:
its encoding ('events': count frames ``[T, 2, H, W]``; 'direct': one uint8 image
``[3, H, W]`` repeated over T), its sensor size, class count and augmentation
defaults, and the four steps that read it from files: ``resolve_root`` (the
folder to read), ``source_files`` (the files whose checksums key the frame
cache), ``cache_settings`` (the settings that change the stored arrays) and
``read_split(root, split, cfg, progress)`` (the arrays of one split).
:func:`evo_snn.data.load_splits` is spec lookup -> cache -> split, and knows no
data set by name.

Adding a data set is one new module that defines a subclass and decorates it::

    @register_dataset("my_set")
    class MySet(DatasetSpec):
        encoding = "direct"
        ...

plus one registration line: the module's name in :data:`BUILTIN_MODULES`
(imported on first lookup, in that order, which is the order of
``evo_snn.data.DATASETS`` and of the CLI's ``--dataset`` choices).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Callable, TypeVar

import numpy as np

from evo_snn.config import ConfigError, DataConfig
from evo_snn.data.errors import DatasetFormatError, where_data_comes_from

# one registration line per data-set module; each module registers its spec(s) on import
BUILTIN_MODULES = ("synthetic", "nmnist", "dvs_gesture", "cifar", "tiny_imagenet", "image_folder")

ENCODINGS = ("events", "direct")


class DatasetSpec:
    """What a data set is and how it is read. Subclass, set the class attributes, override the readers.

    Class attributes:
      name: the registry name (set by :func:`register_dataset`).
      encoding: 'events' (count frames, uint8/int16/int32 ``[N, T, 2, H, W]``) or
        'direct' (static images, uint8 ``[N, 3, H, W]``, repeated over T by ``FrameSet.to_seq``).
      sensor_size: ``(H, W)`` of an event sensor before ``data.downsample``; None
        for images (their size comes from the files).
      num_classes: the class count, or None when it is read from the files (then
        ``build_extra`` must return it as ``extra['num_classes']``).
      aug_translate_px / aug_hflip: the training-augmentation defaults that
        ``data.aug_translate_px: null`` / ``data.aug_hflip: null`` select.
      needs_root: False for a data set generated in memory (no ``--data-root``).
      cached: False for a data set that is cheap to make and is not stored in the frame cache.
    """

    name: str = ""
    encoding: str = "events"
    sensor_size: tuple[int, int] | None = None
    num_classes: int | None = None
    aug_translate_px: int = 0
    aug_hflip: bool = False
    needs_root: bool = True
    cached: bool = True

    # ------------------------------------------------------------------ facts
    def sensor(self, cfg: DataConfig) -> tuple[int, int] | None:
        """``(H, W)`` of the event sensor for ``cfg`` (before downsampling); None for images."""
        return self.sensor_size

    def classes(self, cfg: DataConfig, extra: dict[str, Any]) -> int:
        """Number of output classes, from :attr:`num_classes` or from ``extra['num_classes']``."""
        return int(self.num_classes if self.num_classes is not None else extra["num_classes"])

    def check_config(self, cfg: DataConfig) -> None:
        """Data-set specific settings checks (the generic ones are in ``splits.check_data_config``).

        raises ConfigError. The default: event data needs a ``downsample`` that divides
        the sensor and no ``image_size``; images need ``downsample == 1``.
        """
        from evo_snn.data.events import check_downsample

        if self.encoding == "direct":
            if cfg.downsample != 1:
                raise ConfigError(f"data.downsample={cfg.downsample}: {self.name} is read at its own resolution; use 1")
            return
        if cfg.image_size is not None:
            raise ConfigError(f"data.image_size={cfg.image_size!r}: {self.name} is event data; data.image_size "
                              "applies to image-folder data sets only; use null")
        h, w = self.sensor(cfg)
        try:
            check_downsample(h, w, cfg.downsample, self.name)
        except ValueError as e:
            raise ConfigError(str(e)) from None

    # ------------------------------------------------------------------ files
    def resolve_root(self, data_root: str | Path) -> Path:
        """The folder that ``read_split`` reads, from the user's ``--data-root``. raises DatasetFormatError."""
        raise NotImplementedError

    def check_root(self, root: Path, cfg: DataConfig) -> None:
        """Settings checks that depend on what is at ``root`` (e.g. its layout). raises ConfigError."""

    def layout(self, root: Path) -> str:
        """A short name of the file layout found at ``root`` (``describe`` prints it)."""
        return self.name

    def source_files(self, root: Path, cfg: DataConfig) -> list[Path]:
        """Every file whose content keys the frame cache. raises DatasetFormatError."""
        raise NotImplementedError

    def cache_settings(self, root: Path, cfg: DataConfig) -> dict[str, Any]:
        """The JSON-able settings that change the stored arrays (part of the cache key)."""
        if self.encoding == "events":
            return {"frames": cfg.frames, "split_by": cfg.split_by, "downsample": cfg.downsample}
        return {}  # images are stored as decoded; T only repeats them in to_seq

    def read_split(
        self, root: Path | None, split: str, cfg: DataConfig, progress: bool = False, *, seed: int = 0
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(frames, labels)`` of ``split`` ('train' | 'test').

        frames: events ``[N, T, 2, H/downsample, W/downsample]`` counts, or images
        uint8 ``[N, 3, H, W]``; labels: int64 ``[N]`` in ``0..C-1``. ``seed`` is only
        used by data generated in memory (``cached = False``). raises DatasetFormatError.
        """
        raise NotImplementedError

    def class_names(self, root: Path | None, cfg: DataConfig, extra: dict[str, Any]) -> list[str] | None:
        """Class names in label order, or None when the data set does not name its classes."""
        names = extra.get("class_names")
        return list(names) if names is not None else None

    def build_extra(self, arrays: dict[str, np.ndarray], root: Path | None, cfg: DataConfig) -> dict[str, Any]:
        """JSON-able facts computed once from the arrays and stored with them in the cache.

        For images: the per-channel ``mean`` / ``std`` of the training split in
        [0, 1] (the normalisation of direct encoding). raises DatasetFormatError.
        """
        if self.encoding != "direct":
            return {}
        from evo_snn.data.augment import channel_mean_std

        mean, std = channel_mean_std(arrays["train_frames"])
        extra: dict[str, Any] = {"mean": mean, "std": std}
        if self.num_classes is not None:
            extra["num_classes"] = self.num_classes
        return extra


_REGISTRY: dict[str, DatasetSpec] = {}
_loaded = False
S = TypeVar("S", bound=type)


class EventReaderSpec(DatasetSpec):
    """An event-camera data set whose reader module (``reader``, the module that declares
    the subclass) provides ``resolve_root(data_root) -> Path``, ``source_files(root)`` and
    ``read_split(root, split, frames=, split_by=, downsample=, progress=)`` returning
    ``(counts [N, T, 2, H, W], labels [N] int64)``; frames as ``data.frames``,
    ``data.split_by`` and ``data.downsample`` say."""

    encoding = "events"
    reader: Any = None

    def resolve_root(self, data_root):
        return self.reader.resolve_root(data_root)

    def source_files(self, root, cfg):
        return self.reader.source_files(root)

    def read_split(self, root, split, cfg, progress=False, *, seed=0):
        return self.reader.read_split(root, split, frames=cfg.frames, split_by=cfg.split_by,
                                      downsample=cfg.downsample, progress=progress)


def register_dataset(name: str) -> Callable[[S], S]:
    """Class decorator: register an instance of the decorated :class:`DatasetSpec` subclass as ``name``.

    raises ValueError for a duplicate name or an unknown encoding.
    """

    def deco(cls: S) -> S:
        if name in _REGISTRY:
            raise ValueError(f"data set {name!r} is already registered (by {type(_REGISTRY[name]).__name__})")
        if cls.encoding not in ENCODINGS:
            raise ValueError(f"data set {name!r}: encoding must be one of {list(ENCODINGS)}, got {cls.encoding!r}")
        spec = cls()
        spec.name = name
        _REGISTRY[name] = spec
        return cls

    return deco


def _load_builtin() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        for module in BUILTIN_MODULES:
            importlib.import_module(f"{__package__}.{module}")
        # the order of BUILTIN_MODULES (a module may import another one's spec first), then of registration
        rank = {f"{__package__}.{m}": i for i, m in enumerate(BUILTIN_MODULES)}
        order = sorted(_REGISTRY.items(), key=lambda kv: rank.get(type(kv[1]).__module__, len(rank)))
        _REGISTRY.clear()
        _REGISTRY.update(order)


def dataset_names() -> tuple[str, ...]:
    """Every registered data set, in registration order."""
    _load_builtin()
    return tuple(_REGISTRY)


def get_dataset(name: str) -> DatasetSpec:
    """The spec registered as ``name``. raises ConfigError naming the known data sets."""
    _load_builtin()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(f"unknown dataset {name!r}; known: {list(_REGISTRY)}") from None


def require_root(spec: DatasetSpec, data_root: str | Path | None) -> Path:
    """``spec.resolve_root(data_root)``; a missing ``data_root`` is a DatasetFormatError asking for --data-root."""
    if data_root is None:
        hint = where_data_comes_from(spec.name)
        raise DatasetFormatError(f"{spec.name} needs its data files: pass --data-root PATH" + (f". {hint}" if hint else ""))
    return spec.resolve_root(data_root)
