"""integrate_frames / downsample_frames: hand examples, spikingjelly fidelity, sum checks."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evo_snn.data import downsample_frames, integrate_frames
from evo_snn.data import reference
from evo_snn.data.events import segment_bounds

# idx:   0  1  2  3  4  5  6
X = np.array([0, 2, 0, 1, 2, 2, 0])
Y = np.array([0, 1, 0, 1, 0, 0, 1])
P = np.array([1, 0, 1, 1, 0, 0, 1])
T = np.array([0, 1, 2, 5, 6, 7, 20])


def _sj_reference(x, y, p, t, split_by, frames, H, W):
    """spikingjelly's ``integrate_events_by_fixed_frames_number``, per event (evo_snn.data.reference)."""
    return reference.integrate({"t": np.asarray(t), "x": np.asarray(x), "y": np.asarray(y), "p": np.asarray(p)},
                               split_by, frames, H, W)


def test_number_mode_hand_example():
    f = integrate_frames(X, Y, P, T, frames=3, split_by="number", height=2, width=3)
    expected = np.zeros((3, 2, 2, 3), dtype=np.int64)
    # di = 7 // 3 = 2: frames hold events {0,1}, {2,3}, {4,5,6}
    expected[0, 1, 0, 0] = 1
    expected[0, 0, 1, 2] = 1
    expected[1, 1, 0, 0] = 1
    expected[1, 1, 1, 1] = 1
    expected[2, 0, 0, 2] = 2
    expected[2, 1, 1, 0] = 1
    assert f.shape == (3, 2, 2, 3)
    np.testing.assert_array_equal(f, expected)


def test_time_mode_hand_example():
    f = integrate_frames(X, Y, P, T, frames=3, split_by="time", height=2, width=3)
    expected = np.zeros((3, 2, 2, 3), dtype=np.int64)
    # dt = (20 - 0) // 3 = 6: [0, 6) -> {0,1,2,3}; [6, 12) -> {4,5}; last frame from t >= 12 to N -> {6}
    expected[0, 1, 0, 0] = 2
    expected[0, 0, 1, 2] = 1
    expected[0, 1, 1, 1] = 1
    expected[1, 0, 0, 2] = 2
    expected[2, 1, 1, 0] = 1
    np.testing.assert_array_equal(f, expected)


def test_time_mode_last_frame_takes_the_tail():
    # dt = (10 - 0) // 3 = 3: bins [0,3), [3,6), last [6, end] which includes t = 10 == t[-1]
    t = np.array([0, 1, 3, 9, 10, 10])
    z = np.zeros(6, dtype=int)
    f = integrate_frames(z, z, z, t, frames=3, split_by="time", height=1, width=1)
    assert f[:, 0, 0, 0].tolist() == [2, 1, 3]


def test_time_mode_empty_bin_gives_empty_frame():
    t = np.array([0, 1, 2, 30])  # dt = 10: bin [10, 20) is empty (spikingjelly would raise IndexError)
    z = np.zeros(4, dtype=int)
    f = integrate_frames(z, z, np.ones(4, dtype=int), t, frames=3, split_by="time", height=1, width=1)
    assert f[:, 1, 0, 0].tolist() == [3, 0, 1]
    with pytest.raises(IndexError):
        _sj_reference(z, z, np.ones(4, dtype=int), t, "time", 3, 1, 1)


def test_fewer_events_than_frames_number_mode():
    # di = 2 // 4 = 0: all events land in the last frame (as spikingjelly)
    f = integrate_frames(np.array([0, 1]), np.array([0, 0]), np.array([0, 1]), np.array([5, 6]),
                         frames=4, split_by="number", height=1, width=2)
    assert f.sum(axis=(1, 2, 3)).tolist() == [0, 0, 0, 2]


def test_no_events_gives_zero_frames():
    e = np.zeros(0, dtype=int)
    for mode in ("number", "time"):
        f = integrate_frames(e, e, e, e, frames=2, split_by=mode, height=3, width=4)
        assert f.shape == (2, 2, 3, 4) and f.sum() == 0


def test_polarity_nonzero_is_on_channel():
    f = integrate_frames(np.array([0, 0]), np.array([0, 0]), np.array([-1, 5]), np.array([0, 1]),
                         frames=1, split_by="number", height=1, width=1)
    assert f[0, :, 0, 0].tolist() == [0, 2]


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="out of range"):
        integrate_frames(np.array([3]), np.array([0]), np.array([0]), np.array([0]), frames=1, split_by="number", height=2, width=3)
    with pytest.raises(ValueError, match="split_by"):
        integrate_frames(X, Y, P, T, frames=2, split_by="duration", height=2, width=3)
    with pytest.raises(ValueError, match="equal length"):
        integrate_frames(X[:3], Y, P, T, frames=2, split_by="number", height=2, width=3)


def test_segment_bounds_are_contiguous_and_cover_all():
    j_l, j_r = segment_bounds(T, 3, "time")
    assert j_l.tolist() == [0, 4, 6] and j_r.tolist() == [4, 6, 7]
    j_l, j_r = segment_bounds(T, 3, "number")
    assert j_l.tolist() == [0, 2, 4] and j_r.tolist() == [2, 4, 7]


@st.composite
def event_streams(draw):
    n = draw(st.integers(0, 200))
    h = draw(st.integers(1, 6))
    w = draw(st.integers(1, 6))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    t = np.sort(rng.integers(0, draw(st.integers(1, 10_000)), n))
    return rng.integers(0, w, n), rng.integers(0, h, n), rng.integers(0, 2, n), t, h, w


@settings(max_examples=150, deadline=None)
@given(event_streams(), st.integers(1, 12), st.sampled_from(["number", "time"]))
def test_counts_sum_to_events_and_match_spikingjelly(stream, frames, mode):
    x, y, p, t, h, w = stream
    f = integrate_frames(x, y, p, t, frames=frames, split_by=mode, height=h, width=w)
    assert f.shape == (frames, 2, h, w)
    assert int(f.sum()) == t.size  # every event of the window lands in exactly one frame
    if t.size == 0:
        return
    try:
        ref = _sj_reference(x, y, p, t, mode, frames, h, w)
    except IndexError:  # spikingjelly crashes on an empty time bin; we give an empty frame
        return
    np.testing.assert_array_equal(f, ref)


def test_real_nmnist_file_matches_spikingjelly(nmnist_root):
    from evo_snn.data.nmnist import read_bin

    ev = read_bin(nmnist_root / "Train" / "3" / sorted(p.name for p in (nmnist_root / "Train" / "3").glob("*.bin"))[0])
    for mode in ("number", "time"):
        f = integrate_frames(ev.x, ev.y, ev.p, ev.t, frames=10, split_by=mode, height=34, width=34)
        np.testing.assert_array_equal(f, _sj_reference(ev.x, ev.y, ev.p, ev.t, mode, 10, 34, 34))
        assert f.sum() == len(ev)


def test_downsample_sums_blocks():
    a = np.arange(2 * 4 * 6).reshape(2, 4, 6)
    d = downsample_frames(a, 2)
    assert d.shape == (2, 2, 3)
    assert d[0, 0, 0] == a[0, 0, 0] + a[0, 0, 1] + a[0, 1, 0] + a[0, 1, 1]
    assert d[1, 1, 2] == a[1, 2:4, 4:6].sum()
    assert d.sum() == a.sum()
    assert downsample_frames(a, 1) is a
    with pytest.raises(ValueError, match="does not divide"):
        downsample_frames(a, 4)


def test_unsorted_time_follows_spikingjelly_file_order():
    # spikingjelly does not sort: dt = (t[-1] - t[0]) // frames and frame i spans from the
    # first to the last *index* with t in bin i (events of other bins in between included)
    t = np.array([0, 7, 2, 3, 12, 5, 9, 11, 4, 12])
    x = np.arange(10) % 3
    y = np.arange(10) % 2
    p = np.arange(10) % 2
    f = integrate_frames(x, y, p, t, frames=3, split_by="time", height=2, width=3)
    # dt = 4: bin 0 [0,4) -> idx 0..3; bin 1 [4,8) -> first idx 1, last idx 8 -> idx 1..8;
    # bin 2 [8,12) -> first idx 6, and the last frame always ends at N -> idx 6..9 (frames overlap)
    assert f.sum(axis=(1, 2, 3)).tolist() == [4, 8, 4]
    np.testing.assert_array_equal(f, _sj_reference(x, y, p, t, "time", 3, 2, 3))


def _time_frames_by_hand(x, y, p, t, frames, h, w):
    """The documented rule of ``segment_bounds(split_by='time')``, one event at a time:
    dt = (t[-1] - t[0]) // frames in file order; frame i holds the events from the first
    to the last index with t[0] + i*dt <= t < t[0] + (i+1)*dt (empty if there is none:
    where spikingjelly raises IndexError); the last frame ends at N and, when its bin is
    empty, starts at the first index with t >= t[0] + (frames-1)*dt."""
    n = len(t)
    out = np.zeros((frames, 2, h, w), dtype=np.int64)
    if n == 0:
        return out
    dt = (int(t[-1]) - int(t[0])) // frames
    for i in range(frames):
        t_l = int(t[0]) + i * dt
        hits = [k for k in range(n) if t_l <= t[k] < t_l + dt]
        lo, hi = (hits[0], hits[-1] + 1) if hits else (0, 0)
        if i == frames - 1:
            if not hits:
                lo = next((k for k in range(n) if t[k] >= t_l), n)
            hi = n
        for k in range(lo, hi):
            out[i, int(p[k]), y[k], x[k]] += 1
    return out


def test_time_frames_by_hand_agrees_with_a_hand_example():
    # unsorted, dt = (2 - 10) // 2 < 0: no bin holds an event; the last frame takes all
    t = np.array([10, 3, 2])
    z = np.zeros(3, dtype=int)
    assert _time_frames_by_hand(z, z, z, t, 2, 1, 1)[:, 0, 0, 0].tolist() == [0, 3]
    f = integrate_frames(z, z, z, t, frames=2, split_by="time", height=1, width=1)
    assert f[:, 0, 0, 0].tolist() == [0, 3]
    # dt = (9 - 0) // 3 = 3: bin [0,3) spans idx 0..3 (t = 1 at idx 3), [3,6) is empty,
    # the last bin [6,9) holds idx 2 (t = 7), so the last frame is idx 2..4
    t = np.array([0, 2, 7, 1, 9])
    z = np.zeros(5, dtype=int)
    assert _time_frames_by_hand(z, z, z, t, 3, 1, 1)[:, 0, 0, 0].tolist() == [4, 0, 3]
    f = integrate_frames(z, z, z, t, frames=3, split_by="time", height=1, width=1)
    assert f[:, 0, 0, 0].tolist() == [4, 0, 3]
    # t = [0, 2, 5, 1, 9]: [0,3) -> idx 0..3, [3,6) -> idx 2, the last bin [6,9) is empty
    # (t = 9 is not < 9): it starts at the first index with t >= 6 (idx 4)
    t = np.array([0, 2, 5, 1, 9])
    assert _time_frames_by_hand(z, z, z, t, 3, 1, 1)[:, 0, 0, 0].tolist() == [4, 1, 1]
    f = integrate_frames(z, z, z, t, frames=3, split_by="time", height=1, width=1)
    assert f[:, 0, 0, 0].tolist() == [4, 1, 1]


@settings(max_examples=80, deadline=None)
@given(event_streams(), st.integers(1, 8))
def test_unsorted_streams_match_spikingjelly(stream, frames):
    x, y, p, t, h, w = stream
    t = np.random.default_rng(int(t.sum())).permutation(t)  # file order need not be time order
    f = integrate_frames(x, y, p, t, frames=frames, split_by="time", height=h, width=w)
    assert f.shape == (frames, 2, h, w)
    # every case is checked against the rule written out by hand, empty bins included
    np.testing.assert_array_equal(f, _time_frames_by_hand(x, y, p, t, frames, h, w))
    if t.size < 2:
        return
    try:
        ref = _sj_reference(x, y, p, t, "time", frames, h, w)
    except IndexError:  # an empty bin: spikingjelly crashes, we give an empty frame (checked above)
        return
    np.testing.assert_array_equal(f, ref)
