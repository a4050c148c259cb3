"""The embedded "synthetic" data set: a square moving in one of K directions (no files).

Each sample is a real event stream from an ideal DVS watching a bright square
move across a ``size x size`` sensor for ``STEPS`` time steps of ``STEP_US`` µs:
ON events (p=1) where the square enters a pixel, OFF events (p=0) where it leaves
one. The class is the direction of motion: class c moves at angle
``2*pi*c/K`` (0 = +x, i.e. to the right; K = ``synthetic_classes`` <= 8).
Per sample the start position, speed, square size and angle are jittered, ~10 %
of edge events are dropped and ~5 % uniform noise events are added, so the task
is learnable but not trivial. The events are then integrated with
:func:`~evo_snn.data.events.integrate_frames` like real data.

Generation is deterministic: sample i of class c in a split uses the numpy
generator seeded by ``(seed, split stream, c, i)``, so train and test come from
independent streams and adding samples does not change existing ones.
"""

from __future__ import annotations

import math

import numpy as np

from evo_snn.config import SYNTHETIC_MAX_CLASSES, ConfigError
from evo_snn.data.events import Events, downsample_frames, integrate_frames, stack_counts, to_storage
from evo_snn.data.registry import DatasetSpec, register_dataset

NAME = "synthetic"
MAX_CLASSES = SYNTHETIC_MAX_CLASSES  # data.synthetic_classes <= 8 (the schema's bound)
STEPS = 40
STEP_US = 1000
NOISE_FRACTION = 0.05
DROP_PROB = 0.1
_STREAMS = {"train": 1, "test": 2}


def seed_entropy(seed: int) -> int:
    """Map any Python int seed to the non-negative entropy numpy's SeedSequence needs."""
    return int(seed) % (1 << 64)


def _occupancy(size: int, side: int, cx: float, cy: float) -> np.ndarray:
    """``[size, size]`` bool: pixels covered by a ``side`` square centred at (cx, cy)."""
    x0 = int(math.floor(cx - side / 2 + 0.5))
    y0 = int(math.floor(cy - side / 2 + 0.5))
    occ = np.zeros((size, size), dtype=bool)
    occ[max(y0, 0) : max(min(y0 + side, size), 0), max(x0, 0) : max(min(x0 + side, size), 0)] = True
    return occ


def generate_events(rng: np.random.Generator, label: int, num_classes: int, size: int) -> Events:
    """One sample's events (sorted by t, t in [STEP_US, (STEPS+1)*STEP_US) µs) for class ``label``."""
    angle = 2 * math.pi * label / num_classes + rng.uniform(-0.3, 0.3) * math.pi / num_classes
    dx, dy = math.cos(angle), math.sin(angle)
    lo = max(2, round(size * 0.15))
    side = int(rng.integers(lo, max(lo, round(size * 0.3)) + 1))
    travel = rng.uniform(0.4, 0.75) * size  # pixels covered in STEPS steps
    speed = travel / STEPS
    jitter = rng.uniform(-0.15, 0.15, size=2) * size
    cx0 = size / 2 - dx * travel / 2 + jitter[0]
    cy0 = size / 2 - dy * travel / 2 + jitter[1]

    ts, xs, ys, ps = [], [], [], []
    prev = _occupancy(size, side, cx0, cy0)
    for k in range(1, STEPS + 1):
        occ = _occupancy(size, side, cx0 + dx * speed * k, cy0 + dy * speed * k)
        for pol, changed in ((1, occ & ~prev), (0, prev & ~occ)):
            yy, xx = np.nonzero(changed)
            keep = rng.random(yy.size) >= DROP_PROB
            yy, xx = yy[keep], xx[keep]
            ys.append(yy)
            xs.append(xx)
            ps.append(np.full(yy.size, pol))
            ts.append(k * STEP_US + rng.integers(0, STEP_US, size=yy.size))
        prev = occ
    n_signal = sum(a.size for a in ts)
    n_noise = int(rng.poisson(max(1.0, NOISE_FRACTION * n_signal)))
    xs.append(rng.integers(0, size, n_noise))
    ys.append(rng.integers(0, size, n_noise))
    ps.append(rng.integers(0, 2, n_noise))
    ts.append(rng.integers(STEP_US, (STEPS + 1) * STEP_US, n_noise))
    t = np.concatenate(ts).astype(np.int64)
    order = np.argsort(t, kind="stable")
    return Events(
        t=t[order],
        x=np.concatenate(xs).astype(np.int32)[order],
        y=np.concatenate(ys).astype(np.int32)[order],
        p=np.concatenate(ps).astype(np.int8)[order],
    )


def make_split(
    split: str,
    *,
    seed: int,
    num_classes: int,
    per_class: int,
    size: int,
    frames: int,
    split_by: str,
    downsample: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Frames and labels of the synthetic ``split`` ('train' | 'test').

    Returns ``frames`` ``[num_classes*per_class, T, 2, size/downsample, size/downsample]``
    counts and ``labels`` ``[N]`` int64, ordered by class then sample index.
    raises ValueError for num_classes outside 2-8, per_class < 1 or size < 4.
    """
    if not 2 <= num_classes <= MAX_CLASSES:
        raise ValueError(f"data.synthetic_classes must be in 2-{MAX_CLASSES}, got {num_classes}")
    if per_class < 1:
        raise ValueError(f"synthetic samples per class must be >= 1, got {per_class}")
    if size < 4:
        raise ValueError(f"data.synthetic_size must be >= 4, got {size}")
    entropy = seed_entropy(seed)
    out, labels = [], []
    for c in range(num_classes):
        for i in range(per_class):
            rng = np.random.default_rng([entropy, _STREAMS[split], c, i])
            ev = generate_events(rng, c, num_classes, size)
            counts = integrate_frames(ev.x, ev.y, ev.p, ev.t, frames=frames, split_by=split_by, height=size, width=size)
            out.append(to_storage(downsample_frames(counts, downsample)))
            labels.append(c)
    shape = (frames, 2, size // downsample, size // downsample)
    return stack_counts(out, shape), np.asarray(labels, dtype=np.int64)


@register_dataset("synthetic")
class SyntheticSpec(DatasetSpec):
    """The embedded moving-square events: ``data.synthetic_*`` set the size; generated from the seed, not cached."""

    encoding = "events"
    needs_root = False
    cached = False

    def sensor(self, cfg):
        return cfg.synthetic_size, cfg.synthetic_size

    def classes(self, cfg, extra):
        return cfg.synthetic_classes

    def layout(self, root):
        return "generated"

    def read_split(self, root, split, cfg, progress=False, *, seed=0):
        per_class = cfg.synthetic_train_per_class if split == "train" else cfg.synthetic_test_per_class
        try:
            return make_split(split, seed=seed, num_classes=cfg.synthetic_classes, per_class=per_class,
                              size=cfg.synthetic_size, frames=cfg.frames, split_by=cfg.split_by,
                              downsample=cfg.downsample)
        except ValueError as e:
            raise ConfigError(str(e)) from None

    def class_names(self, root, cfg, extra):
        # class c moves at angle 2*pi*c/K from +x (image coordinates: y grows downwards)
        return [f"direction_{round(360 * c / cfg.synthetic_classes)}deg" for c in range(cfg.synthetic_classes)]
