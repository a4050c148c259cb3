"""Stratified hold-out, FrameSet/Splits, and load_splits argument errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from evo_snn.config import ConfigError, DataConfig
from evo_snn.data import DATASETS, DatasetFormatError, FrameSet, load_splits, stratified_split


def test_deterministic_disjoint_and_covering():
    labels = np.repeat(np.arange(5), [40, 30, 20, 7, 3])
    a = stratified_split(labels, 0.2, seed=7)
    b = stratified_split(labels, 0.2, seed=7)
    c = stratified_split(labels, 0.2, seed=8)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])
    train, val = a
    assert np.intersect1d(train, val).size == 0
    assert np.array_equal(np.sort(np.concatenate([train, val])), np.arange(labels.size))
    # 100 * 0.2 = 20 held out, in proportion: 8, 6, 4, 1.4 -> 1 or 2, 0.6 -> ...
    assert val.size == 20
    per_class = np.bincount(labels[val], minlength=5)
    assert per_class[:3].tolist() == [8, 6, 4]
    assert per_class[3:].sum() == 2 and per_class[4] >= 0


def test_largest_remainder_allocation():
    labels = np.repeat(np.arange(3), [5, 5, 5])  # 15 * 0.2 = 3: one per class
    _, val = stratified_split(labels, 0.2, seed=0)
    assert np.bincount(labels[val], minlength=3).tolist() == [1, 1, 1]


def test_small_classes_keep_a_training_sample():
    labels = np.array([0, 1, 1, 2, 2, 2])
    train, val = stratified_split(labels, 0.9, seed=3)
    assert np.unique(labels[train]).tolist() == [0, 1, 2]  # every class stays in train
    assert 0 not in labels[val]  # a class of one sample stays in train
    assert np.bincount(labels[val], minlength=3).tolist() == [0, 1, 2]


def test_one_sample_per_class_gives_empty_val():
    train, val = stratified_split(np.arange(10), 0.1, seed=0)
    assert train.tolist() == list(range(10)) and val.size == 0


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 5), min_size=1, max_size=120), st.floats(0.05, 0.95), st.integers(0, 2**31))
def test_split_properties(labels, frac, seed):
    labels = np.asarray(labels)
    train, val = stratified_split(labels, frac, seed)
    assert np.intersect1d(train, val).size == 0 and train.size + val.size == labels.size
    for c, n in zip(*np.unique(labels, return_counts=True)):
        n_val = int(np.count_nonzero(labels[val] == c))
        assert n - n_val >= 1  # at least one training sample per class
        if n >= 2:
            assert abs(n_val - n * frac) < 1 + 1e-9 or n_val == n - 1


def test_invalid_fraction():
    with pytest.raises(ValueError):
        stratified_split(np.zeros(4), 1.0, 0)


def test_frameset_helpers():
    frames = torch.zeros(3, 2, 2, 1, 1)
    frames[0, 0, 1] = 3
    frames[2, 1, 0] = 5
    fs = FrameSet(frames, torch.tensor([2, 0, 2]))
    assert len(fs) == 3
    assert fs.class_counts() == {0: 1, 2: 2}
    assert fs.class_counts(4) == {0: 1, 1: 0, 2: 2, 3: 0}
    assert fs.events_per_sample().tolist() == [3, 0, 5]
    sub = fs.subset([2, 0])
    assert sub.labels.tolist() == [2, 2] and sub.events_per_sample().tolist() == [5, 3]
    with pytest.raises(ValueError):
        FrameSet(torch.zeros(3, 2, 2, 1), torch.zeros(3, dtype=torch.int64))
    with pytest.raises(ValueError):
        FrameSet(frames, torch.zeros(2, dtype=torch.int64))
    empty = FrameSet(torch.zeros(0, 2, 2, 1, 1), torch.zeros(0, dtype=torch.int64))
    assert empty.class_counts() == {} and empty.events_per_sample().numel() == 0


def test_load_splits_argument_errors(tmp_path):
    cfg = DataConfig(cache_dir=str(tmp_path))
    assert DATASETS == ("synthetic", "nmnist", "dvs_gesture", "cifar10", "cifar100", "tiny_imagenet", "image_folder")
    with pytest.raises(ConfigError, match="unknown dataset"):
        load_splits("mnist", None, cfg, 0)
    for name in ("nmnist", "dvs_gesture", "cifar10", "cifar100", "tiny_imagenet", "image_folder"):
        with pytest.raises(DatasetFormatError, match="pass --data-root PATH"):
            load_splits(name, None, cfg, 0)
        with pytest.raises(DatasetFormatError, match="does not exist; pass --data-root PATH"):
            load_splits(name, tmp_path / "absent", cfg, 0)
    with pytest.raises(ConfigError, match=r"data.downsample=3 must divide the nmnist sensor size 34x34"):
        load_splits("nmnist", tmp_path, DataConfig(downsample=3), 0)
    with pytest.raises(ConfigError, match="split_by"):
        load_splits("synthetic", None, DataConfig(split_by="events"), 0)
    with pytest.raises(ConfigError, match="synthetic_classes"):
        load_splits("synthetic", None, DataConfig(synthetic_classes=9), 0)


def test_val_held_out_from_train_and_test_untouched():
    cfg = DataConfig(val_fraction=0.25, synthetic_classes=3, synthetic_train_per_class=8, synthetic_test_per_class=4)
    s = load_splits("synthetic", None, cfg, seed=5)
    assert (len(s.train), len(s.val), len(s.test)) == (18, 6, 12)
    assert s.val.class_counts() == {0: 2, 1: 2, 2: 2}
    assert s.test.labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    # train and val samples are distinct (no sample in both)
    a = s.train.frames.flatten(1)
    b = s.val.frames.flatten(1)
    assert not any(torch.equal(a[i], b[j]) for i in range(len(a)) for j in range(len(b)))
