"""Image-folder data sets (torchvision's ``ImageFolder`` convention): ``ROOT/{train,test}/<class>/*``.

- Classes are the sub-folders of ``ROOT/train``, sorted by name; class ``k`` of
  that list has label ``k``. ``ROOT/test`` may hold the same classes or a subset;
  a class folder in ``test/`` that is not in ``train/`` is an error.
- Images: every non-hidden file (name not starting with '.') with a suffix in
  :data:`IMAGE_SUFFIXES` (any case) under a class folder, sub-folders included, in
  sorted path order; other files are skipped, as ``ImageFolder`` does. Hidden
  files and folders are skipped. A class folder without images is an error.
- Decoding: Pillow, restricted to the JPEG, PNG, BMP and WebP decoders, converted
  to RGB (grey, palette, RGBA and CMYK images too; alpha is dropped); the first
  frame of an animated file. A truncated file or one that is not such an image is
  an error naming the file.
- Size: with ``data.image_size`` null every image must have the size of the first
  training image; otherwise every image is resized to ``image_size`` (``S`` or
  ``[H, W]``) with the Pillow filter ``data.resize_filter``. A JPEG to be shrunk
  by 2x or more is first decoded at reduced size (Pillow's ``draft`` mode).
- Decoding runs in a process pool (``concurrent.futures``) for
  :data:`PARALLEL_MIN_IMAGES` images or more: one chunk of files per task, each
  returning a uint8 array, gathered in file order (the first bad file in that
  order is the one reported).

Returned as uint8 ``[N, 3, H, W]`` with int64 labels ``[N]``; stored once in the
frame cache (keyed by every file's path and checksum and the size settings) and
direct-encoded over T by ``FrameSet.to_seq``.

:class:`ImageFolderSpec` registers it as ``image_folder``; :mod:`evo_snn.data.cifar`
reads CIFAR-10/100 in this layout too.
"""

from __future__ import annotations

import io
import multiprocessing
import os
import struct
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from evo_snn.config import DataConfig
from evo_snn.data.errors import DatasetFormatError, where_data_comes_from
from evo_snn.data.registry import DatasetSpec, register_dataset

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
PIL_FORMATS = ("JPEG", "PNG", "BMP", "WEBP")
SPLITS = ("train", "test")
PARALLEL_MIN_IMAGES = 2048  # fewer images decode faster in this process than a pool starts
CHUNK_IMAGES = 1024
LAYOUT = "image_folder"


def _filters() -> dict[str, Any]:
    from PIL import Image

    r = Image.Resampling
    return {"nearest": r.NEAREST, "box": r.BOX, "bilinear": r.BILINEAR, "hamming": r.HAMMING,
            "bicubic": r.BICUBIC, "lanczos": r.LANCZOS}


def target_size(image_size: Any) -> tuple[int, int] | None:
    """``data.image_size`` as ``(H, W)``: None stays None, ``S`` -> ``(S, S)``, ``[H, W]`` -> ``(H, W)``."""
    if image_size is None:
        return None
    if isinstance(image_size, int):
        return image_size, image_size
    h, w = image_size
    return int(h), int(w)


# ------------------------------------------------------------------ listing
def _visible(name: str) -> bool:
    return not name.startswith(".")


def resolve_root(data_root: str | Path, what: str = "image-folder") -> Path:
    """The folder holding ``train/`` and ``test/``. raises DatasetFormatError (absent root, no train/ or test/)."""
    root = Path(data_root).expanduser()
    if not root.is_dir():
        raise DatasetFormatError(
            f"{root}: {what} data root does not exist; pass --data-root PATH (a folder with train/<class>/ "
            "and test/<class>/). " + where_data_comes_from("image_folder")
        )
    for split in SPLITS:
        if not (root / split).is_dir():
            raise DatasetFormatError(
                f"{root}: no {split}/ folder; an image-folder data set is ROOT/train/<class>/<image> and "
                "ROOT/test/<class>/<image>; pass --data-root PATH. " + where_data_comes_from("image_folder")
            )
    return root.resolve()


def is_image_folder(root: Path) -> bool:
    """True when ``root`` has the layout's ``train/`` and ``test/`` folders (no file is read)."""
    return all((root / s).is_dir() for s in SPLITS)


def _class_folders(split_dir: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(split_dir) if _visible(e.name) and e.is_dir())


def list_classes(root: Path) -> list[str]:
    """The class names: the sorted non-hidden sub-folders of ``root/train``. raises DatasetFormatError (none)."""
    classes = _class_folders(root / "train")
    if not classes:
        raise DatasetFormatError(f"{root / 'train'}: no class folders; expected train/<class>/<image> files")
    return classes


def _images_under(folder: Path) -> list[Path]:
    """Non-hidden image files under ``folder`` (recursively, hidden folders skipped), sorted by relative path."""
    found: list[tuple[str, str]] = []  # (path relative to folder, with '/', full path)
    base = os.fspath(folder)
    for dirpath, dirnames, filenames in os.walk(base, followlinks=True):
        dirnames[:] = [d for d in dirnames if _visible(d)]
        rel = os.path.relpath(dirpath, base).replace(os.sep, "/")
        prefix = "" if rel == "." else rel + "/"
        for f in filenames:
            if _visible(f) and f.lower().endswith(IMAGE_SUFFIXES):
                found.append((prefix + f, os.path.join(dirpath, f)))
    found.sort()
    return [Path(full) for _, full in found]


def list_split(root: Path, split: str, classes: list[str] | None = None) -> list[tuple[Path, int]]:
    """``(image, label)`` of every image of ``split`` ('train' | 'test'), by class then path.

    classes: the label order (default: :func:`list_classes`). raises
    DatasetFormatError (a test class not in train, a class folder with no image).
    """
    classes = list_classes(root) if classes is None else classes
    split_dir = root / split
    index = {c: k for k, c in enumerate(classes)}
    present = _class_folders(split_dir)
    for c in present:
        if c not in index:
            raise DatasetFormatError(
                f"{split_dir / c}: class {c!r} is in {split}/ but not in train/; every class needs training images"
            )
    if not present:
        raise DatasetFormatError(f"{split_dir}: no class folders; expected {split}/<class>/<image> files")
    out: list[tuple[Path, int]] = []
    for c in present:
        images = _images_under(split_dir / c)
        if not images:
            raise DatasetFormatError(
                f"{split_dir / c}: empty class folder: no image files ({', '.join(IMAGE_SUFFIXES)}); "
                "remove the folder or add its images"
            )
        out.extend((p, index[c]) for p in images)
    return out


def source_files(root: Path) -> list[Path]:
    """Every image of both splits (their paths encode the labels), which key the frame cache."""
    classes = list_classes(root)
    return [p for split in SPLITS for p, _ in list_split(root, split, classes)]


# ------------------------------------------------------------------ decoding
def image_size_of(path: Path) -> tuple[int, int]:
    """``(H, W)`` of an image from its header (no decoding). raises DatasetFormatError."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path, formats=PIL_FORMATS) as img:
            w, h = img.size
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise DatasetFormatError(f"{path}: byte 0: cannot read as a JPEG, PNG, BMP or WebP image ({e})") from None
    return h, w


def decode_image(
    path: str | Path | io.BytesIO, size: tuple[int, int] | None = None, expected: tuple[int, int] | None = None,
    resize_filter: str = "bilinear", name: str | None = None,
) -> np.ndarray:
    """One image (a file, or an in-memory file object) as uint8 ``[3, H, W]`` (RGB).

    size: ``(H, W)`` to resize to (None = keep); expected: with ``size`` None, the
    ``(H, W)`` every image must have (None = any); name: the file name for errors
    (default: ``path``). raises DatasetFormatError naming the file (not a
    JPEG/PNG/BMP/WebP image, truncated, corrupt, decompression bomb, or a size other
    than ``expected``).
    """
    from PIL import Image, UnidentifiedImageError

    name = name or str(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path, formats=PIL_FORMATS) as img:
                w, h = img.size
                if size is None and expected is not None and (h, w) != expected:
                    raise DatasetFormatError(
                        f"{name}: image is {h}x{w} (HxW), others are {expected[0]}x{expected[1]}; images of different "
                        "sizes need data.image_size (e.g. --set data.image_size=[32,32]) to resize them"
                    )
                if size is not None and img.format == "JPEG" and (h >= 2 * size[0] and w >= 2 * size[1]):
                    img.draft("RGB", (size[1], size[0]))  # decode at 1/2, 1/4 or 1/8 scale, still >= size
                img.load()
                rgb = img.convert("RGB")
                if size is not None and rgb.size != (size[1], size[0]):
                    rgb = rgb.resize((size[1], size[0]), _filters()[resize_filter])
                arr = np.asarray(rgb, dtype=np.uint8)
    except DatasetFormatError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError, IndexError, struct.error,
            Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise DatasetFormatError(
            f"{name}: byte 0: cannot decode as a JPEG, PNG, BMP or WebP image ({type(e).__name__}: {e}); "
            "the file is truncated, corrupt or not an image"
        ) from None
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise DatasetFormatError(f"{name}: decoded to shape {list(arr.shape)}; expected [H, W, 3] RGB")
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


def _decode_chunk(paths: list[str], size, expected, resize_filter: str) -> np.ndarray:
    """Worker task: ``[len(paths), 3, H, W]`` uint8 of the files in order. raises DatasetFormatError."""
    first = decode_image(paths[0], size, expected, resize_filter)
    out = np.empty((len(paths), *first.shape), dtype=np.uint8)
    out[0] = first
    for i, p in enumerate(paths[1:], start=1):
        out[i] = decode_image(p, size, expected, resize_filter)
    return out


def _workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _pool_context():
    # fork starts workers in milliseconds and needs no re-import of torch; the workers use only Pillow and numpy
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else None)


def decode_images(
    paths: list[Path], size: tuple[int, int] | None, expected: tuple[int, int] | None, resize_filter: str,
    *, progress: bool = False, desc: str = "images", workers: int | None = None,
) -> np.ndarray:
    """uint8 ``[N, 3, H, W]`` of ``paths`` in order (see :func:`decode_image` for the arguments).

    N >= :data:`PARALLEL_MIN_IMAGES` and more than one CPU: a process pool of
    ``workers`` (default: the CPUs this process may use). raises DatasetFormatError
    for the first bad file in ``paths`` order; the pool is shut down first.
    """
    if not paths:
        raise ValueError("decode_images needs at least one path")
    names = [str(p) for p in paths]
    chunks = [names[i:i + CHUNK_IMAGES] for i in range(0, len(names), CHUNK_IMAGES)]
    workers = min(workers or _workers(), len(chunks))
    bar = tqdm(total=len(names), desc=desc, unit="img", disable=not progress)
    parts: list[np.ndarray] = []
    try:
        if workers <= 1 or len(names) < PARALLEL_MIN_IMAGES:
            for c in chunks:
                parts.append(_decode_chunk(c, size, expected, resize_filter))
                bar.update(len(c))
        else:
            with ProcessPoolExecutor(max_workers=workers, mp_context=_pool_context()) as pool:
                futures = [pool.submit(_decode_chunk, c, size, expected, resize_filter) for c in chunks]
                try:
                    for c, f in zip(chunks, futures):
                        parts.append(f.result())
                        bar.update(len(c))
                except BaseException:
                    for f in futures:
                        f.cancel()
                    raise
    finally:
        bar.close()
    shapes = {p.shape[1:] for p in parts}
    if len(shapes) != 1:  # only when expected is None and size is None: chunks of different sizes
        raise DatasetFormatError(f"{paths[0]}: images of different sizes; set data.image_size to resize them")
    return np.concatenate(parts) if len(parts) > 1 else parts[0]


def read_split(
    root: Path, split: str, *, image_size: Any = None, resize_filter: str = "bilinear", progress: bool = False,
    classes: list[str] | None = None, name: str = "image_folder",
) -> tuple[np.ndarray, np.ndarray]:
    """Images uint8 ``[N, 3, H, W]`` and labels int64 ``[N]`` of ``split`` ('train' | 'test').

    image_size: ``data.image_size`` (None: every image of both splits must have the
    size of the first training image). raises DatasetFormatError.
    """
    classes = list_classes(root) if classes is None else classes
    items = list_split(root, split, classes)
    size = target_size(image_size)
    expected = None
    if size is None:  # every image of both splits must have the size of the first training image
        first_train = items[0][0] if split == "train" else _images_under(root / "train" / classes[0])
        if isinstance(first_train, list):
            if not first_train:
                list_split(root, "train", classes)  # raises: the empty class folder
            first_train = first_train[0]
        expected = image_size_of(first_train)
    images = decode_images([p for p, _ in items], size, expected, resize_filter, progress=progress,
                           desc=f"{name} {split}")
    return images, np.asarray([label for _, label in items], dtype=np.int64)


# ------------------------------------------------------------------ the registered data set
class ImageFolderReader(DatasetSpec):
    """Shared by every data set read from the image-folder layout (``image_folder``; CIFAR in this layout)."""

    encoding = "direct"
    aug_translate_px = 0
    aug_hflip = True

    def folder_settings(self, cfg: DataConfig) -> dict[str, Any]:
        size = target_size(cfg.image_size)
        return {"layout": LAYOUT, "image_size": list(size) if size else None,
                "resize_filter": cfg.resize_filter if size else None}

    def folder_split(self, root: Path, split: str, cfg: DataConfig, progress: bool) -> tuple[np.ndarray, np.ndarray]:
        return read_split(root, split, image_size=cfg.image_size, resize_filter=cfg.resize_filter,
                          progress=progress, name=self.name)

    def folder_extra(self, arrays: dict[str, np.ndarray], root: Path, cfg: DataConfig) -> dict[str, Any]:
        classes = list_classes(root)
        return {**DatasetSpec.build_extra(self, arrays, root, cfg), "num_classes": len(classes),
                "class_names": classes}


@register_dataset("image_folder")
class ImageFolderSpec(ImageFolderReader):
    """Any ``ROOT/{train,test}/<class>/<image>`` folder; the class count comes from ``train/``.

    Augmentation defaults: random horizontal flip, no translation (set
    ``data.aug_translate_px`` for a random crop with zero padding).
    """

    def resolve_root(self, data_root: str | Path) -> Path:
        return resolve_root(data_root)

    def layout(self, root: Path) -> str:
        return LAYOUT

    def source_files(self, root: Path, cfg: DataConfig) -> list[Path]:
        return source_files(root)

    def cache_settings(self, root: Path, cfg: DataConfig) -> dict[str, Any]:
        return self.folder_settings(cfg)

    def read_split(self, root, split, cfg, progress=False, *, seed=0):
        return self.folder_split(root, split, cfg, progress)

    def build_extra(self, arrays, root, cfg):
        return self.folder_extra(arrays, root, cfg)
