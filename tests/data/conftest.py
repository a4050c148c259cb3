"""Shared fixtures of the data tests: real-data paths (skipped when absent) and file writers."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from evo_snn.data import reference

# <repo>/../shared/data: real event files, never copied into the repository.
SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
NMNIST_ROOT = SHARED_DATA / "nmnist_subset"
DVS_ROOT = SHARED_DATA / "dvs_gesture_mini" / "DvsGesture"
CIFAR10_JPEG_ROOT = SHARED_DATA / "cifar10_jpeg"


@pytest.fixture
def nmnist_root() -> Path:
    if not (NMNIST_ROOT / "Train").is_dir():
        pytest.skip(f"real N-MNIST subset not found at {NMNIST_ROOT} (../shared/data is absent)")
    return NMNIST_ROOT


@pytest.fixture
def dvs_root() -> Path:
    if not (DVS_ROOT / "trials_to_train.txt").is_file():
        pytest.skip(f"real DVS128 Gesture fixture not found at {DVS_ROOT} (../shared/data is absent)")
    return DVS_ROOT


@pytest.fixture
def cifar10_jpeg_root() -> Path:
    if not (CIFAR10_JPEG_ROOT / "train").is_dir():
        pytest.skip(f"real CIFAR-10 JPEG folder not found at {CIFAR10_JPEG_ROOT} (../shared/data is absent)")
    return CIFAR10_JPEG_ROOT


# ----------------------------------------------------------------- writers
AEDAT_HEADER = b"#!AER-DAT3.1\r\n#Format: RAW\r\n#Source 1: DVS128\r\n#!END-HEADER\r\n"


def aedat_packet(
    events: list[tuple[int, int, int, int, int]] | None = None,
    *,
    event_type: int = 1,
    overflow: int = 0,
    capacity: int | None = None,
    event_size: int = 8,
    raw_payload: bytes | None = None,
    number: int | None = None,
) -> bytes:
    """One AEDAT 3.1 packet. events: (x, y, p, valid, timestamp) polarity events.

    capacity > len(events) pads with garbage events that a reader must ignore.
    """
    events = events or []
    if raw_payload is None:
        cap = len(events) if capacity is None else capacity
        payload = b"".join(
            struct.pack("<Ii", (x << 17) | (y << 2) | (p << 1) | valid, ts) for x, y, p, valid, ts in events
        )
        payload += b"\xab" * ((cap - len(events)) * event_size)  # garbage beyond eventNumber
        num = len(events) if number is None else number
    else:
        payload = raw_payload
        cap = len(raw_payload) // event_size if capacity is None else capacity
        num = cap if number is None else number
    header = struct.pack("<hhiiiiii", event_type, 1, event_size, 4, overflow, cap, num, num)
    return header + payload


def nmnist_bytes(events: list[tuple[int, int, int, int]]) -> bytes:
    """N-MNIST encoding of (x, y, p, t) events: 5 bytes each, big-endian bit fields."""
    out = bytearray()
    for x, y, p, t in events:
        out += bytes([x, y, (p << 7) | ((t >> 16) & 0x7F), (t >> 8) & 0xFF, t & 0xFF])
    return bytes(out)


def make_nmnist_tree(root: Path, per_digit: dict[str, dict[int, int]], seed: int = 0) -> Path:
    """A tiny N-MNIST folder: per_digit = {'Train': {digit: files}, 'Test': {...}}; random events."""
    rng = np.random.default_rng(seed)
    for split, digits in per_digit.items():
        for digit, n in digits.items():
            d = root / split / str(digit)
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                k = int(rng.integers(20, 60))
                t = np.sort(rng.integers(0, 300_000, k))
                ev = [(int(rng.integers(0, 34)), int(rng.integers(0, 34)), int(rng.integers(0, 2)), int(tt)) for tt in t]
                (d / f"{i + 1:05d}.bin").write_bytes(nmnist_bytes(ev))
    return root


def make_gesture_tree(root: Path) -> Path:
    """A tiny DvsGesture folder: two train trials, one test trial, known windows.

    trial A (train): events at t = 0..99 (x = t % 128, y = 2 * (t % 64), p = t % 2) in
    two packets; labels class 3 for [10, 30), class 1 for [50, 90).
    trial B (train): events at t = 1000..1019; class 11 for [1000, 1020).
    trial C (test): events at t = 5..14; class 2 for [5, 15).
    """
    root.mkdir(parents=True, exist_ok=True)

    def events(ts):
        return [(t % 128, (2 * t) % 128, t % 2, 1, t) for t in ts]

    (root / "tA.aedat").write_bytes(AEDAT_HEADER + aedat_packet(events(range(0, 50))) + aedat_packet(events(range(50, 100))))
    (root / "tA_labels.csv").write_text("class,startTime_usec,endTime_usec\r\n3,10,30\r\n1,50,90\r\n")
    (root / "tB.aedat").write_bytes(AEDAT_HEADER + aedat_packet(events(range(1000, 1020))))
    (root / "tB_labels.csv").write_text("class,startTime_usec,endTime_usec\n11,1000,1020\n")
    (root / "tC.aedat").write_bytes(AEDAT_HEADER + aedat_packet(events(range(5, 15))))
    (root / "tC_labels.csv").write_text("class,startTime_usec,endTime_usec\n2,5,15\n")
    (root / "trials_to_train.txt").write_text("tA.aedat\r\n\r\n  tB.aedat  \r\n")
    (root / "trials_to_test.txt").write_text("tC.aedat\n")
    return root


def write_trial(root: Path, name: str, events, rows, *, packet_size: int = 50, overflow_at: int | None = None) -> None:
    """Write ``<name>.aedat`` (polarity packets of ``packet_size`` events, a non-polarity packet and an
    empty packet in between) and ``<name>_labels.csv`` (``rows``: (class, start, end)).

    events: (x, y, p, t) with t < 2**31 * 2; events from index ``overflow_at`` on are written
    with eventTSOverflow = 1 and t - 2**31 as timestamp.
    """
    packets = [aedat_packet(event_type=2, event_size=12, raw_payload=b"\x07" * 36)]
    for start in range(0, len(events), packet_size):
        chunk = events[start : start + packet_size]
        ovf = 1 if overflow_at is not None and start >= overflow_at else 0
        packets.append(aedat_packet([(x, y, p, 1, t - (ovf << 31)) for x, y, p, t in chunk], overflow=ovf))
        if start == 0:
            packets.append(aedat_packet([]))
    (root / f"{name}.aedat").write_bytes(AEDAT_HEADER + b"".join(packets))
    lines = ["class,startTime_usec,endTime_usec"] + [f"{c},{s},{e}" for c, s, e in rows]
    (root / f"{name}_labels.csv").write_text("\r\n".join(lines) + "\r\n")


def cifar_image_rows(n: int, seed: int) -> np.ndarray:
    """``[n, 3072]`` uint8 rows in the CIFAR layout (1024 R, 1024 G, 1024 B, each 32x32 row-major)."""
    return np.random.default_rng(seed).integers(0, 256, (n, 3072), dtype=np.uint8)


def make_cifar_tree(root: Path, variant: str = "cifar10", per_batch: int = 4, n_test: int = 6,
                    seed: int = 0, bytes_keys: bool = False, protocol: int = 2) -> Path:
    """A tiny CIFAR folder in the original format: ``root/cifar-10-batches-py/`` (data_batch_1..5,
    test_batch, batches.meta) or ``root/cifar-100-python/`` (train, test, meta; fine_labels).

    Each batch is a pickled dict (protocol 2, like the originals) with ``data`` uint8
    ``[n, 3072]`` and a list of int labels; labels cycle through the classes.
    bytes_keys: dict keys as bytes (as a python-2 pickle read with encoding='bytes').
    """
    import pickle

    def key(k):
        return k.encode() if bytes_keys else k

    def dump(path, d):
        path.write_bytes(pickle.dumps({key(k): v for k, v in d.items()}, protocol=protocol))

    if variant == "cifar10":
        folder = root / "cifar-10-batches-py"
        folder.mkdir(parents=True)
        for b in range(1, 6):
            labels = [(b * per_batch + i) % 10 for i in range(per_batch)]
            dump(folder / f"data_batch_{b}", {"batch_label": f"training batch {b} of 5", "labels": labels,
                                              "data": cifar_image_rows(per_batch, seed + b),
                                              "filenames": [f"img_{b}_{i}.png" for i in range(per_batch)]})
        dump(folder / "test_batch", {"batch_label": "testing batch 1 of 1", "labels": [i % 10 for i in range(n_test)],
                                     "data": cifar_image_rows(n_test, seed + 99), "filenames": []})
        dump(folder / "batches.meta", {"label_names": [f"class{i}" for i in range(10)], "num_vis": 3072,
                                       "num_cases_per_batch": per_batch})
    else:
        folder = root / "cifar-100-python"
        folder.mkdir(parents=True)
        n_train = 5 * per_batch
        dump(folder / "train", {"batch_label": "training batch 1 of 1", "fine_labels": [(7 * i) % 100 for i in range(n_train)],
                                "coarse_labels": [i % 20 for i in range(n_train)], "data": cifar_image_rows(n_train, seed + 1),
                                "filenames": []})
        dump(folder / "test", {"batch_label": "testing batch 1 of 1", "fine_labels": [(3 * i) % 100 for i in range(n_test)],
                               "coarse_labels": [i % 20 for i in range(n_test)], "data": cifar_image_rows(n_test, seed + 2),
                               "filenames": []})
        dump(folder / "meta", {"fine_label_names": [f"f{i}" for i in range(100)],
                               "coarse_label_names": [f"c{i}" for i in range(20)]})
    return folder


def make_tiny_imagenet_tree(root: Path, wnids=("n02", "n01", "n03"), per_class: int = 3, n_val: int = 5,
                            seed: int = 0) -> Path:
    """A tiny ``tiny-imagenet-200`` folder: wnids.txt (unsorted), train/<wnid>/images/<wnid>_<i>.JPEG
    (+ <wnid>_boxes.txt), val/images/val_<i>.JPEG + val/val_annotations.txt (tab-separated).

    Images are 64x64 JPEGs of smooth random colours; ``train`` image 0 of the first wnid is
    grayscale (mode 'L'), as some real ones are. Val image i has wnid ``wnids[i % len]``.
    """
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder = root / "tiny-imagenet-200"

    def image(gray=False):
        base = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        big = np.kron(base, np.ones((8, 8, 1), dtype=np.uint8))
        img = Image.fromarray(big, "RGB")
        return img.convert("L") if gray else img

    for k, w in enumerate(wnids):
        d = folder / "train" / w / "images"
        d.mkdir(parents=True)
        for i in range(per_class):
            image(gray=(k == 0 and i == 0)).save(d / f"{w}_{i}.JPEG", quality=95)
        (folder / "train" / w / f"{w}_boxes.txt").write_text("".join(f"{w}_{i}.JPEG\t0\t0\t63\t63\n" for i in range(per_class)))
    (folder / "val" / "images").mkdir(parents=True)
    lines = []
    for i in range(n_val):
        image().save(folder / "val" / "images" / f"val_{i}.JPEG", quality=95)
        lines.append(f"val_{i}.JPEG\t{wnids[i % len(wnids)]}\t1\t2\t60\t61")
    (folder / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    (folder / "test" / "images").mkdir(parents=True)
    image().save(folder / "test" / "images" / "test_0.JPEG")
    (folder / "wnids.txt").write_text("\n".join(wnids) + "\n")
    return folder


def make_image_folder(root: Path, classes=("cat", "ant", "bee"), per_class: dict | None = None,
                      size: tuple[int, int] = (6, 5), fmt: str = "PNG", seed: int = 0) -> dict[str, list]:
    """A tiny image-folder data set: ``root/{train,test}/<class>/<i>.<ext>`` of random RGB images.

    per_class: images per class and split (default train 4, test 2); size: (H, W);
    fmt: a Pillow format ('PNG' is lossless, so tests can compare pixels exactly).
    Returns ``{split: [(path, class name, uint8 [3, H, W] array), ...]}`` in the reader's order
    (classes sorted, then file names).
    """
    from PIL import Image

    per_class = per_class or {"train": 4, "test": 2}
    ext = {"PNG": "png", "JPEG": "jpg", "BMP": "bmp", "WEBP": "webp"}[fmt]
    rng = np.random.default_rng(seed)
    out: dict[str, list] = {}
    for split, n in per_class.items():
        rows = []
        for c in sorted(classes):
            d = root / split / c
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                arr = rng.integers(0, 256, (size[0], size[1], 3), dtype=np.uint8)
                path = d / f"{i:03d}.{ext}"
                Image.fromarray(arr, "RGB").save(path, format=fmt, **({"lossless": True} if fmt == "WEBP" else {}))
                rows.append((path, c, arr.transpose(2, 0, 1)))
        out[split] = rows
    return out


class SpikingjellyReference:
    """spikingjelly's DVS128 Gesture pipeline, per event (``evo_snn.data.reference``)."""

    load_aedat_v3 = staticmethod(reference.load_aedat_v3)
    split = staticmethod(reference.split)
    integrate = staticmethod(reference.integrate)


class Writers:
    """The writers above, handed to tests as the ``writers`` fixture (no imports from conftest)."""

    AEDAT_HEADER = AEDAT_HEADER
    aedat_packet = staticmethod(aedat_packet)
    nmnist_bytes = staticmethod(nmnist_bytes)
    make_nmnist_tree = staticmethod(make_nmnist_tree)
    make_gesture_tree = staticmethod(make_gesture_tree)
    write_trial = staticmethod(write_trial)
    make_cifar_tree = staticmethod(make_cifar_tree)
    make_tiny_imagenet_tree = staticmethod(make_tiny_imagenet_tree)
    make_image_folder = staticmethod(make_image_folder)
    cifar_image_rows = staticmethod(cifar_image_rows)


@pytest.fixture
def writers() -> type[Writers]:
    return Writers


@pytest.fixture(scope="session")
def sj_ref() -> type[SpikingjellyReference]:
    return SpikingjellyReference
