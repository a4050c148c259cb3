"""AEDAT 3.1 reader (the DVS128 Gesture file format), vectorized with numpy.

Layout: ASCII header lines starting with ``#`` (the first ``#!AER-DAT3.x``, the
last ``#!END-HEADER\\r\\n``), then packets. Each packet is a 28-byte
little-endian header

    eventType:int16 eventSource:int16 eventSize:int32 eventTSOffset:int32
    eventTSOverflow:int32 eventCapacity:int32 eventNumber:int32 eventValid:int32

followed by ``eventCapacity * eventSize`` payload bytes, of which the first
``eventNumber`` events are real. Polarity events (type 1) are 8 bytes: uint32
data (bit 0 valid, bit 1 polarity, bits 2-16 y, bits 17-31 x) and an int32
timestamp in microseconds; the full time is ``eventTSOverflow << 31 | timestamp``.
Packets of other types are skipped.

The loop runs over packets (hundreds per file), never over events.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from evo_snn.data.errors import DatasetFormatError
from evo_snn.data.events import Events

PACKET_HEADER = struct.Struct("<hhiiiiii")  # 28 bytes
POLARITY_EVENT = 1
POLARITY_EVENT_SIZE = 8
_POLARITY_DTYPE = np.dtype([("data", "<u4"), ("ts", "<u4")])
_END_HEADER = b"#!END-HEADER"


def read_aedat31(path: str | Path, sensor: tuple[int, int] | None = None) -> Events:
    """All polarity events of an AEDAT 3.1 file, in file order.

    Returns Events with t int64 µs, x int32 (0..32767), y int32, p int8 (0/1).
    sensor: optional (height, width); an event with y >= height or x >= width is an error.
    raises DatasetFormatError (unreadable file, bad header, truncated packet,
    coordinate outside ``sensor``).
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DatasetFormatError(f"{path}: cannot read AEDAT file: {e.strerror or e}") from e
    return parse_aedat31(data, str(path), sensor)


def _header_end(data: bytes, name: str) -> int:
    """Byte offset just past ``#!END-HEADER\\r\\n``; raises DatasetFormatError."""
    first_nl = data.find(b"\n")
    first = data[: first_nl if first_nl >= 0 else min(len(data), 40)].rstrip(b"\r")
    if not first.startswith(b"#!AER-DAT3."):
        raise DatasetFormatError(
            f"{name}: byte 0: expected the first line '#!AER-DAT3.x' (an AEDAT 3.1 file), got {first[:40]!r}"
        )
    pos = 0
    while True:
        nl = data.find(b"\n", pos)
        if nl < 0 or not data.startswith(b"#", pos):
            raise DatasetFormatError(
                f"{name}: byte {pos}: expected a '#' header line or '#!END-HEADER\\r\\n'; "
                "the header is not terminated by '#!END-HEADER'"
            )
        # spikingjelly requires exactly b'#!END-HEADER\r\n'; a bare '\n' is accepted too.
        if data[pos:nl].rstrip(b"\r") == _END_HEADER:
            return nl + 1
        pos = nl + 1


def parse_aedat31(data: bytes, name: str = "<bytes>", sensor: tuple[int, int] | None = None) -> Events:
    """Decode AEDAT 3.1 ``data`` (a whole file); ``name`` is used in error messages.

    Returns the polarity events of all type-1 packets, in file order. Every event
    of a polarity packet is kept regardless of its valid bit (bit 0), as
    spikingjelly's ``load_aedat_v3`` does; but only the first ``eventNumber`` events
    of a packet are decoded (spikingjelly decodes all ``eventCapacity``, which is the
    same for the DVS128 Gesture files, where capacity == number).
    The timestamp is read as uint32, like spikingjelly (identical for valid
    31-bit timestamps). raises DatasetFormatError.
    """
    starts, counts, overflows = _polarity_packets(data, _header_end(data, name), name)
    if not starts:
        return Events.empty()
    view = memoryview(data)
    raw = b"".join(view[s : s + n * POLARITY_EVENT_SIZE] for s, n in zip(starts, counts))
    ev = np.frombuffer(raw, dtype=_POLARITY_DTYPE)
    word = ev["data"]
    ovf = np.repeat(np.asarray(overflows, dtype=np.int64), counts)
    t = ev["ts"].astype(np.int64) | (ovf << 31)
    x = ((word >> 17) & 0x7FFF).astype(np.int32)
    y = ((word >> 2) & 0x7FFF).astype(np.int32)
    p = ((word >> 1) & 1).astype(np.int8)
    if sensor is not None:
        _check_sensor(x, y, sensor, starts, counts, name)
    return Events(t=t, x=x, y=y, p=p)


def _polarity_packets(data: bytes, off: int, name: str) -> tuple[list[int], list[int], list[int]]:
    """Walk the packets from byte ``off`` (just past the header) to the end of ``data``:
    (payload offsets, ``eventNumber`` and ``eventTSOverflow`` of each non-empty polarity
    packet), in file order; other packet types are skipped. raises DatasetFormatError
    (truncated header or payload, bad header fields, polarity events not 8 bytes)."""
    total = len(data)
    starts: list[int] = []  # payload offsets of polarity packets
    counts: list[int] = []  # eventNumber of each
    overflows: list[int] = []
    while off < total:
        if total - off < PACKET_HEADER.size:
            raise DatasetFormatError(
                f"{name}: byte {off}: truncated packet header: expected {PACKET_HEADER.size} bytes, "
                f"got {total - off}"
            )
        e_type, _src, e_size, _ts_off, e_ovf, e_cap, e_num, _valid = PACKET_HEADER.unpack_from(data, off)
        if e_size < 0 or e_cap < 0 or e_num < 0 or e_num > e_cap:
            raise DatasetFormatError(
                f"{name}: byte {off}: bad packet header: expected 0 <= eventNumber <= eventCapacity and "
                f"eventSize >= 0, got eventSize={e_size} eventCapacity={e_cap} eventNumber={e_num}"
            )
        if e_ovf < 0:
            raise DatasetFormatError(f"{name}: byte {off}: bad packet header: eventTSOverflow={e_ovf} < 0")
        payload = off + PACKET_HEADER.size
        end = payload + e_cap * e_size
        if end > total:
            raise DatasetFormatError(
                f"{name}: byte {payload}: truncated packet payload: expected eventCapacity*eventSize = "
                f"{e_cap}*{e_size} = {e_cap * e_size} bytes, got {total - payload}"
            )
        if e_type == POLARITY_EVENT and e_num > 0:
            if e_size != POLARITY_EVENT_SIZE:
                raise DatasetFormatError(
                    f"{name}: byte {off}: polarity packet with eventSize={e_size}, expected {POLARITY_EVENT_SIZE}"
                )
            starts.append(payload)
            counts.append(e_num)
            overflows.append(e_ovf)
        off = end
    return starts, counts, overflows


def _check_sensor(x: np.ndarray, y: np.ndarray, sensor: tuple[int, int], starts: list[int], counts: list[int],
                  name: str) -> None:
    """Raise DatasetFormatError at the first event outside ``sensor`` (height, width),
    naming its byte offset in the file (``starts``, ``counts``: the polarity packets of
    ``_polarity_packets``, whose events ``x``, ``y`` [n] are, in order)."""
    height, width = sensor
    bad = np.flatnonzero((x >= width) | (y >= height))
    if bad.size:
        i = int(bad[0])
        cum = np.cumsum(counts)
        k = int(np.searchsorted(cum, i, side="right"))  # packet holding event i
        offset = starts[k] + (i - (int(cum[k - 1]) if k else 0)) * POLARITY_EVENT_SIZE
        raise DatasetFormatError(
            f"{name}: byte {offset}: polarity event at x={int(x[i])}, y={int(y[i])}; "
            f"expected x < {width} and y < {height} for this {height}x{width} sensor"
        )
