"""Shared fixtures of the data tests: real-data paths (skipped when absent) and file writers."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

# <repo>/../shared/data: real event files, never copied into the repository.
SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
NMNIST_ROOT = SHARED_DATA / "nmnist_subset"
DVS_ROOT = SHARED_DATA / "dvs_gesture_mini" / "DvsGesture"


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


class Writers:
    """The writers above, handed to tests as the ``writers`` fixture (no imports from conftest)."""

    AEDAT_HEADER = AEDAT_HEADER
    aedat_packet = staticmethod(aedat_packet)
    nmnist_bytes = staticmethod(nmnist_bytes)
    make_nmnist_tree = staticmethod(make_nmnist_tree)
    make_gesture_tree = staticmethod(make_gesture_tree)


@pytest.fixture
def writers() -> type[Writers]:
    return Writers
