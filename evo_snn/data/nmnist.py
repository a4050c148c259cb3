"""N-MNIST reader (Orchard et al. 2015): ``<root>/{Train,Test}/<digit>/*.bin``, label = digit.

Each event is 5 bytes, big-endian bit fields: bits 39-32 x, bits 31-24 y, bit 23
polarity, bits 22-0 timestamp (µs). Sensor 34 x 34 (x = column, y = row).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from evo_snn.data.errors import DatasetFormatError, where_data_comes_from
from evo_snn.data.registry import EventReaderSpec, register_dataset
from evo_snn.data.events import Events, downsample_frames, integrate_frames, stack_counts, to_storage

NAME = "nmnist"
HEIGHT = 34
WIDTH = 34
NUM_CLASSES = 10
SPLIT_DIRS = {"train": "Train", "test": "Test"}
EVENT_BYTES = 5


def decode_bin(data: bytes, name: str = "<bytes>") -> Events:
    """Decode the bytes of one N-MNIST ``.bin`` file; ``name`` is used in error messages.

    Returns Events (t int64 µs, x int32, y int32, p int8), in file order.
    raises DatasetFormatError if the length is not a multiple of 5 or an event
    has x >= 34 or y >= 34 (naming its byte offset).
    """
    if len(data) % EVENT_BYTES:
        raise DatasetFormatError(
            f"{name}: byte {len(data) - len(data) % EVENT_BYTES}: file length {len(data)} is not a multiple of "
            f"{EVENT_BYTES} (N-MNIST events are 5 bytes); the file is truncated or not N-MNIST"
        )
    raw = np.frombuffer(data, dtype=np.uint8).reshape(-1, EVENT_BYTES)
    x = raw[:, 0].astype(np.int32)
    y = raw[:, 1].astype(np.int32)
    p = (raw[:, 2] >> 7).astype(np.int8)
    t = (
        (raw[:, 2].astype(np.int64) & 0x7F) << 16
        | raw[:, 3].astype(np.int64) << 8
        | raw[:, 4].astype(np.int64)
    )
    bad = np.flatnonzero((x >= WIDTH) | (y >= HEIGHT))
    if bad.size:
        i = int(bad[0])
        raise DatasetFormatError(
            f"{name}: byte {i * EVENT_BYTES}: event at x={int(x[i])}, y={int(y[i])}; "
            f"expected x < {WIDTH} and y < {HEIGHT} (N-MNIST sensor is {HEIGHT}x{WIDTH})"
        )
    return Events(t=t, x=x, y=y, p=p)


def read_bin(path: str | Path) -> Events:
    """All events of one N-MNIST ``.bin`` file. raises DatasetFormatError."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DatasetFormatError(f"{path}: cannot read N-MNIST file: {e.strerror or e}") from e
    return decode_bin(data, str(path))


def resolve_root(data_root: str | Path) -> Path:
    """The folder holding ``Train/`` and ``Test/``. raises DatasetFormatError."""
    root = Path(data_root).expanduser()
    if not root.is_dir():
        raise DatasetFormatError(
            f"{root}: N-MNIST data root does not exist; pass --data-root PATH (a folder with Train/ and Test/). "
            + where_data_comes_from("nmnist")
        )
    missing = [d for d in SPLIT_DIRS.values() if not (root / d).is_dir()]
    if missing:
        raise DatasetFormatError(
            f"{root}: not an N-MNIST folder: expected sub-folders Train/ and Test/ (missing {', '.join(missing)}); "
            "pass --data-root PATH. " + where_data_comes_from("nmnist")
        )
    return root.resolve()


def list_samples(root: Path, split: str) -> list[tuple[Path, int]]:
    """``(file, label)`` of every ``<split dir>/<digit>/*.bin``, by digit then file name.

    raises DatasetFormatError if the split holds no .bin file or a sub-folder is not a digit.
    """
    split_dir = root / SPLIT_DIRS[split]
    samples: list[tuple[Path, int]] = []
    for sub in sorted(split_dir.iterdir()):
        if not sub.is_dir():
            continue
        if sub.name not in {str(d) for d in range(NUM_CLASSES)}:
            raise DatasetFormatError(
                f"{sub}: unexpected folder in {split_dir}; expected only digit folders 0-9"
            )
        samples.extend((f, int(sub.name)) for f in sorted(sub.glob("*.bin")))
    if not samples:
        raise DatasetFormatError(f"{split_dir}: no .bin files; expected {split_dir}/<digit>/*.bin")
    return samples


def source_files(root: Path) -> list[Path]:
    """Every file whose size and mtime key the frame cache."""
    return [f for split in SPLIT_DIRS for f, _ in list_samples(root, split)]


def read_split(
    root: Path, split: str, *, frames: int, split_by: str, downsample: int, progress: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Frames and labels of one split.

    Returns ``frames`` ``[N, T, 2, 34/downsample, 34/downsample]`` counts (uint8,
    int16 or int32) and ``labels`` ``[N]`` int64. raises DatasetFormatError.
    """
    samples = list_samples(root, split)
    out = []
    for path, _ in tqdm(samples, desc=f"nmnist {split}", unit="file", disable=not progress):
        ev = read_bin(path)  # file order, as spikingjelly's NMNIST
        counts = integrate_frames(ev.x, ev.y, ev.p, ev.t, frames=frames, split_by=split_by, height=HEIGHT, width=WIDTH)
        out.append(to_storage(downsample_frames(counts, downsample)))
    shape = (frames, 2, HEIGHT // downsample, WIDTH // downsample)
    labels = np.asarray([label for _, label in samples], dtype=np.int64)
    return stack_counts(out, shape), labels


@register_dataset("nmnist")
class NMNISTSpec(EventReaderSpec):
    """N-MNIST: event counts ``[T, 2, 34/downsample, 34/downsample]``, 10 digit classes, no augmentation by default."""

    sensor_size = (HEIGHT, WIDTH)
    num_classes = NUM_CLASSES

    reader = sys.modules[__name__]  # resolve_root, source_files and read_split below

    def layout(self, root):
        return "nmnist_bin"

    def class_names(self, root, cfg, extra):
        return [str(d) for d in range(NUM_CLASSES)]
