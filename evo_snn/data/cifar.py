"""CIFAR-10 / CIFAR-100 (Krizhevsky 2009) from the original python pickle batches or an image folder.

Two layouts are accepted, detected from the data root (``describe`` prints which):
``python_batches`` (below) and ``image_folder``: ``<root>/train/<class>/<image>``
and ``<root>/test/<class>/<image>`` (see :mod:`evo_snn.data.image_folder`; the
sorted class folder names give the labels, which for the 10 / 100 CIFAR class
names is the order of the original label indices).

CIFAR-10: ``<root>/cifar-10-batches-py/`` (or ``<root>`` itself) with
``data_batch_1`` .. ``data_batch_5`` (train), ``test_batch`` and ``batches.meta``
(``label_names``). CIFAR-100: ``<root>/cifar-100-python/`` with ``train``,
``test`` and ``meta``; labels are the 100 ``fine_labels``.

Each batch is a pickled dict with ``data``: uint8 ``[n, 3072]`` (1024 red, then
1024 green, then 1024 blue values of a 32 x 32 image, row-major) and the labels
as a list of ints. The files are unpickled with a restricted unpickler that
only builds builtin containers and numpy arrays (``numpy...._reconstruct``,
``ndarray``, ``dtype``, and ``_codecs.encode`` that protocol-2 pickles use for
bytes); any other class is a DatasetFormatError, never executed.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from evo_snn.config import ConfigError, DataConfig
from evo_snn.data import image_folder
from evo_snn.data.errors import DatasetFormatError, where_data_comes_from
from evo_snn.data.registry import register_dataset

HEIGHT = WIDTH = 32
CHANNELS = 3


class _Variant:
    def __init__(self, name, folder, train, test, meta, label_key, names_key, num_classes):
        self.name, self.folder, self.train, self.test = name, folder, train, test
        self.meta, self.label_key, self.names_key, self.num_classes = meta, label_key, names_key, num_classes


VARIANTS = {
    "cifar10": _Variant(
        "cifar10", "cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"],
        "batches.meta", "labels", "label_names", 10,
    ),
    "cifar100": _Variant(
        "cifar100", "cifar-100-python", ["train"], ["test"], "meta", "fine_labels", "fine_label_names", 100,
    ),
}


def _allowed_globals() -> dict[tuple[str, str], Any]:
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]
    try:
        from numpy._core.numeric import _frombuffer
    except ImportError:
        from numpy.core.numeric import _frombuffer  # type: ignore[no-redef]
    import _codecs

    allowed: dict[tuple[str, str], Any] = {}
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(mod, "_reconstruct")] = _reconstruct
    for mod in ("numpy.core.numeric", "numpy._core.numeric"):
        allowed[(mod, "_frombuffer")] = _frombuffer
    allowed[("numpy", "ndarray")] = np.ndarray
    allowed[("numpy", "dtype")] = np.dtype
    allowed[("_codecs", "encode")] = _codecs.encode
    for name, obj in (("set", set), ("frozenset", frozenset), ("list", list), ("dict", dict),
                      ("tuple", tuple), ("bytearray", bytearray)):
        allowed[("builtins", name)] = obj
        allowed[("__builtin__", name)] = obj  # python 2 pickles
    return allowed


class _RestrictedUnpickler(pickle.Unpickler):
    """Builds builtin containers and numpy arrays only; any other global raises DatasetFormatError."""

    _ALLOWED = _allowed_globals()

    def __init__(self, file, name: str):
        super().__init__(file, encoding="latin1")
        self._name = name
        self._file = file

    def find_class(self, module: str, name: str):
        obj = self._ALLOWED.get((module, name))
        if obj is None:
            raise DatasetFormatError(
                f"{self._name}: byte {self._file.tell()}: the pickle refers to {module}.{name}; expected only "
                "builtin containers and numpy arrays (a CIFAR python batch)"
            )
        return obj


def load_pickle(path: Path) -> Any:
    """Unpickle ``path`` with the restricted unpickler. raises DatasetFormatError."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DatasetFormatError(f"{path}: not found; expected a CIFAR python batch file") from None
    except OSError as e:
        raise DatasetFormatError(f"{path}: cannot read: {e.strerror or e}") from e
    f = io.BytesIO(data)
    try:
        obj = _RestrictedUnpickler(f, str(path)).load()
    except DatasetFormatError:
        raise
    except Exception as e:  # noqa: BLE001 - any failure of a hostile pickle is a format error
        raise DatasetFormatError(
            f"{path}: byte {f.tell()}: not a readable python pickle ({type(e).__name__}: {e}); "
            "expected a CIFAR python batch"
        ) from None
    if f.tell() != len(data):
        raise DatasetFormatError(f"{path}: byte {f.tell()}: {len(data) - f.tell()} bytes after the end of the pickle")
    return obj


def _field(d: dict, key: str, path: Path) -> Any:
    if key in d:
        return d[key]
    bkey = key.encode()
    if bkey in d:
        return d[bkey]
    raise DatasetFormatError(f"{path}: the batch dict has no key {key!r}; keys are {sorted(map(str, d))[:8]}")


def read_batch(path: Path, label_key: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """One batch file: images uint8 ``[n, 3, 32, 32]`` and labels int64 ``[n]`` in ``0..num_classes-1``.

    raises DatasetFormatError (not a dict, missing key, data not uint8 ``[n, 3072]``,
    label count or range wrong).
    """
    d = load_pickle(path)
    if not isinstance(d, dict):
        raise DatasetFormatError(f"{path}: expected a pickled dict (a CIFAR python batch), got {type(d).__name__}")
    data = _field(d, "data", path)
    labels = _field(d, label_key, path)
    size = CHANNELS * HEIGHT * WIDTH
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != size:
        desc = f"{data.dtype} {list(data.shape)}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DatasetFormatError(f"{path}: key 'data': expected a uint8 array [n, {size}], got {desc}")
    if not isinstance(labels, (list, tuple, np.ndarray)):
        raise DatasetFormatError(f"{path}: key {label_key!r}: expected a list of ints, got {type(labels).__name__}")
    try:
        lab = np.asarray(labels)
        if lab.dtype.kind not in "iu" or lab.ndim != 1:
            raise ValueError
        lab = lab.astype(np.int64)
    except (ValueError, TypeError):
        raise DatasetFormatError(f"{path}: key {label_key!r}: expected a list of ints") from None
    if lab.shape[0] != data.shape[0]:
        raise DatasetFormatError(
            f"{path}: key {label_key!r}: {lab.shape[0]} labels for {data.shape[0]} images; expected one per image"
        )
    bad = np.flatnonzero((lab < 0) | (lab >= num_classes))
    if bad.size:
        raise DatasetFormatError(
            f"{path}: key {label_key!r}: label {int(lab[bad[0]])} of image {int(bad[0])} outside 0-{num_classes - 1}"
        )
    return np.ascontiguousarray(data.reshape(-1, CHANNELS, HEIGHT, WIDTH)), lab


def has_batches(root: Path, dataset: str) -> bool:
    """True when ``root`` holds every python batch file of ``dataset``."""
    v = VARIANTS[dataset]
    return all((root / f).is_file() for f in (*v.train, *v.test))


def resolve_root(data_root: str | Path, dataset: str) -> Path:
    """The folder to read: the one holding the batch files (``data_root`` or
    ``data_root/<cifar-...>``), else ``data_root`` in the image-folder layout (with
    ``train/`` and ``test/``; ``train/`` must hold exactly the data set's number of
    class folders). raises DatasetFormatError.
    """
    v = VARIANTS[dataset]
    root = Path(data_root).expanduser()
    if not root.is_dir():
        raise DatasetFormatError(
            f"{root}: {dataset} data root does not exist; pass --data-root PATH (the {v.folder} folder or its "
            "parent). " + where_data_comes_from(dataset)
        )
    for cand in (root, root / v.folder):
        if has_batches(cand, dataset):
            return cand.resolve()
    if image_folder.is_image_folder(root):
        classes = image_folder.list_classes(root)
        if len(classes) != v.num_classes:
            raise DatasetFormatError(
                f"{root / 'train'}: {len(classes)} class folders; {dataset} has {v.num_classes} "
                "(use --dataset image_folder for another image-folder data set)"
            )
        return root.resolve()
    raise DatasetFormatError(
        f"{root}: not a {dataset} folder: expected {', '.join((*v.train, *v.test))} in it or in {root / v.folder}, "
        "or the image-folder layout train/<class>/ and test/<class>/; pass --data-root PATH. "
        + where_data_comes_from(dataset)
    )


def source_files(root: Path, dataset: str) -> list[Path]:
    """The batch files (and the meta file when present) that key the cache."""
    v = VARIANTS[dataset]
    files = [root / f for f in (*v.train, *v.test)]
    if (root / v.meta).is_file():
        files.append(root / v.meta)
    return files


def class_names(root: Path, dataset: str) -> list[str] | None:
    """Class names from the meta file, or None when it is absent. raises DatasetFormatError."""
    v = VARIANTS[dataset]
    path = root / v.meta
    if not path.is_file():
        return None
    d = load_pickle(path)
    if not isinstance(d, dict):
        raise DatasetFormatError(f"{path}: expected a pickled dict with {v.names_key!r}, got {type(d).__name__}")
    names = _field(d, v.names_key, path)
    if not isinstance(names, (list, tuple)) or len(names) != v.num_classes:
        raise DatasetFormatError(f"{path}: key {v.names_key!r}: expected {v.num_classes} class names")
    return [n.decode("latin1") if isinstance(n, bytes) else str(n) for n in names]


def read_split(root: Path, dataset: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images uint8 ``[N, 3, 32, 32]`` and labels int64 ``[N]`` of ``split`` ('train' | 'test'), batches in order.

    raises DatasetFormatError.
    """
    v = VARIANTS[dataset]
    class_names(root, dataset)  # validates the meta file when present
    parts = [read_batch(root / f, v.label_key, v.num_classes) for f in (v.train if split == "train" else v.test)]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


# ------------------------------------------------------------------ the registered data sets
class _CifarSpec(image_folder.ImageFolderReader):
    """CIFAR-10 / -100 in either layout: direct-encoded uint8 ``[3, 32, 32]`` images
    (any same-size images, or ``data.image_size``, in the image-folder layout).
    Augmentation defaults: random crop after 4-pixel zero padding, horizontal flip."""

    aug_translate_px = 4
    aug_hflip = True

    def __init__(self) -> None:
        self.num_classes = VARIANTS[type(self).variant].num_classes

    def resolve_root(self, data_root: str | Path) -> Path:
        return resolve_root(data_root, self.name)

    def layout(self, root: Path) -> str:
        return "python_batches" if has_batches(root, self.name) else image_folder.LAYOUT

    def check_root(self, root: Path, cfg: DataConfig) -> None:
        if cfg.image_size is not None and has_batches(root, self.name):
            raise ConfigError(f"data.image_size={cfg.image_size!r}: {root} holds {self.name}'s python batches "
                              "(32x32 images, not resized); data.image_size applies to the image-folder layout")

    def source_files(self, root: Path, cfg: DataConfig) -> list[Path]:
        if has_batches(root, self.name):
            return source_files(root, self.name)
        return image_folder.source_files(root)

    def cache_settings(self, root: Path, cfg: DataConfig) -> dict:
        return {} if has_batches(root, self.name) else self.folder_settings(cfg)

    def read_split(self, root, split, cfg, progress=False, *, seed=0):
        if has_batches(root, self.name):
            return read_split(root, self.name, split)
        return self.folder_split(root, split, cfg, progress)

    def build_extra(self, arrays, root, cfg):
        if has_batches(root, self.name):
            return super(image_folder.ImageFolderReader, self).build_extra(arrays, root, cfg)
        return self.folder_extra(arrays, root, cfg)

    def class_names(self, root, cfg, extra):
        names = extra.get("class_names")
        if names is None and root is not None and has_batches(root, self.name):
            names = class_names(root, self.name)
        return list(names) if names is not None else None


@register_dataset("cifar10")
class Cifar10Spec(_CifarSpec):
    variant = "cifar10"


@register_dataset("cifar100")
class Cifar100Spec(_CifarSpec):
    variant = "cifar100"
