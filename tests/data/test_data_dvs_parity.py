"""DVS128 Gesture parity with spikingjelly's ``DVS128Gesture(data_type='frame', frames_number=T, split_by=...)``.

The whole path (trials lists -> AEDAT 3.1 -> label windows ``start <= t < end`` -> frames)
is compared with a per-event reference written from spikingjelly's documented algorithm
(``sj_ref`` in conftest.py), on the real mini fixture and on files written here, for
both split modes. spikingjelly lists the samples by class folder; we list them by trial
(list order) then CSV row; both hold the same samples, compared here in our order.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from evo_snn.config import DataConfig
from evo_snn.data import load_splits
from evo_snn.data.aedat import read_aedat31
from evo_snn.data.dvs_gesture import read_split, resolve_root, trial_files


def _reference_split(sj_ref, root: Path, split: str, frames: int, split_by: str, cache=None):
    list_file = root / f"trials_to_{split}.txt"
    out, labels = [], []
    for name in (line.strip() for line in list_file.read_text().splitlines()):
        if not name:
            continue
        path = root / name
        events = cache[path] if cache is not None and path in cache else sj_ref.load_aedat_v3(path)
        for label, ev in sj_ref.split(events, root / (name[: -len(".aedat")] + "_labels.csv")):
            out.append(sj_ref.integrate(ev, split_by, frames, 128, 128))
            labels.append(label)
    return np.stack(out), np.asarray(labels)


DVS_ROOT = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "dvs_gesture_mini" / "DvsGesture"


@pytest.fixture(scope="module")
def real_events(sj_ref):
    """The reference reader's events of both real files (read once: the per-event loop takes ~1 s)."""
    if not (DVS_ROOT / "trials_to_train.txt").is_file():
        pytest.skip(f"real DVS128 Gesture fixture not found at {DVS_ROOT} (../shared/data is absent)")
    return {p: sj_ref.load_aedat_v3(p) for p in sorted(DVS_ROOT.glob("*.aedat"))}


def test_reader_equals_reference_reader_on_real_files(real_events):
    for path, ref in real_events.items():
        ev = read_aedat31(path)
        for k in ("t", "x", "y", "p"):
            np.testing.assert_array_equal(getattr(ev, k), ref[k], err_msg=f"{path.name}: {k}")
        assert len(ev) > 500_000


@pytest.mark.parametrize("split_by", ["number", "time"])
def test_real_fixture_frames_equal_spikingjelly(real_events, sj_ref, split_by):
    root = resolve_root(next(iter(real_events)).parent)
    for split in ("train", "test"):
        frames, labels = read_split(root, split, frames=8, split_by=split_by, downsample=1)
        ref_frames, ref_labels = _reference_split(sj_ref, root, split, 8, split_by, cache=real_events)
        assert labels.tolist() == ref_labels.tolist() == list(range(10))
        assert frames.shape == ref_frames.shape == (10, 8, 2, 128, 128)
        np.testing.assert_array_equal(frames, ref_frames)


def test_real_fixture_through_load_splits_and_cache(real_events, sj_ref, tmp_path):
    root = next(iter(real_events)).parent
    cfg = DataConfig(frames=8, split_by="time", cache_dir=str(tmp_path))
    for _ in range(2):  # build, then a cache hit
        with pytest.warns(UserWarning, match="single training sample"):
            s = load_splits("dvs_gesture", root, cfg, seed=0)
        ref, ref_labels = _reference_split(sj_ref, root, "test", 8, "time", cache=real_events)
        np.testing.assert_array_equal(s.test.frames.numpy(), ref)
        x_seq = s.test.to_seq(s.test.frames[:3])
        np.testing.assert_array_equal(x_seq.numpy(), ref[:3].transpose(1, 0, 2, 3, 4))


def _random_tree(writers, root: Path, seed: int, sorted_t: bool = True) -> Path:
    """Trials with several packets, an eventTSOverflow jump, non-polarity packets, repeated
    classes, overlapping windows, and (sorted_t=False) timestamps that go backwards."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True)
    names = [f"user{seed:02d}_{k}" for k in range(3)]
    for k, name in enumerate(names):
        n = int(rng.integers(300, 600))
        if k == 1:  # trial 1 crosses the 31-bit overflow at a packet boundary (packets of 50 events)
            base = (1 << 31) - 2000
            t = np.concatenate([base + np.sort(rng.integers(0, 2000, 250)),
                                (1 << 31) + np.sort(rng.integers(0, 3000, n - 250))])
            overflow_at = 250
        else:
            base = 0
            t = np.sort(rng.integers(0, 5000, n))
            overflow_at = None
        if not sorted_t:
            swap = rng.choice(np.setdiff1d(np.arange(n - 1), [249]), size=n // 10, replace=False)
            t[swap], t[swap + 1] = t[swap + 1].copy(), t[swap].copy()
        ev = [(int(rng.integers(0, 128)), int(rng.integers(0, 128)), int(rng.integers(0, 2)), int(tt)) for tt in t]
        lo = base
        rows = [(3, lo + 100, lo + 1500), (3, lo + 1600, lo + 2600),  # one class twice in a trial
                (9, lo + 2500, lo + 4000), (10, lo + 3500, lo + 5000)]  # 9 overlaps 10
        writers.write_trial(root, name, ev, rows, overflow_at=overflow_at)
    (root / "trials_to_train.txt").write_text(f"{names[2]}.aedat\n{names[0]}.aedat\n")
    (root / "trials_to_test.txt").write_text(f"{names[1]}.aedat\n")
    return root


@pytest.mark.parametrize("sorted_t", [True, False])
@pytest.mark.parametrize("split_by", ["number", "time"])
def test_written_trees_equal_spikingjelly(writers, sj_ref, tmp_path, split_by, sorted_t):
    for seed in (1, 2):
        root = _random_tree(writers, tmp_path / f"{seed}{split_by}{sorted_t}", seed, sorted_t)
        for split in ("train", "test"):
            frames, labels = read_split(root, split, frames=5, split_by=split_by, downsample=1)
            try:
                ref, ref_labels = _reference_split(sj_ref, root, split, 5, split_by)
            except IndexError:  # an empty time bin: spikingjelly crashes (we give an empty frame)
                continue
            assert labels.tolist() == ref_labels.tolist()
            np.testing.assert_array_equal(frames, ref)


def test_overflow_trial_decodes_past_2_31(writers, tmp_path):
    root = _random_tree(writers, tmp_path / "t", 1)
    ev = read_aedat31(root / "user01_1.aedat")
    assert ev.t.max() >= 1 << 31 and ev.t.min() < 1 << 31


def test_repeated_class_and_overlapping_windows(writers, tmp_path):
    root = tmp_path / "g"
    root.mkdir()
    ev = [(t % 128, 5, t % 2, t) for t in range(100)]
    # two samples of class 4 in one trial, and windows [40, 70) and [60, 90) sharing t = 60..69
    writers.write_trial(root, "u", ev, [(4, 0, 20), (4, 20, 40), (7, 40, 70), (8, 60, 90)])
    (root / "trials_to_train.txt").write_text("u.aedat\n")
    (root / "trials_to_test.txt").write_text("u.aedat\n")
    frames, labels = read_split(root, "train", frames=1, split_by="number", downsample=1)
    assert labels.tolist() == [3, 3, 6, 7]
    assert frames.reshape(4, -1).sum(1).tolist() == [20, 20, 30, 30]
    # the shared events are in both samples: t = 65 -> x = 65, p = 1
    assert frames[2, 0, 1, 5, 65] == 1 and frames[3, 0, 1, 5, 65] == 1
    assert frames[2, 0, :, 5, 70:].sum() == 0 and frames[3, 0, :, 5, :60].sum() == 0


def test_trial_lists_are_honoured_exactly(writers, tmp_path):
    """Only listed trials, in list order, every CSV row a sample (the full set gives 1,176 / 288)."""
    root = tmp_path / "DvsGesture"
    root.mkdir()
    rows_per_trial = {}
    for k in range(7):
        ev = [(k, 1, 0, 1000 * k + t) for t in range(50)]
        rows = [(c, 1000 * k + 5 * c, 1000 * k + 5 * c + 4) for c in range(1, 2 + k)]  # k+1 samples
        writers.write_trial(root, f"user{k:02d}_led", ev, rows)
        rows_per_trial[k] = rows
    train, test = [5, 0, 3], [6, 2]  # trial 1 and 4 are on disk but listed nowhere
    (root / "trials_to_train.txt").write_text("".join(f"user{k:02d}_led.aedat\r\n" for k in train))
    (root / "trials_to_test.txt").write_text("\n".join(f"user{k:02d}_led.aedat" for k in test) + "\n\n")
    assert [a.name for a, _ in trial_files(root, "train")] == [f"user{k:02d}_led.aedat" for k in train]
    for split, ks in (("train", train), ("test", test)):
        frames, labels = read_split(root, split, frames=2, split_by="number", downsample=1)
        assert len(labels) == sum(len(rows_per_trial[k]) for k in ks)
        assert labels.tolist() == [c - 1 for k in ks for c, _, _ in rows_per_trial[k]]
        # x of every event is the trial number: samples come from exactly the listed trials
        xs = [int(np.flatnonzero(f.sum(axis=(0, 1, 2)))[0]) for f in frames]
        assert xs == [k for k in ks for _ in rows_per_trial[k]]
