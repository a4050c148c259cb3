"""AEDAT 3.1 decoding of files written by the test, and its errors."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from evo_snn.data import DatasetFormatError
from evo_snn.data.aedat import parse_aedat31, read_aedat31


def _file(writers) -> bytes:
    w = writers
    return (
        w.AEDAT_HEADER
        # 2 real polarity events + 1 garbage slot (eventCapacity 3 > eventNumber 2)
        + w.aedat_packet([(5, 7, 1, 1, 100), (127, 0, 0, 0, 101)], capacity=3)
        # a non-polarity packet (type 2, 12-byte events) to skip
        + w.aedat_packet(event_type=2, event_size=12, raw_payload=b"\x01" * 24)
        # timestamps past the 31-bit overflow
        + w.aedat_packet([(0, 127, 1, 1, 5), (64, 32, 0, 1, 0x7FFFFFF0)], overflow=1)
        # an empty polarity packet
        + w.aedat_packet([])
    )


def test_decodes_exact_events(writers, tmp_path):
    path = tmp_path / "t.aedat"
    path.write_bytes(_file(writers))
    ev = read_aedat31(path)
    assert ev.t.tolist() == [100, 101, (1 << 31) | 5, (1 << 31) | 0x7FFFFFF0]
    assert ev.x.tolist() == [5, 127, 0, 64]
    assert ev.y.tolist() == [7, 0, 127, 32]
    assert ev.p.tolist() == [1, 0, 1, 0]  # the event with valid bit 0 is kept, like spikingjelly
    assert ev.t.dtype == np.int64


def test_header_without_cr_and_no_packets(writers):
    ev = parse_aedat31(b"#!AER-DAT3.1\n#!END-HEADER\n", "x")
    assert len(ev) == 0


def test_missing_end_header(writers):
    data = b"#!AER-DAT3.1\r\n#Format: RAW\r\n" + writers.aedat_packet([(1, 1, 1, 1, 1)])
    with pytest.raises(DatasetFormatError, match=r"f\.aedat: byte 28: .*END-HEADER"):
        parse_aedat31(data, "f.aedat")


def test_header_only_comment_lines_without_end(writers):
    with pytest.raises(DatasetFormatError, match="END-HEADER"):
        parse_aedat31(b"#!AER-DAT3.1\r\n#Format: RAW\r\n", "f.aedat")


def test_wrong_first_line(writers):
    with pytest.raises(DatasetFormatError, match=r"byte 0: expected the first line '#!AER-DAT3.x'"):
        parse_aedat31(b"#!AER-DAT2.0\r\n#!END-HEADER\r\n", "f.aedat")


def test_truncated_payload_names_offset(writers, tmp_path):
    good = writers.AEDAT_HEADER + writers.aedat_packet([(1, 1, 1, 1, 1)])
    data = good + writers.aedat_packet([(1, 2, 1, 1, 2), (3, 4, 0, 1, 3)])[:-3]
    payload_at = len(good) + 28
    path = tmp_path / "trunc.aedat"
    path.write_bytes(data)
    with pytest.raises(DatasetFormatError, match=rf"trunc\.aedat: byte {payload_at}: truncated packet payload: expected .* = 16 bytes, got 13"):
        read_aedat31(path)


def test_truncated_packet_header(writers):
    data = writers.AEDAT_HEADER + writers.aedat_packet([(1, 1, 1, 1, 1)]) + b"\x01\x00\x01\x00"
    at = len(data) - 4
    with pytest.raises(DatasetFormatError, match=rf"byte {at}: truncated packet header: expected 28 bytes, got 4"):
        parse_aedat31(data, "f")


def test_number_above_capacity(writers):
    data = writers.AEDAT_HEADER + writers.aedat_packet([(1, 1, 1, 1, 1)], number=2)
    with pytest.raises(DatasetFormatError, match="eventNumber <= eventCapacity"):
        parse_aedat31(data, "f")


def test_sensor_bounds_name_the_event_offset(writers):
    head = writers.AEDAT_HEADER + writers.aedat_packet([(1, 1, 1, 1, 1)])
    data = head + writers.aedat_packet([(2, 2, 1, 1, 2), (200, 3, 1, 1, 3)])
    bad_at = len(head) + 28 + 8
    with pytest.raises(DatasetFormatError, match=rf"byte {bad_at}: polarity event at x=200, y=3"):
        parse_aedat31(data, "f", sensor=(128, 128))
    assert len(parse_aedat31(data, "f")) == 3  # no sensor given: no bounds check


def test_missing_file(tmp_path):
    with pytest.raises(DatasetFormatError, match="cannot read AEDAT file"):
        read_aedat31(tmp_path / "nope.aedat")


@pytest.mark.parametrize(
    "garbage",
    [b"this is not an AEDAT packet, just text bytes" * 2, bytes(range(256)) * 2, b"\x01\x00\x01\x00"],
)
def test_garbage_after_header(writers, garbage):
    at = len(writers.AEDAT_HEADER)
    with pytest.raises(DatasetFormatError, match=rf"f\.aedat: byte {at}: (truncated packet|bad packet header)"):
        parse_aedat31(writers.AEDAT_HEADER + garbage, "f.aedat")


def test_garbage_between_packets(writers):
    head = writers.AEDAT_HEADER + writers.aedat_packet([(1, 1, 1, 1, 1)])
    with pytest.raises(DatasetFormatError, match=rf"byte {len(head)}: "):
        parse_aedat31(head + b"\xff" * 40 + writers.aedat_packet([(1, 1, 1, 1, 2)]), "f")


@pytest.mark.parametrize(
    "data, match",
    [
        (b"", r"byte 0: expected the first line '#!AER-DAT3.x'"),
        (b"#!AER-DAT2.0\r\n# This is a raw AE data file\r\n\x00\x01\x02\x03", r"byte 0: expected .*got b'#!AER-DAT2.0'"),
        (b"#!AER-DAT4.0\r\n#!END-HEADER\r\n", r"got b'#!AER-DAT4.0'"),
        (b"\x89PNG\r\n\x1a\n\x00\x00", r"byte 0: expected the first line"),
        (b"#!AER-DAT3.1\r\nnot a comment line\r\n#!END-HEADER\r\n", r"byte 14: expected a '#' header line"),
    ],
)
def test_not_aedat3_is_rejected(data, match):
    with pytest.raises(DatasetFormatError, match=match):
        parse_aedat31(data, "f.aedat")


def test_polarity_packet_with_wrong_event_size(writers):
    data = writers.AEDAT_HEADER + writers.aedat_packet(event_type=1, event_size=12, raw_payload=b"\x00" * 24)
    with pytest.raises(DatasetFormatError, match=rf"byte {len(writers.AEDAT_HEADER)}: polarity packet with eventSize=12, expected 8"):
        parse_aedat31(data, "f")


def test_negative_sizes_and_overflow(writers):
    h = writers.AEDAT_HEADER
    bad_size = h + struct.pack("<hhiiiiii", 1, 1, -8, 4, 0, 1, 1, 1) + b"\x00" * 8
    with pytest.raises(DatasetFormatError, match="eventSize=-8"):
        parse_aedat31(bad_size, "f")
    bad_ovf = h + writers.aedat_packet([(1, 1, 1, 1, 1)], overflow=-1)
    with pytest.raises(DatasetFormatError, match="eventTSOverflow=-1 < 0"):
        parse_aedat31(bad_ovf, "f")


def test_capacity_padding_is_skipped_and_number_counts(writers):
    # eventCapacity 4, eventNumber 1: three garbage slots (0xab...) that would decode as x=21845
    data = writers.AEDAT_HEADER + writers.aedat_packet([(9, 8, 1, 1, 77)], capacity=4) + writers.aedat_packet([(3, 2, 0, 1, 78)])
    ev = parse_aedat31(data, "f", sensor=(128, 128))
    assert ev.x.tolist() == [9, 3] and ev.t.tolist() == [77, 78]


def test_overflow_applies_per_packet(writers):
    data = (writers.AEDAT_HEADER + writers.aedat_packet([(1, 1, 1, 1, 0x7FFFFFFF)])
            + writers.aedat_packet([(1, 1, 1, 1, 3)], overflow=1) + writers.aedat_packet([(1, 1, 1, 1, 4)], overflow=3))
    assert parse_aedat31(data, "f").t.tolist() == [0x7FFFFFFF, (1 << 31) + 3, (3 << 31) + 4]
