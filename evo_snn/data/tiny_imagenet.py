"""Tiny-ImageNet-200 from its original folder layout (64 x 64 RGB JPEGs, 200 classes).

``<root>/tiny-imagenet-200/`` (or ``<root>`` itself):

- ``wnids.txt``: the 200 WordNet ids, one per line. The class index of a wnid is
  its position in the **sorted** list (as torchvision's ``ImageFolder`` on ``train/``);
- ``train/<wnid>/images/*.JPEG``: 500 training images per class (the
  ``<wnid>_boxes.txt`` files are ignored);
- ``val/images/*.JPEG`` with ``val/val_annotations.txt`` (tab-separated
  ``file, wnid, x0, y0, x1, y1``; only the first two fields are used): 10,000
  labelled images, which serve as the **test** split (``test/`` has no labels).

Images are decoded with Pillow and converted to RGB (a few are grayscale);
every image must be 64 x 64. Returned as uint8 ``[N, 3, 64, 64]``.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from tqdm import tqdm

from evo_snn.data.errors import DatasetFormatError, where_data_comes_from
from evo_snn.data.registry import DatasetSpec, register_dataset

NAME = "tiny_imagenet"
FOLDER = "tiny-imagenet-200"
HEIGHT = WIDTH = 64
CHANNELS = 3
NUM_CLASSES = 200
IMAGE_SUFFIXES = (".jpeg", ".jpg")


def _read_lines(path: Path, what: str) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DatasetFormatError(f"{path}: {what} not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetFormatError(f"{path}: cannot read {what} as UTF-8 text: {e}") from None


def resolve_root(data_root: str | Path) -> Path:
    """The ``tiny-imagenet-200`` folder: ``data_root`` or ``data_root/tiny-imagenet-200``. raises DatasetFormatError."""
    root = Path(data_root).expanduser()
    if not root.is_dir():
        raise DatasetFormatError(
            f"{root}: Tiny-ImageNet data root does not exist; pass --data-root PATH (the {FOLDER} folder or its "
            "parent). " + where_data_comes_from("tiny_imagenet")
        )
    for cand in (root, root / FOLDER):
        if (cand / "wnids.txt").is_file() and (cand / "train").is_dir() and (cand / "val").is_dir():
            return cand.resolve()
    raise DatasetFormatError(
        f"{root}: not a Tiny-ImageNet folder: expected wnids.txt, train/ and val/ in it or in {root / FOLDER}; "
        "pass --data-root PATH. " + where_data_comes_from("tiny_imagenet")
    )


def read_wnids(path: Path) -> list[str]:
    """The wnids of ``wnids.txt``, sorted; index = class. raises DatasetFormatError (empty, duplicate, bad line)."""
    wnids: list[str] = []
    for lineno, line in enumerate(_read_lines(path, "wnids.txt"), start=1):
        w = line.strip()
        if not w:
            continue
        if any(c.isspace() for c in w) or "/" in w:
            raise DatasetFormatError(f"{path}: line {lineno}: expected one WordNet id such as 'n01443537', got {w!r}")
        if w in wnids:
            raise DatasetFormatError(f"{path}: line {lineno}: duplicate wnid {w!r}")
        wnids.append(w)
    if not wnids:
        raise DatasetFormatError(f"{path}: lists no wnids; expected one WordNet id per line")
    return sorted(wnids)


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def list_split(root: Path, split: str) -> list[tuple[Path, int]]:
    """``(image, label)`` of every image of ``split`` ('train' | 'test' = val/), in a fixed order.

    raises DatasetFormatError (missing folder, no images, annotation line
    malformed or naming an unknown wnid / a missing image).
    """
    wnids = read_wnids(root / "wnids.txt")
    index = {w: i for i, w in enumerate(wnids)}
    out: list[tuple[Path, int]] = []
    if split == "train":
        for w in wnids:
            folder = root / "train" / w / "images"
            if not folder.is_dir():
                raise DatasetFormatError(f"{folder}: not found; wnid {w!r} is listed in {root / 'wnids.txt'}")
            images = _images_in(folder)
            if not images:
                raise DatasetFormatError(f"{folder}: no .JPEG images; expected the training images of {w!r}")
            out.extend((p, index[w]) for p in images)
        return out
    ann = root / "val" / "val_annotations.txt"
    seen: set[str] = set()
    for lineno, line in enumerate(_read_lines(ann, "val_annotations.txt"), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 2 or not fields[0].strip() or not fields[1].strip():
            raise DatasetFormatError(
                f"{ann}: line {lineno}: expected tab-separated 'file<TAB>wnid<TAB>x0<TAB>y0<TAB>x1<TAB>y1', got {line!r}"
            )
        name, w = fields[0].strip(), fields[1].strip()
        if w not in index:
            raise DatasetFormatError(f"{ann}: line {lineno}: wnid {w!r} is not in wnids.txt")
        if "/" in name or "\\" in name or name in seen:
            raise DatasetFormatError(f"{ann}: line {lineno}: expected a unique file name in val/images, got {name!r}")
        seen.add(name)
        path = root / "val" / "images" / name
        if not path.is_file():
            raise DatasetFormatError(f"{path}: not found; listed in {ann} line {lineno}")
        out.append((path, index[w]))
    if not out:
        raise DatasetFormatError(f"{ann}: no annotations; expected one line per validation image")
    return out


def source_files(root: Path) -> list[Path]:
    """Every file whose content keys the cache: wnids.txt, val_annotations.txt and every image of both splits."""
    files = [root / "wnids.txt", root / "val" / "val_annotations.txt"]
    for split in ("train", "test"):
        files += [p for p, _ in list_split(root, split)]
    return files


def decode_image(path: Path) -> np.ndarray:
    """One image as uint8 ``[3, 64, 64]`` (RGB). raises DatasetFormatError (unreadable, not an image, not 64x64)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                if img.size != (WIDTH, HEIGHT):
                    raise DatasetFormatError(
                        f"{path}: image is {img.size[0]}x{img.size[1]}; expected {WIDTH}x{HEIGHT} (Tiny-ImageNet)"
                    )
                rgb = np.asarray(img.convert("RGB"), dtype=np.uint8)
    except DatasetFormatError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError,
            Image.DecompressionBombWarning) as e:
        raise DatasetFormatError(f"{path}: byte 0: cannot decode as a JPEG image ({e})") from None
    return np.ascontiguousarray(rgb.transpose(2, 0, 1))


def read_split(root: Path, split: str, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Images uint8 ``[N, 3, 64, 64]`` and labels int64 ``[N]`` of ``split`` ('train' | 'test'). raises DatasetFormatError."""
    items = list_split(root, split)
    images = np.empty((len(items), CHANNELS, HEIGHT, WIDTH), dtype=np.uint8)
    for i, (path, _) in enumerate(tqdm(items, desc=f"tiny_imagenet {split}", unit="img", disable=not progress)):
        images[i] = decode_image(path)
    return images, np.asarray([label for _, label in items], dtype=np.int64)


@register_dataset("tiny_imagenet")
class TinyImageNetSpec(DatasetSpec):
    """Tiny-ImageNet-200: direct-encoded uint8 ``[3, 64, 64]`` images, 200 classes (sorted wnids).

    Augmentation defaults: random crop after 8-pixel zero padding, horizontal flip.
    """

    encoding = "direct"
    num_classes = None  # the wnids.txt count (200 in the real data set), stored with the arrays
    aug_translate_px = 8
    aug_hflip = True

    def resolve_root(self, data_root):
        return resolve_root(data_root)

    def layout(self, root):
        return "tiny_imagenet_200"

    def check_root(self, root, cfg):
        if cfg.image_size is not None:
            from evo_snn.config import ConfigError

            raise ConfigError(f"data.image_size={cfg.image_size!r}: tiny_imagenet images are read at 64x64; "
                              "data.image_size applies to image-folder data sets")

    def source_files(self, root, cfg):
        return source_files(root)

    def read_split(self, root, split, cfg, progress=False, *, seed=0):
        return read_split(root, split, progress=progress)

    def build_extra(self, arrays, root, cfg):
        return {**super().build_extra(arrays, root, cfg), "num_classes": len(read_wnids(root / "wnids.txt"))}

    def class_names(self, root, cfg, extra):
        return read_wnids(root / "wnids.txt") if root is not None else None
