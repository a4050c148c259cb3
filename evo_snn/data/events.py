"""Events -> frames: spikingjelly's fixed-frame-number integration, and sum-pooling.

An event stream is four equally long 1-D integer arrays: ``t`` (microseconds,
in file order, normally ascending), ``x`` (column), ``y`` (row) and ``p`` (polarity, 0 = OFF,
1 = ON). :func:`integrate_frames` reproduces spikingjelly's
``integrate_events_by_fixed_frames_number`` (``datasets/utils.py``) exactly, but
vectorized, on events in file order (no sorting, like spikingjelly), and returns
an empty frame for an empty time bin where spikingjelly would raise ``IndexError``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from evo_snn.config import SPLIT_MODES  # how events are cut into frames


@dataclass(frozen=True)
class Events:
    """A stream of DVS events, all arrays ``[N]``.

    t: int64 microseconds; x: int32 column; y: int32 row; p: int8 polarity (0 OFF, 1 ON).
    """

    t: np.ndarray
    x: np.ndarray
    y: np.ndarray
    p: np.ndarray

    def __len__(self) -> int:
        return int(self.t.shape[0])

    def select(self, index) -> "Events":
        """Events at ``index`` (a boolean mask, an index array or a slice)."""
        return Events(self.t[index], self.x[index], self.y[index], self.p[index])

    @staticmethod
    def empty() -> "Events":
        return Events(
            np.zeros(0, np.int64), np.zeros(0, np.int32), np.zeros(0, np.int32), np.zeros(0, np.int8)
        )


def segment_bounds(t: np.ndarray, frames: int, split_by: str) -> tuple[np.ndarray, np.ndarray]:
    """Index bounds ``(j_l, j_r)``, each ``[frames]`` int64: frame i holds events ``j_l[i]:j_r[i]``.

    spikingjelly's ``cal_fixed_frames_number_segment_index`` on events in file order:

    ``split_by='number'``: ``di = N // frames``; frame i is ``[i*di, i*di + di)``
    and the last frame ends at N.
    ``split_by='time'``: ``dt = (t[-1] - t[0]) // frames`` (t[0], t[-1]: the first and
    last events *in file order*); frame i runs from the first to the last event
    index with ``t[0] + i*dt <= t < t[0] + (i+1)*dt``, and the last frame ends at N.
    For sorted ``t`` that is exactly the events of the time bin. ``t`` need not be
    sorted: the index ranges are then those spikingjelly computes from its masks.
    Where spikingjelly raises IndexError (a time bin without events) the frame
    is empty (``j_l == j_r``); an empty last bin starts at the first event with
    ``t >= t[0] + (frames-1)*dt`` (or at N). raises ValueError (frames < 1, bad split_by).
    """
    if frames < 1:
        raise ValueError(f"frames must be >= 1, got {frames}")
    t = np.asarray(t)
    n = int(t.shape[0])
    if split_by == "number":
        di = n // frames
        j_l = np.arange(frames, dtype=np.int64) * di
        j_r = j_l + di
    elif split_by == "time":
        if n == 0:
            return np.zeros(frames, np.int64), np.zeros(frames, np.int64)
        t64 = t.astype(np.int64, copy=False)
        dt = (int(t64[-1]) - int(t64[0])) // frames
        t_l = int(t64[0]) + np.arange(frames, dtype=np.int64) * dt
        if n < 2 or not np.any(t64[1:] < t64[:-1]):
            # sorted: first index with t >= t_l, and last index with t < t_l + dt, plus one
            j_l = np.searchsorted(t64, t_l, side="left").astype(np.int64)
            j_r = np.searchsorted(t64, t_l + dt, side="left").astype(np.int64)
        else:
            j_l, j_r = _unsorted_time_bounds(t64, t_l, dt, frames)
    else:
        raise ValueError(f"split_by must be one of {SPLIT_MODES}, got {split_by!r}")
    j_r[-1] = n
    return j_l, j_r


def _unsorted_time_bounds(t: np.ndarray, t_l: np.ndarray, dt: int, frames: int) -> tuple[np.ndarray, np.ndarray]:
    """``segment_bounds(split_by='time')`` for unsorted ``t`` (int64): first/last index per bin."""
    n = t.shape[0]
    j_l = np.zeros(frames, np.int64)
    j_r = np.zeros(frames, np.int64)
    if dt > 0:
        rel = t - t_l[0]
        inside = (rel >= 0) & (rel < dt * frames)
        idx = np.flatnonzero(inside)
        k = rel[idx] // dt  # bin of each event inside [t_l[0], t_l[0] + frames*dt)
        first = np.full(frames, n, np.int64)
        last = np.full(frames, -1, np.int64)
        np.minimum.at(first, k, idx)
        np.maximum.at(last, k, idx)
        full = last >= 0
        j_l[full] = first[full]
        j_r[full] = last[full] + 1
        if not full[-1]:
            tail = np.flatnonzero(t >= t_l[-1])
            j_l[-1] = tail[0] if tail.size else n
    else:  # dt <= 0: every bin is empty; all events go to the last frame
        j_l[-1] = 0
    return j_l, j_r


def integrate_frames(
    x: np.ndarray,
    y: np.ndarray,
    p: np.ndarray,
    t: np.ndarray,
    *,
    frames: int,
    split_by: str,
    height: int,
    width: int,
) -> np.ndarray:
    """Integrate events into ``frames`` two-channel count frames (spikingjelly's algorithm).

    x, y, p, t: ``[N]`` integer arrays; x column in ``[0, width)``, y row in
    ``[0, height)``, p polarity (channel 1 where ``p != 0``, as spikingjelly),
    t in microseconds, in file order (normally ascending; see :func:`segment_bounds`).
    Returns ``[frames, 2, height, width]`` int64 event counts; frame i counts the
    events of segment i (see :func:`segment_bounds`), at ``[p, y, x]``.
    The counts of all frames sum to N.
    raises ValueError (lengths differ, coordinate out of range, bad split_by).
    """
    x = np.asarray(x)
    y = np.asarray(y)
    p = np.asarray(p)
    t = np.asarray(t)
    n = int(t.shape[0])
    if not (x.shape == y.shape == p.shape == t.shape == (n,)):
        raise ValueError(f"x, y, p, t must be 1-D of equal length, got {x.shape}, {y.shape}, {p.shape}, {t.shape}")
    j_l, j_r = segment_bounds(t, frames, split_by)
    plane = height * width
    out = np.zeros(frames * 2 * plane, dtype=np.int64)
    if n == 0:
        return out.reshape(frames, 2, height, width)
    x64 = x.astype(np.int64, copy=False)
    y64 = y.astype(np.int64, copy=False)
    if x64.min() < 0 or x64.max() >= width or y64.min() < 0 or y64.max() >= height:
        raise ValueError(
            f"event coordinates out of range: x in [{x64.min()}, {x64.max()}], y in [{y64.min()}, {y64.max()}]; "
            f"expected 0 <= x < {width}, 0 <= y < {height}"
        )
    position = (p != 0).astype(np.int64) * plane + y64 * width + x64  # [N]
    lengths = j_r - j_l
    # Event indices of every segment, concatenated, and the frame each belongs to.
    # (Segments are contiguous and cover [0, N) in both modes; this stays correct if not.)
    starts = np.repeat(j_l - np.concatenate(([0], np.cumsum(lengths)[:-1])), lengths)
    idx = np.arange(int(lengths.sum()), dtype=np.int64) + starts
    frame_of = np.repeat(np.arange(frames, dtype=np.int64), lengths)
    out += np.bincount(frame_of * 2 * plane + position[idx], minlength=frames * 2 * plane)
    return out.reshape(frames, 2, height, width)


def downsample_frames(frames: np.ndarray, factor: int) -> np.ndarray:
    """Sum-pool the last two axes by ``factor``: ``[..., H, W] -> [..., H/factor, W/factor]``.

    Counts are preserved (the total is unchanged). raises ValueError if factor < 1
    or does not divide H and W.
    """
    if factor < 1:
        raise ValueError(f"downsample factor must be >= 1, got {factor}")
    if factor == 1:
        return frames
    *lead, h, w = frames.shape
    if h % factor or w % factor:
        raise ValueError(f"downsample factor {factor} does not divide the frame size {h}x{w}")
    return frames.reshape(*lead, h // factor, factor, w // factor, factor).sum(axis=(-3, -1))


def check_downsample(height: int, width: int, factor: int, what: str) -> None:
    """raises ValueError naming ``what`` when ``factor`` cannot pool a ``height x width`` sensor."""
    if factor < 1 or height % factor or width % factor:
        divisors = [d for d in range(1, min(height, width) + 1) if height % d == 0 and width % d == 0]
        raise ValueError(
            f"data.downsample={factor} must divide the {what} sensor size {height}x{width}; "
            f"use one of {divisors}"
        )


def stack_counts(samples: list[np.ndarray], shape: tuple[int, ...]) -> np.ndarray:
    """Stack ``[T, C, H, W]`` count arrays into ``[N, T, C, H, W]`` of the smallest fitting dtype.

    uint8 if every count <= 255, else int16 if <= 32767, else int32. ``shape`` is
    the per-sample shape (used when ``samples`` is empty).
    """
    peak = max((int(s.max()) for s in samples if s.size), default=0)
    out = np.empty((len(samples), *shape), dtype=_count_dtype(peak))
    for i, s in enumerate(samples):
        out[i] = s
    return out


def to_storage(counts: np.ndarray) -> np.ndarray:
    """One sample's counts in the smallest dtype that holds them (keeps memory low while reading)."""
    return counts.astype(_count_dtype(int(counts.max()) if counts.size else 0))


def _count_dtype(peak: int) -> type:
    """Smallest of uint8, int16, int32 that holds non-negative counts up to ``peak``."""
    return np.uint8 if peak <= 255 else np.int16 if peak <= 32767 else np.int32
