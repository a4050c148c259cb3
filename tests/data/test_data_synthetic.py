"""The embedded synthetic data set: determinism, seeds, shapes and event content."""

from __future__ import annotations

import numpy as np
import torch

from evo_snn.config import DataConfig
from evo_snn.data import integrate_frames, load_splits
from evo_snn.data.synthetic import STEP_US, STEPS, generate_events, make_split

CFG = DataConfig(synthetic_classes=4, synthetic_train_per_class=6, synthetic_test_per_class=3, synthetic_size=16)


def test_deterministic_per_seed_and_differs_across_seeds():
    a = load_splits("synthetic", None, CFG, seed=1)
    b = load_splits("synthetic", None, CFG, seed=1)
    c = load_splits("synthetic", None, CFG, seed=2)
    for x, y in ((a.train, b.train), (a.val, b.val), (a.test, b.test)):
        assert torch.equal(x.frames, y.frames) and torch.equal(x.labels, y.labels)
    assert not torch.equal(a.test.frames, c.test.frames)
    assert not torch.equal(a.train.frames, c.train.frames) or not torch.equal(a.val.frames, c.val.frames)


def test_shapes_labels_and_names():
    s = load_splits("synthetic", "/ignored/path", CFG, seed=0)
    assert s.name == "synthetic" and s.num_classes == 4 and s.frame_shape == (8, 2, 16, 16)
    assert len(s.train) + len(s.val) == 24 and len(s.test) == 12
    assert s.train.frames.dtype == torch.uint8 and s.train.labels.dtype == torch.int64  # compact counts
    x_seq = s.train.to_seq(s.train.frames[:5])
    assert x_seq.dtype == torch.float32 and x_seq.shape == (8, 5, 2, 16, 16)
    assert torch.equal(x_seq, s.train.frames[:5].transpose(0, 1).float())
    assert s.test.class_counts() == {0: 3, 1: 3, 2: 3, 3: 3}
    assert (s.test.events_per_sample() > 10).all()
    d = load_splits("synthetic", None, DataConfig(synthetic_size=16, downsample=4, frames=3), seed=0)
    assert d.frame_shape == (3, 2, 4, 4) and d.train.frames.shape[1:] == (3, 2, 4, 4)


def test_train_and_test_streams_are_independent():
    common = dict(seed=0, num_classes=2, size=16, frames=4, split_by="number", downsample=1)
    tr, _ = make_split("train", per_class=3, **common)
    te, _ = make_split("test", per_class=3, **common)
    assert not any(np.array_equal(tr[i], te[j]) for i in range(6) for j in range(6))
    # more samples per class do not change the existing ones
    tr5, _ = make_split("train", per_class=5, **common)
    np.testing.assert_array_equal(tr5[:3], tr[:3])


def _mean_flow(ev, axis):
    """Mean ON position minus mean OFF position along ``axis`` ('x' or 'y')."""
    v = getattr(ev, axis)
    return v[ev.p == 1].mean() - v[ev.p == 0].mean()


def test_events_encode_the_direction():
    # class 0 moves to +x, class 2 of 4 to -x, class 1 to +y: ON events lead, OFF events trail
    flows = {c: [] for c in range(4)}
    for c in range(4):
        for i in range(10):
            ev = generate_events(np.random.default_rng([9, c, i]), c, 4, 16)
            assert np.all(np.diff(ev.t) >= 0)
            assert ev.t.min() >= STEP_US and ev.t.max() < (STEPS + 1) * STEP_US
            assert ev.x.max() < 16 and ev.y.max() < 16 and set(np.unique(ev.p)) <= {0, 1}
            flows[c].append((_mean_flow(ev, "x"), _mean_flow(ev, "y")))
    fx = {c: np.mean([f[0] for f in v]) for c, v in flows.items()}
    fy = {c: np.mean([f[1] for f in v]) for c, v in flows.items()}
    assert fx[0] > 1 and fx[2] < -1 and fy[1] > 1 and fy[3] < -1


def test_frames_are_integrated_events():
    ev = generate_events(np.random.default_rng([0, 1, 0, 0]), 0, 4, 16)
    f, _ = make_split("train", seed=0, num_classes=4, per_class=1, size=16, frames=5, split_by="time", downsample=1)
    ref = integrate_frames(ev.x, ev.y, ev.p, ev.t, frames=5, split_by="time", height=16, width=16)
    np.testing.assert_array_equal(f[0], ref)
    assert f[0].sum() == len(ev)
