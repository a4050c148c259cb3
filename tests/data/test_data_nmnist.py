"""N-MNIST decoding, folder reading and the real subset."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from evo_snn.config import DataConfig
from evo_snn.data import DatasetFormatError, load_splits
from evo_snn.data.nmnist import decode_bin, read_split, resolve_root

TRAIN_COUNTS = [97, 116, 99, 93, 105, 92, 94, 117, 87, 100]


def test_decodes_exact_events(writers):
    events = [(0, 0, 0, 0), (33, 12, 1, 0x7FFFFF), (7, 33, 0, 0x012345), (20, 1, 1, 65536 + 258)]
    ev = decode_bin(writers.nmnist_bytes(events))
    assert ev.x.tolist() == [0, 33, 7, 20]
    assert ev.y.tolist() == [0, 12, 33, 1]
    assert ev.p.tolist() == [0, 1, 0, 1]
    assert ev.t.tolist() == [0, 0x7FFFFF, 0x012345, 65794]


def test_hand_bytes():
    # x=3, y=4, byte2 = 0b1000_0001 -> p=1, t = 1<<16 | 2<<8 | 3
    ev = decode_bin(bytes([3, 4, 0x81, 2, 3]))
    assert (ev.x[0], ev.y[0], ev.p[0], ev.t[0]) == (3, 4, 1, 66051)


def test_bad_length(writers):
    with pytest.raises(DatasetFormatError, match=r"a\.bin: byte 5: file length 8 is not a multiple of 5"):
        decode_bin(writers.nmnist_bytes([(1, 1, 1, 1)]) + b"\x00\x00\x00", "a.bin")


def test_coordinate_out_of_range(writers):
    data = writers.nmnist_bytes([(1, 1, 1, 1), (2, 2, 0, 2), (34, 0, 0, 3)])
    with pytest.raises(DatasetFormatError, match=r"byte 10: event at x=34, y=0"):
        decode_bin(data, "b.bin")


def test_read_bad_file_in_tree_names_it(writers, tmp_path):
    root = writers.make_nmnist_tree(tmp_path / "nm", {"Train": {0: 1}, "Test": {0: 1}})
    bad = root / "Train" / "0" / "00001.bin"
    bad.write_bytes(bad.read_bytes()[:-1])
    with pytest.raises(DatasetFormatError, match=str(bad)):
        read_split(resolve_root(root), "train", frames=2, split_by="number", downsample=1)


def test_tree_labels_and_sums(writers, tmp_path):
    root = writers.make_nmnist_tree(tmp_path / "nm", {"Train": {0: 2, 3: 1}, "Test": {9: 1}})
    frames, labels = read_split(resolve_root(root), "train", frames=3, split_by="time", downsample=2)
    assert labels.tolist() == [0, 0, 3]
    assert frames.shape == (3, 3, 2, 17, 17)
    expected = [len((root / "Train" / d / f).read_bytes()) // 5 for d, f in [("0", "00001.bin"), ("0", "00002.bin"), ("3", "00001.bin")]]
    assert frames.reshape(3, -1).sum(1).tolist() == expected


def test_root_errors(tmp_path):
    with pytest.raises(DatasetFormatError, match="does not exist; pass --data-root PATH"):
        resolve_root(tmp_path / "missing")
    (tmp_path / "Train").mkdir()
    with pytest.raises(DatasetFormatError, match="missing Test"):
        resolve_root(tmp_path)
    (tmp_path / "Test").mkdir()
    with pytest.raises(DatasetFormatError, match="no .bin files"):
        read_split(resolve_root(tmp_path), "train", frames=1, split_by="number", downsample=1)
    (tmp_path / "Train" / "ten").mkdir()
    with pytest.raises(DatasetFormatError, match="expected only digit folders"):
        read_split(resolve_root(tmp_path), "train", frames=1, split_by="number", downsample=1)


def test_real_subset_loads(nmnist_root, tmp_path):
    cfg = DataConfig(frames=8, cache_dir=str(tmp_path))
    s = load_splits("nmnist", nmnist_root, cfg, seed=0)
    assert (len(s.train) + len(s.val), len(s.test)) == (1000, 100)
    train_counts = [s.train.class_counts(10)[c] + s.val.class_counts(10)[c] for c in range(10)]
    assert train_counts == TRAIN_COUNTS
    assert s.num_classes == 10 and s.frame_shape == (8, 2, 34, 34)
    assert s.train.frames.dtype == torch.uint8 and s.train.labels.dtype == torch.int64  # compact counts
    assert s.train.memory_mapped and s.test.memory_mapped
    assert s.train.frames.shape[1:] == (8, 2, 34, 34)
    # the frames of the first test sample hold exactly the events of its file
    first = sorted((nmnist_root / "Test" / "0").glob("*.bin"))[0]
    assert int(s.test.events_per_sample()[0]) == first.stat().st_size // 5


def _per_event_bin(path) -> dict:
    """N-MNIST decoding one 5-byte event at a time (the bit layout of spikingjelly's load_ATIS_bin)."""
    data = path.read_bytes()
    out = {"t": [], "x": [], "y": [], "p": []}
    for k in range(0, len(data), 5):
        b0, b1, b2, b3, b4 = data[k : k + 5]
        out["x"].append(b0)
        out["y"].append(b1)
        out["p"].append(b2 >> 7)
        out["t"].append(((b2 & 0x7F) << 16) | (b3 << 8) | b4)
    return {key: np.asarray(v) for key, v in out.items()}


@pytest.mark.parametrize("split_by", ["number", "time"])
def test_real_files_through_read_split_equal_spikingjelly(nmnist_root, sj_ref, tmp_path, split_by):
    root = tmp_path / "nm"
    picked = {("Train", "3"): 2, ("Train", "8"): 1, ("Test", "5"): 1}
    for (split, digit), n in picked.items():
        (root / split / digit).mkdir(parents=True)
        for f in sorted((nmnist_root / split / digit).glob("*.bin"))[:n]:
            shutil.copy(f, root / split / digit / f.name)
    frames, labels = read_split(resolve_root(root), "train", frames=6, split_by=split_by, downsample=1)
    assert labels.tolist() == [3, 3, 8]
    files = sorted((root / "Train").glob("*/*.bin"))
    for k, f in enumerate(files):
        ref = sj_ref.integrate(_per_event_bin(f), split_by, 6, 34, 34)
        np.testing.assert_array_equal(frames[k], ref)
        assert frames[k].sum() == f.stat().st_size // 5


def test_a_missing_root_says_where_the_data_comes_from(tmp_path, monkeypatch):
    from evo_snn.data import errors

    with pytest.raises(DatasetFormatError, match=r"garrickorchard\.com/datasets/n-mnist.*Train\.zip and Test\.zip") as e:
        resolve_root(tmp_path / "missing")
    with pytest.raises(DatasetFormatError, match="needs its data files: pass --data-root PATH. N-MNIST"):
        load_splits("nmnist", None, DataConfig(), 0)
    # this project's sample is named where the checkout has one (../shared/data)
    shared = tmp_path / "shared" / "data"
    (shared / "nmnist_subset").mkdir(parents=True)
    monkeypatch.setattr(errors, "shared_data_dirs", lambda: [shared])
    with pytest.raises(DatasetFormatError, match=f"this project's sample is {shared / 'nmnist_subset'}"):
        resolve_root(tmp_path / "missing")
    (tmp_path / "Train").mkdir()
    with pytest.raises(DatasetFormatError, match="missing Test.*garrickorchard.*this project's sample"):
        resolve_root(tmp_path)
    monkeypatch.setattr(errors, "shared_data_dirs", lambda: [])
    with pytest.raises(DatasetFormatError) as e:
        resolve_root(tmp_path / "missing")
    assert "this project's sample" not in str(e.value)
    for dataset, origin in (("dvs_gesture", "DvsGesture.tar.gz"), ("cifar10", "cifar-10-python.tar.gz"),
                            ("cifar100", "cifar-100-python.tar.gz"), ("tiny_imagenet", "tiny-imagenet-200.zip"),
                            ("image_folder", "your own images")):
        with pytest.raises(DatasetFormatError, match="does not exist; pass --data-root PATH") as e:
            load_splits(dataset, tmp_path / "missing", DataConfig(), 0)
        assert origin in str(e.value)
