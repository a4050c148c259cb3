"""AEDAT 3.1 decoding of files written by the test, and its errors."""

from __future__ import annotations

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
