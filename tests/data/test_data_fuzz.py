"""Fuzz: random byte mutations of valid AEDAT 3.1 / N-MNIST / image files give a result or DatasetFormatError.

Any other exception (IndexError, struct.error, MemoryError, ...) or a hang fails the test.
"""

from __future__ import annotations

import io
import struct

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evo_snn.data import DatasetFormatError
from evo_snn.data.aedat import parse_aedat31
from evo_snn.data.image_folder import decode_image
from evo_snn.data.nmnist import decode_bin


def _aedat() -> bytes:
    header = b"#!AER-DAT3.1\r\n#Format: RAW\r\n#!END-HEADER\r\n"

    def packet(etype, size, events_payload, cap, num, ovf=0):
        return struct.pack("<hhiiiiii", etype, 1, size, 4, ovf, cap, num, num) + events_payload

    def pol(evs):
        return b"".join(struct.pack("<Ii", (x << 17) | (y << 2) | (p << 1) | 1, t) for x, y, p, t in evs)

    return (
        header
        + packet(1, 8, pol([(1, 2, 1, 10), (127, 127, 0, 11), (64, 3, 1, 12)]), 3, 3)
        + packet(2, 12, b"\x05" * 24, 2, 2)
        + packet(1, 8, pol([(5, 6, 0, 13)]) + b"\xab" * 8, 2, 1, ovf=1)
        + packet(1, 8, b"", 0, 0)
    )


def _nmnist() -> bytes:
    out = bytearray()
    for i in range(8):
        x, y, p, t = i * 4, 33 - i * 4, i % 2, 1000 * i + 7
        out += bytes([x, y, (p << 7) | ((t >> 16) & 0x7F), (t >> 8) & 0xFF, t & 0xFF])
    return bytes(out)


def _image(fmt: str) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (8, 6, 3), dtype=np.uint8)).save(buf, format=fmt)
    return buf.getvalue()


AEDAT = _aedat()
NMNIST = _nmnist()
IMAGES = {fmt: _image(fmt) for fmt in ("PNG", "JPEG", "BMP", "WEBP")}


@st.composite
def mutations(draw, data: bytes):
    """Apply 1-4 random edits: flip bits of a byte, set a byte, truncate, insert or delete bytes."""
    buf = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "set", "truncate", "insert", "delete"]))
        pos = draw(st.integers(0, max(len(buf) - 1, 0)))
        if op == "flip" and buf:
            buf[pos] ^= draw(st.integers(1, 255))
        elif op == "set" and buf:
            buf[pos] = draw(st.sampled_from([0x00, 0xFF, 0x7F, 0x80, ord("#"), ord("\n")]))
        elif op == "truncate":
            del buf[pos:]
        elif op == "insert":
            buf[pos:pos] = draw(st.binary(min_size=1, max_size=32))
        elif op == "delete" and buf:
            del buf[pos : pos + draw(st.integers(1, 16))]
    return bytes(buf)


FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def test_unmutated_files_are_valid():
    ev = parse_aedat31(AEDAT, "f", sensor=(128, 128))
    assert ev.t.tolist() == [10, 11, 12, (1 << 31) | 13]
    assert decode_bin(NMNIST, "f").x.tolist() == [0, 4, 8, 12, 16, 20, 24, 28]


@FUZZ
@given(mutations(AEDAT))
def test_aedat_mutations(data):
    try:
        ev = parse_aedat31(data, "fuzz.aedat", sensor=(128, 128))
    except DatasetFormatError as e:
        assert str(e).startswith("fuzz.aedat: byte ")
        return
    assert len(ev.t) == len(ev.x) == len(ev.y) == len(ev.p)
    assert ev.t.dtype == np.int64 and (ev.t >= 0).all()
    assert ((ev.x >= 0) & (ev.x < 128) & (ev.y >= 0) & (ev.y < 128)).all()


@FUZZ
@given(mutations(NMNIST))
def test_nmnist_mutations(data):
    try:
        ev = decode_bin(data, "fuzz.bin")
    except DatasetFormatError as e:
        assert str(e).startswith("fuzz.bin: byte ")
        return
    assert len(ev) == len(data) // 5
    assert ((ev.x < 34) & (ev.y < 34)).all() and ((ev.p == 0) | (ev.p == 1)).all()


@FUZZ
@given(st.binary(max_size=200))
def test_random_bytes(data):
    for parse, name in ((parse_aedat31, "r.aedat"), (decode_bin, "r.bin")):
        try:
            parse(data, name)
        except DatasetFormatError:
            pass


def _check_image(data: bytes, name: str) -> None:
    try:
        img = decode_image(io.BytesIO(data), name=name)
    except DatasetFormatError as e:
        assert str(e).startswith(f"{name}: ")
        return
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[0] == 3


def test_unmutated_images_decode():
    for fmt, data in IMAGES.items():
        img = decode_image(io.BytesIO(data), name=fmt)
        assert img.shape == (3, 8, 6) and img.dtype == np.uint8


@FUZZ
@given(st.sampled_from(sorted(IMAGES)).flatmap(lambda fmt: mutations(IMAGES[fmt]).map(lambda d: (fmt, d))))
def test_image_mutations(case):
    fmt, data = case
    _check_image(data, f"fuzz.{fmt.lower()}")


@FUZZ
@given(st.binary(max_size=200))
def test_random_bytes_as_image(data):
    _check_image(data, "r.png")
