"""The on-disk frame cache: hits, misses, unwritable and corrupt caches."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest
import torch

from evo_snn.config import DataConfig
from evo_snn.data import load_splits, nmnist
from evo_snn.data import dvs_gesture
from evo_snn.data.cache import default_cache_dir


def _boom(*args, **kwargs):
    raise AssertionError("parser called although the cache should have been hit")


@pytest.fixture
def tree(writers, tmp_path) -> Path:
    return writers.make_nmnist_tree(tmp_path / "nm", {"Train": {0: 3, 1: 3}, "Test": {0: 1, 1: 1}})


def test_second_load_hits_cache_and_changed_setting_misses(tree, tmp_path, monkeypatch):
    cache_dir = tmp_path / "cache"
    cfg = DataConfig(frames=4, cache_dir=str(cache_dir))
    first = load_splits("nmnist", tree, cfg, seed=0)
    files = sorted(p.name for p in cache_dir.iterdir())
    assert len(files) == 1 and files[0].startswith("nmnist-") and files[0].endswith(".npz")

    with monkeypatch.context() as m:
        m.setattr(nmnist, "read_bin", _boom)
        second = load_splits("nmnist", tree, cfg, seed=0)
        assert torch.equal(first.train.frames, second.train.frames)
        assert torch.equal(first.test.frames, second.test.frames)
        assert torch.equal(first.val.labels, second.val.labels)
        # another seed only changes the validation split: still a hit
        load_splits("nmnist", tree, cfg, seed=1)
        for changed in (DataConfig(frames=5, cache_dir=str(cache_dir)),
                        DataConfig(frames=4, split_by="time", cache_dir=str(cache_dir)),
                        DataConfig(frames=4, downsample=2, cache_dir=str(cache_dir))):
            with pytest.raises(AssertionError, match="parser called"):
                load_splits("nmnist", tree, changed, seed=0)

    # a changed source file (size/mtime) misses too
    f = tree / "Test" / "1" / "00001.bin"
    f.write_bytes(f.read_bytes()[:-5])
    os.utime(f, ns=(1_000_000_000, 1_000_000_000))
    third = load_splits("nmnist", tree, cfg, seed=0)
    assert third.test.events_per_sample()[1] == first.test.events_per_sample()[1] - 1
    assert not any(".tmp-" in p.name for p in cache_dir.iterdir())  # atomic writes leave no temp file


def test_dvs_gesture_cache_hit(writers, tmp_path, monkeypatch):
    root = writers.make_gesture_tree(tmp_path / "g")
    cfg = DataConfig(frames=2, downsample=4, cache_dir=str(tmp_path / "c"))
    a = load_splits("dvs_gesture", root, cfg, seed=0)
    monkeypatch.setattr(dvs_gesture, "read_aedat31", _boom)
    b = load_splits("dvs_gesture", root, cfg, seed=0)
    assert torch.equal(a.test.frames, b.test.frames)


def test_unwritable_cache_warns_and_continues(tree, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    cfg = DataConfig(frames=2, cache_dir=str(blocker / "cache"))
    with pytest.warns(UserWarning, match="cannot write the frame cache"):
        s = load_splits("nmnist", tree, cfg, seed=0)
    assert len(s.train) + len(s.val) == 6 and len(s.test) == 2


def test_corrupt_cache_warns_and_rebuilds(tree, tmp_path):
    cache_dir = tmp_path / "cache"
    cfg = DataConfig(frames=2, cache_dir=str(cache_dir))
    a = load_splits("nmnist", tree, cfg, seed=0)
    (path,) = cache_dir.iterdir()
    path.write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="unreadable"):
        b = load_splits("nmnist", tree, cfg, seed=0)
    assert torch.equal(a.train.frames, b.train.frames)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_splits("nmnist", tree, cfg, seed=0)  # rewritten: a clean hit


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "evo_snn"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "evo_snn"
