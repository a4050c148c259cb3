"""Slow per-event reference implementations of spikingjelly's DVS128 Gesture pipeline.

Written from spikingjelly's documented algorithm (``load_aedat_v3``, the CSV window
split, ``integrate_events_by_fixed_frames_number``), one event at a time, with no
code shared with the vectorised readers. They exist to check those readers (parity
tests in ``tests/data``) and to time them (``benchmarks/aedat_reader.py``); nothing in
the search uses them.

- ``load_aedat_v3``: skip '#' header lines up to ``b'#!END-HEADER\\r\\n'``; per 28-byte
  packet header read eventType (uint16), eventSize, eventTSOverflow, eventCapacity
  (uint32); read capacity * size bytes; for type-1 packets unpack every event with
  struct: data word and timestamp (uint32), t = timestamp | overflow << 31,
  x = bits 17-31, y = bits 2-16, p = bit 1; append to lists.
- ``split``: every CSV row (np.loadtxt, uint32, header skipped) is a sample, label
  class - 1, holding the events with start <= t < end (a boolean mask, file order kept).
- ``integrate``: spikingjelly's fixed-frames-number segments, then one ``+= 1`` per event.
"""

from __future__ import annotations

import struct

import numpy as np


def load_aedat_v3(path) -> dict[str, np.ndarray]:
    """All polarity events of an AEDAT 3.1 file: {"t", "x", "y", "p"} int arrays, file order."""
    out = {"t": [], "x": [], "y": [], "p": []}
    with open(path, "rb") as f:
        line = f.readline()
        while line.startswith(b"#"):
            if line == b"#!END-HEADER\r\n":
                break
            line = f.readline()
        while True:
            header = f.read(28)
            if not header:
                break
            e_type = struct.unpack("H", header[0:2])[0]
            e_size = struct.unpack("I", header[4:8])[0]
            e_overflow = struct.unpack("I", header[12:16])[0]
            e_capacity = struct.unpack("I", header[16:20])[0]
            payload = f.read(e_capacity * e_size)
            if e_type != 1:
                continue
            for k in range(0, len(payload), e_size):
                word = struct.unpack("I", payload[k : k + 4])[0]
                stamp = struct.unpack("I", payload[k + 4 : k + 8])[0]
                out["t"].append(stamp | e_overflow << 31)
                out["x"].append((word >> 17) & 0x7FFF)
                out["y"].append((word >> 2) & 0x7FFF)
                out["p"].append((word >> 1) & 1)
    return {k: np.asarray(v) for k, v in out.items()}


def split(events: dict[str, np.ndarray], csv_path) -> list[tuple[int, dict[str, np.ndarray]]]:
    """[(label, events of the window start <= t < end)] per CSV row, in file order."""
    rows = np.loadtxt(csv_path, dtype=np.uint32, delimiter=",", skiprows=1).reshape(-1, 3)
    samples = []
    for cls, start, end in rows:
        mask = np.logical_and(events["t"] >= start, events["t"] < end)
        samples.append((int(cls) - 1, {k: v[mask] for k, v in events.items()}))
    return samples


def integrate(ev: dict[str, np.ndarray], split_by: str, frames: int, height: int, width: int) -> np.ndarray:
    """[frames, 2, height, width] float64 counts; raises IndexError on an empty time bin, as spikingjelly."""
    t = ev["t"]
    n = t.size
    j_l = np.zeros(frames, dtype=int)
    j_r = np.zeros(frames, dtype=int)
    if split_by == "number":
        di = n // frames
        for i in range(frames):
            j_l[i] = i * di
            j_r[i] = j_l[i] + di
    else:
        dt = (t[-1] - t[0]) // frames
        idx = np.arange(n)
        for i in range(frames):
            t_l = dt * i + t[0]
            hit = idx[np.logical_and(t >= t_l, t < t_l + dt)]
            j_l[i] = hit[0]  # IndexError on an empty bin, as spikingjelly
            j_r[i] = hit[-1] + 1
    j_r[-1] = n
    out = np.zeros((frames, 2, height, width))
    xs, ys, ps = ev["x"].tolist(), ev["y"].tolist(), ev["p"].tolist()
    for i in range(frames):
        for k in range(j_l[i], j_r[i]):
            out[i, 1 if ps[k] else 0, ys[k], xs[k]] += 1
    return out
