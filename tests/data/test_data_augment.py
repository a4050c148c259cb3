"""Event-frame augmentation in FrameSet.to_seq(train=True): translation, flip, event drop; config switches."""

from __future__ import annotations

import pytest
import torch

from evo_snn.config import ConfigError, DataConfig, load_config
from evo_snn.data import FrameSet, load_splits
from evo_snn.data.augment import SeqTransform, drop_events, random_hflip, random_translate


def _batch(n=6, t=3, h=9, w=11, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 5, (n, t, 2, h, w), generator=g).to(torch.uint8)


def test_defaults_leave_event_frames_unchanged():
    x = _batch()
    fs = FrameSet(x, torch.zeros(6, dtype=torch.int64))
    out = fs.to_seq(x, train=True, generator=torch.Generator().manual_seed(0))
    assert out.dtype == torch.float32 and out.shape == (3, 6, 2, 9, 11)
    assert torch.equal(out, x.transpose(0, 1).float())


def test_translation_is_one_zero_filled_shift_per_sample():
    x = _batch()
    out = random_translate(x.float(), 2, torch.Generator().manual_seed(3))
    assert out.shape == x.shape
    shifts = []
    for n in range(6):
        hits = []
        for dy in range(-2, 3):
            for dx in range(-2, 3):
                ref = torch.zeros_like(x[n], dtype=torch.float32)
                src = x[n].float()[..., max(0, -dy):9 - max(0, dy), max(0, -dx):11 - max(0, dx)]
                ref[..., max(0, dy):max(0, dy) + src.shape[-2], max(0, dx):max(0, dx) + src.shape[-1]] = src
                if torch.equal(out[n], ref):  # the same shift for every frame and channel
                    hits.append((dy, dx))
        assert hits, n
        shifts.append(hits[0])
    assert len(set(shifts)) > 1  # samples get different shifts
    assert torch.equal(out, random_translate(x.float(), 2, torch.Generator().manual_seed(3)))


def test_hflip_mirrors_whole_samples():
    x = _batch(n=32)
    out = random_hflip(x, torch.Generator().manual_seed(0))
    flipped = [torch.equal(out[n], x[n].flip(-1)) for n in range(32)]
    kept = [torch.equal(out[n], x[n]) for n in range(32)]
    assert all(f or k for f, k in zip(flipped, kept)) and 5 < sum(flipped) < 27


def test_event_drop_is_binomial_thinning():
    x = torch.full((4, 2, 2, 8, 8), 10.0)
    x[0] = 0
    out = drop_events(x, 0.3, torch.Generator().manual_seed(0))
    assert torch.equal(out, out.round()) and (out <= x).all() and (out[0] == 0).all()
    kept = out[1:].sum() / x[1:].sum()
    assert abs(float(kept) - 0.7) < 0.03  # 7,680 events: 0.7 +- 4 sigma
    assert torch.equal(drop_events(x, 0.0), x)


def test_to_seq_train_only_and_seeded():
    x = _batch()
    tf = SeqTransform("events", translate_px=2, hflip=True, event_drop=0.5)
    fs = FrameSet(x, torch.zeros(6, dtype=torch.int64), tf)
    assert torch.equal(fs.to_seq(x, train=False), x.transpose(0, 1).float())  # evaluation: untouched
    a = fs.to_seq(x, train=True, generator=torch.Generator().manual_seed(7))
    b = fs.to_seq(x, train=True, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b) and not torch.equal(a, x.transpose(0, 1).float())
    assert a.sum() < x.float().sum()


def test_config_switches_and_dvs_default_has_no_flip(writers, tmp_path):
    root = writers.make_gesture_tree(tmp_path / "g")
    cfg = load_config("dvs_gesture", None, [f"data.cache_dir={tmp_path / 'c'}", "data.frames=2"]).data
    with pytest.warns(UserWarning, match="single training sample"):
        s = load_splits("dvs_gesture", root, cfg, seed=0)
    assert (s.train.transform.hflip, s.train.transform.translate_px, s.train.transform.event_drop) == (False, 0, 0.0)
    with pytest.warns(UserWarning, match="single training sample"):
        s = load_splits("dvs_gesture", root, DataConfig(frames=2, downsample=4, cache_dir=str(tmp_path / "c"),
                                                        aug_translate_px=3, aug_event_drop=0.2), seed=0)
    assert (s.train.transform.hflip, s.train.transform.translate_px, s.train.transform.event_drop) == (False, 3, 0.2)
    for bad in ("data.aug_event_drop=1.0", "data.aug_translate_px=-1", "data.aug_hflip=3", "data.aug_translate_px=1.5"):
        with pytest.raises(ConfigError, match="data.aug_"):
            load_config("nmnist", None, [bad])
    with pytest.raises(ConfigError, match="aug_event_drop"):
        load_splits("synthetic", None, DataConfig(aug_event_drop=-0.1), seed=0)


def _loop_translate(x, max_px, generator):
    """The per-sample loop random_translate replaced (issue 26): the reference its batch gather must equal."""
    n, _, _, h, w = x.shape
    k = int(max_px)
    offsets = torch.randint(0, 2 * k + 1, (n, 2), generator=generator)
    padded = torch.nn.functional.pad(x, (k, k, k, k))
    out = torch.empty_like(x)
    for i, (oy, ox) in enumerate(offsets.tolist()):
        out[i] = padded[i, :, :, oy: oy + h, ox: ox + w]
    return out


def _mask_hflip(x, generator, p=0.5):
    """The boolean-indexing flip random_hflip replaced (issue 26)."""
    flip = torch.rand(x.shape[0], generator=generator) < p
    out = x.clone()
    if bool(flip.any()):
        out[flip] = x[flip].flip(-1)
    return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.uint8])
def test_batch_gather_and_where_flip_are_bit_identical_to_the_loops(dtype):
    g = torch.Generator().manual_seed(11)
    x = (torch.rand(17, 3, 2, 9, 11, generator=g) * 200).to(dtype)
    for seed in range(4):
        for k in (1, 2, 4):
            b = _loop_translate(x, k, torch.Generator().manual_seed(seed))
            for gather in (True, False, None):  # the GPU path (one gather) and the CPU path (per sample)
                a = random_translate(x, k, torch.Generator().manual_seed(seed), gather=gather)
                assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b) and a.is_contiguous()
        a = random_hflip(x, torch.Generator().manual_seed(seed))
        assert a.dtype == dtype and torch.equal(a, _mask_hflip(x, torch.Generator().manual_seed(seed)))
    # and the generator is advanced exactly as before: the next draw is the same
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    random_translate(x, 2, g1, gather=True), random_hflip(x, g1)
    _loop_translate(x, 2, g2), _mask_hflip(x, g2)
    assert torch.equal(torch.rand(3, generator=g1), torch.rand(3, generator=g2))
