"""DVS128 Gesture: folder reading, label windows, hostile inputs, the real mini fixture."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from evo_snn.config import DataConfig
from evo_snn.data import DatasetFormatError, load_splits
from evo_snn.data.aedat import read_aedat31
from evo_snn.data.dvs_gesture import read_labels_csv, read_split, resolve_root


def _cfg(tmp_path, **kw):
    return DataConfig(cache_dir=str(tmp_path / "cache"), **kw)


def test_tiny_tree_windows_and_labels(writers, tmp_path):
    root = writers.make_gesture_tree(tmp_path / "DvsGesture")
    frames, labels = read_split(resolve_root(root), "train", frames=2, split_by="number", downsample=1)
    assert labels.tolist() == [2, 0, 10]  # classes 3, 1, 11 -> 0-based
    assert frames.shape == (3, 2, 2, 128, 128)
    assert frames.reshape(3, -1).sum(1).tolist() == [20, 40, 20]  # [10,30), [50,90), [1000,1020)
    # window [10, 30), 2 frames by number: t = 10..19 then 20..29; event t -> x = t, y = 2t, p = t % 2
    f0 = frames[0, 0]
    assert f0[0, 20, 10] == 1 and f0[1, 22, 11] == 1 and f0[:, :, 20:].sum() == 0
    assert frames[0, 1][0, 40, 20] == 1 and frames[0, 1].sum() == 10
    test_frames, test_labels = read_split(resolve_root(root), "test", frames=1, split_by="time", downsample=4)
    assert test_labels.tolist() == [1] and test_frames.shape == (1, 1, 2, 32, 32) and test_frames.sum() == 10


def test_parent_folder_is_accepted(writers, tmp_path):
    writers.make_gesture_tree(tmp_path / "data" / "DvsGesture")
    assert resolve_root(tmp_path / "data") == (tmp_path / "data" / "DvsGesture").resolve()
    s = load_splits("dvs_gesture", tmp_path / "data", _cfg(tmp_path, frames=2, downsample=8), seed=0)
    assert s.num_classes == 11 and s.frame_shape == (2, 2, 16, 16)
    assert len(s.train) + len(s.val) == 3 and len(s.test) == 1


@pytest.mark.parametrize(
    "text, match",
    [
        ("klass,startTime_usec,endTime_usec\n1,0,10\n", r"line 1: header is missing column\(s\) \['class'\]"),
        ("class,startTime_usec,endTime_usec\n1,0,10\n2,abc,20\n", r"line 3: column startTime_usec: expected an integer, got 'abc'"),
        ("class,startTime_usec,endTime_usec\n12,0,10\n", r"line 2: class 12 outside 1-11"),
        ("class,startTime_usec,endTime_usec\n0,0,10\n", r"line 2: class 0 outside 1-11"),
        ("class,startTime_usec,endTime_usec\n1,50,10\n", r"line 2: expected 0 <= startTime_usec <= endTime_usec"),
        ("class,startTime_usec,endTime_usec\n1,50\n", r"line 2: expected 3 comma-separated fields, got 2"),
        ("class,startTime_usec,endTime_usec\n\n", r"no label rows"),
        ("", r"line 1: expected the header"),
    ],
)
def test_bad_csv(tmp_path, text, match):
    path = tmp_path / "x_labels.csv"
    path.write_text(text)
    with pytest.raises(DatasetFormatError, match=match) as e:
        read_labels_csv(path)
    assert str(path) in str(e.value)


def test_csv_columns_by_name(tmp_path):
    path = tmp_path / "x_labels.csv"
    path.write_text("startTime_usec,class,endTime_usec\r\n5,4,9\r\n")
    (w,) = read_labels_csv(path)
    assert (w.label, w.start_us, w.end_us, w.line) == (3, 5, 9, 2)


def test_empty_window_names_file_and_line(writers, tmp_path):
    root = writers.make_gesture_tree(tmp_path / "g")
    (root / "tA_labels.csv").write_text("class,startTime_usec,endTime_usec\n3,10,30\n4,200,300\n")
    with pytest.raises(DatasetFormatError, match=r"tA_labels\.csv: line 3: window \[200, 300\) us holds no events"):
        read_split(resolve_root(root), "train", frames=2, split_by="number", downsample=1)


@pytest.mark.parametrize("missing", ["tB.aedat", "tB_labels.csv"])
def test_missing_trial_file(writers, tmp_path, missing):
    root = writers.make_gesture_tree(tmp_path / "g")
    (root / missing).unlink()
    with pytest.raises(DatasetFormatError, match=rf"{missing}: not found; trial 'tB.aedat' is listed in .*trials_to_train.txt"):
        load_splits("dvs_gesture", root, _cfg(tmp_path), seed=0)


def test_bad_trial_list_line(writers, tmp_path):
    root = writers.make_gesture_tree(tmp_path / "g")
    (root / "trials_to_test.txt").write_text("tC.aedat\ntC.dat\n")
    with pytest.raises(DatasetFormatError, match=r"trials_to_test.txt: line 2: expected a file name '<trial>.aedat'"):
        load_splits("dvs_gesture", root, _cfg(tmp_path), seed=0)


def test_truncated_aedat_in_tree(writers, tmp_path):
    root = writers.make_gesture_tree(tmp_path / "g")
    data = (root / "tC.aedat").read_bytes()
    (root / "tC.aedat").write_bytes(data[:-5])
    with pytest.raises(DatasetFormatError, match=r"tC\.aedat: byte \d+: truncated packet payload"):
        load_splits("dvs_gesture", root, _cfg(tmp_path), seed=0)


def test_missing_root(tmp_path):
    with pytest.raises(DatasetFormatError, match="does not exist; pass --data-root PATH"):
        load_splits("dvs_gesture", tmp_path / "nope", _cfg(tmp_path), seed=0)
    with pytest.raises(DatasetFormatError, match="trials_to_train.txt and trials_to_test.txt"):
        load_splits("dvs_gesture", tmp_path, _cfg(tmp_path), seed=0)
    with pytest.raises(DatasetFormatError, match="pass --data-root PATH"):
        load_splits("dvs_gesture", None, _cfg(tmp_path), seed=0)


def test_real_mini_fixture(dvs_root, tmp_path):
    cfg = _cfg(tmp_path, frames=4, split_by="time", downsample=4)
    root = resolve_root(dvs_root.parent)
    for split in ("train", "test"):
        frames, labels = read_split(root, split, frames=4, split_by="time", downsample=4, progress=False)
        assert frames.shape == (10, 4, 2, 32, 32) and labels.tolist() == list(range(10))
    with pytest.warns(UserWarning, match="single training sample"):
        s = load_splits("dvs_gesture", dvs_root.parent, cfg, seed=0)
    # the trials lists give 10 train and 10 test windows, classes 0-9; every class has one
    # training sample, so validation falls back to one random held-out training window
    assert (len(s.train), len(s.val), len(s.test)) == (9, 1, 10)
    assert sorted(s.train.labels.tolist() + s.val.labels.tolist()) == list(range(10))
    assert s.test.labels.tolist() == list(range(10))
    assert s.num_classes == 11 and s.frame_shape == (4, 2, 32, 32)
    assert s.train.frames.dtype in (torch.uint8, torch.int16) and s.train.memory_mapped
    # frame totals equal spikingjelly's window selection start <= t < end on the decoded file
    ev = read_aedat31(dvs_root / "user01_fluorescent.aedat")
    windows = read_labels_csv(dvs_root / "user01_fluorescent_labels.csv")
    expected = [int(np.count_nonzero((ev.t >= w.start_us) & (ev.t < w.end_us))) for w in windows]
    got = torch.cat([s.train.events_per_sample(), s.val.events_per_sample()])[
        torch.argsort(torch.cat([s.train.labels, s.val.labels]))]
    assert got.tolist() == expected
    assert min(expected) > 10_000
