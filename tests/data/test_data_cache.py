"""The on-disk frame cache: layout, hits, misses on any change, memory maps, pickling, failures."""

from __future__ import annotations

import json
import os
import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from evo_snn.config import DataConfig
from evo_snn.data import DatasetFormatError, FrameSet, cache, dvs_gesture, load_splits, nmnist
from evo_snn.data.cache import default_cache_dir


def _boom(*args, **kwargs):
    raise AssertionError("parser called although the cache should have been hit")


def _folders(cache_dir: Path) -> list[Path]:
    return sorted(p for p in cache_dir.iterdir() if p.is_dir())


@pytest.fixture
def tree(writers, tmp_path) -> Path:
    return writers.make_nmnist_tree(tmp_path / "nm", {"Train": {0: 3, 1: 3}, "Test": {0: 1, 1: 1}})


def test_layout_is_uncompressed_npy_per_array(tree, tmp_path):
    cache_dir = tmp_path / "cache"
    s = load_splits("nmnist", tree, DataConfig(frames=4, cache_dir=str(cache_dir)), seed=0)
    (folder,) = _folders(cache_dir)
    assert folder.name.startswith("nmnist-")
    assert sorted(p.name for p in folder.iterdir()) == [
        "meta.json", "test_frames.npy", "test_labels.npy", "train_frames.npy", "train_labels.npy"]
    frames = np.load(folder / "train_frames.npy", mmap_mode="r")  # plain .npy: memory-mappable
    assert isinstance(frames, np.memmap) and frames.dtype == np.uint8 and frames.shape == (6, 4, 2, 34, 34)
    labels = np.load(folder / "train_labels.npy", mmap_mode="r")
    assert labels.dtype == np.int64 and labels.tolist() == [0, 0, 0, 1, 1, 1]
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["format_version"] == cache.FORMAT_VERSION and meta["arrays"]["train_frames"] == [[6, 4, 2, 34, 34], "|u1"]
    assert meta["settings"] == {"frames": 4, "split_by": "number", "downsample": 1}
    # the FrameSets read the cache files (memory-mapped), and hold exactly their content
    assert s.test.memory_mapped and s.train.memory_mapped
    np.testing.assert_array_equal(s.test.frames.numpy(), np.load(folder / "test_frames.npy"))
    assert not any(".tmp-" in p.name for p in cache_dir.iterdir())  # atomic writes leave no temp folder


def test_second_load_hits_cache_and_changed_setting_misses(tree, tmp_path, monkeypatch):
    cache_dir = tmp_path / "cache"
    cfg = DataConfig(frames=4, cache_dir=str(cache_dir))
    first = load_splits("nmnist", tree, cfg, seed=0)
    with monkeypatch.context() as m:
        m.setattr(nmnist, "read_bin", _boom)
        second = load_splits("nmnist", tree, cfg, seed=0)
        assert torch.equal(first.train.frames, second.train.frames)
        assert torch.equal(first.test.frames, second.test.frames)
        assert torch.equal(first.val.labels, second.val.labels)
        # another seed or augmentation only changes the validation split / batches: still a hit
        load_splits("nmnist", tree, cfg, seed=1)
        load_splits("nmnist", tree, DataConfig(frames=4, cache_dir=str(cache_dir), aug_event_drop=0.5), seed=0)
        for changed in (DataConfig(frames=5, cache_dir=str(cache_dir)),
                        DataConfig(frames=4, split_by="time", cache_dir=str(cache_dir)),
                        DataConfig(frames=4, downsample=2, cache_dir=str(cache_dir))):
            with pytest.raises(AssertionError, match="parser called"):
                load_splits("nmnist", tree, changed, seed=0)


def test_changed_content_with_same_size_and_mtime_is_never_stale(tree, tmp_path, writers):
    cfg = DataConfig(frames=1, cache_dir=str(tmp_path / "cache"))
    f = tree / "Test" / "1" / "00001.bin"
    first = load_splits("nmnist", tree, cfg, seed=0)
    st = f.stat()
    # same length, same mtime, different events: every event moved to pixel (0, 0), polarity 0
    n = st.st_size // 5
    f.write_bytes(writers.nmnist_bytes([(0, 0, 0, i) for i in range(n)]))
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert f.stat().st_size == st.st_size and f.stat().st_mtime_ns == st.st_mtime_ns
    second = load_splits("nmnist", tree, cfg, seed=0)
    assert int(second.test.frames[1, 0, 0, 0, 0]) == min(n, 255) and int(second.test.frames[1].sum()) == min(n, 255)
    assert not torch.equal(first.test.frames[1], second.test.frames[1])
    assert len(_folders(tmp_path / "cache")) == 2
    # a shorter file misses too
    f.write_bytes(f.read_bytes()[:-5])
    third = load_splits("nmnist", tree, cfg, seed=0)
    assert third.test.events_per_sample()[1] == n - 1


def test_checksums_are_remembered_for_settled_files_only(tree, tmp_path, monkeypatch):
    cache_dir = tmp_path / "cache"
    cfg = DataConfig(frames=2, cache_dir=str(cache_dir))
    calls = []
    real = cache.file_digest
    monkeypatch.setattr(cache, "file_digest", lambda p: calls.append(p) or real(p))
    load_splits("nmnist", tree, cfg, seed=0)
    assert len(calls) == 8 and (cache_dir / "nmnist-checksums.json").is_file()
    load_splits("nmnist", tree, cfg, seed=0)
    assert len(calls) == 16  # files modified < RACY_S before hashing are hashed again
    monkeypatch.setattr(cache, "RACY_S", -1e9)  # pretend every file had settled long ago
    load_splits("nmnist", tree, cfg, seed=0)
    n = len(calls)
    load_splits("nmnist", tree, cfg, seed=0)
    assert len(calls) == n  # served from the sidecar
    f = tree / "Train" / "0" / "00002.bin"
    st = f.stat()
    f.write_bytes(f.read_bytes()[5:] + f.read_bytes()[:5])  # same size; restore mtime
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    load_splits("nmnist", tree, cfg, seed=0)
    assert calls[n:] == [f]  # ctime changed: only that file is hashed again


def test_dvs_gesture_cache_hit_and_changed_label(writers, tmp_path, monkeypatch):
    root = writers.make_gesture_tree(tmp_path / "g")
    cfg = DataConfig(frames=2, downsample=4, cache_dir=str(tmp_path / "c"))
    with pytest.warns(UserWarning, match="single training sample"):
        a = load_splits("dvs_gesture", root, cfg, seed=0)
    with monkeypatch.context() as m:
        m.setattr(dvs_gesture, "read_aedat31", _boom)
        with pytest.warns(UserWarning, match="single training sample"):
            b = load_splits("dvs_gesture", root, cfg, seed=0)
    assert torch.equal(a.test.frames, b.test.frames)
    csv = root / "tC_labels.csv"
    csv.write_text(csv.read_text().replace("\n2,", "\n7,"))  # same size, another class
    with pytest.warns(UserWarning, match="single training sample"):
        c = load_splits("dvs_gesture", root, cfg, seed=0)
    assert a.test.labels.tolist() == [1] and c.test.labels.tolist() == [6]


def test_frameset_pickles_as_a_path_and_reopens_the_memory_map(tree, tmp_path):
    s = load_splits("nmnist", tree, DataConfig(frames=4, cache_dir=str(tmp_path / "c"), val_fraction=0.34), seed=0)
    for fs in (s.train, s.val, s.test, s.train.subset([2, 0])):
        blob = pickle.dumps(fs)
        assert len(blob) < 3000  # path + index + labels, no frames (a frame alone is 9,248 bytes)
        back = pickle.loads(blob)
        assert back.memory_mapped and len(back) == len(fs)
        assert torch.equal(back.frames, fs.frames) and torch.equal(back.labels, fs.labels)
        assert torch.equal(back.to_seq(back.frames), fs.to_seq(fs.frames))
    assert s.train.subset([2, 0]).labels.tolist() == s.train.labels[[2, 0]].tolist()


def test_pickled_frameset_fails_clearly_when_its_cache_file_is_gone(tree, tmp_path):
    s = load_splits("nmnist", tree, DataConfig(frames=2, cache_dir=str(tmp_path / "c")), seed=0)
    blob = pickle.dumps(s.test)
    (folder,) = _folders(tmp_path / "c")
    (folder / "test_frames.npy").unlink()
    with pytest.raises(DatasetFormatError, match=r"test_frames\.npy: cannot open the frame cache file"):
        pickle.loads(blob)


def test_batches_equal_through_tensordataset_and_frameset(tree, tmp_path):
    s = load_splits("nmnist", tree, DataConfig(frames=3, cache_dir=str(tmp_path / "c")), seed=0)
    fs = s.train
    a = list(DataLoader(TensorDataset(fs.frames, fs.labels), batch_size=2, shuffle=True,
                        generator=torch.Generator().manual_seed(3)))
    b = list(DataLoader(fs, batch_size=2, shuffle=True, generator=torch.Generator().manual_seed(3)))
    assert len(a) == len(b) == 3
    for (xa, ya), (xb, yb) in zip(a, b):
        assert torch.equal(xa, xb) and torch.equal(ya, yb) and xb.dtype == torch.uint8
    x, y = fs[1]
    assert torch.equal(x, fs.frames[1]) and int(y) == int(fs.labels[1])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "non-writable array" warning from torch
        fs.to_seq(fs.frames[:2])
        pickle.loads(pickle.dumps(s.test)).frames


def test_unwritable_cache_warns_and_continues(tree, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    cfg = DataConfig(frames=2, cache_dir=str(blocker / "cache"))
    with pytest.warns(UserWarning, match="cannot write the frame cache"):
        s = load_splits("nmnist", tree, cfg, seed=0)
    assert len(s.train) + len(s.val) == 6 and len(s.test) == 2
    assert not s.train.memory_mapped
    back = pickle.loads(pickle.dumps(s.train))  # in memory: the frames travel with the pickle
    assert torch.equal(back.frames, s.train.frames) and int(back.frames.sum()) > 0


def _replace(path: Path, data: bytes) -> None:
    """Swap in a new file (a new inode): truncating a file that is memory-mapped would crash its readers."""
    path.unlink()
    path.write_bytes(data)


def test_corrupt_cache_warns_and_rebuilds(tree, tmp_path):
    cache_dir = tmp_path / "cache"
    cfg = DataConfig(frames=2, cache_dir=str(cache_dir))
    a = load_splits("nmnist", tree, cfg, seed=0)
    (folder,) = _folders(cache_dir)
    _replace(folder / "train_frames.npy", b"garbage")
    with pytest.warns(UserWarning, match="unreadable"):
        b = load_splits("nmnist", tree, cfg, seed=0)
    assert torch.equal(a.train.frames, b.train.frames)  # a still reads its own (unlinked) mapping
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_splits("nmnist", tree, cfg, seed=0)  # rewritten: a clean hit
    # an array whose shape disagrees with meta.json is not served either
    (folder,) = _folders(cache_dir)
    zeros = tmp_path / "zeros.npy"
    np.save(zeros, np.zeros((1, 2, 2, 34, 34), np.uint8))
    _replace(folder / "test_frames.npy", zeros.read_bytes())
    with pytest.warns(UserWarning, match="unreadable.*meta.json says"):
        c = load_splits("nmnist", tree, cfg, seed=0)
    assert torch.equal(a.test.frames, c.test.frames)


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "evo_snn"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "evo_snn"


def test_in_memory_frameset_api_unchanged():
    frames = torch.arange(2 * 3 * 2 * 1 * 2, dtype=torch.float32).reshape(2, 3, 2, 1, 2)
    fs = FrameSet(frames, torch.tensor([1, 0]))
    assert fs.frames is frames and fs.encoding == "events" and not fs.memory_mapped
    assert torch.equal(fs.to_seq(frames), frames.transpose(0, 1))
    sub = fs.subset(torch.tensor([1]))
    assert torch.equal(sub.frames, frames[1:]) and sub.labels.tolist() == [0]
    assert torch.equal(pickle.loads(pickle.dumps(sub)).frames, frames[1:])
