"""Per-layer prune allocations at an exact total pruned count, magnitude pruning within each layer.

An *allocation* spreads a pruning budget over the prunable layers of a net. Every rule
here takes the teacher's weights of L layers (``W_l``, any shapes, e.g. conv
``[c_out, c_in/groups, k_h, k_w]`` or linear ``[n_out, n_in]``; only |W| is used) and a
sparsity s in [0, 1] over all of them, and returns the per-layer numbers of pruned
weights ``z_l`` (int64 ``[L]``) with

    sum_l z_l == round(s * N),   0 <= z_l <= n_l,

N = sum_l n_l being the number of prunable weights (Python's round-half-even, the rule of
``zeros_for``, which ``genome`` uses too). Within a layer the z_l smallest |W| are pruned (``masks_from_counts``,
ties by position), so a result is a ``genome.Genome`` (``genome.allocation_genome``: ratios
z_l / n_l and the masks). The rules:

- ``global_magnitude``: one |W| threshold over all layers (the baseline ``global``;
  the same masks as ``GenomeOps.global_magnitude``). Ties by layer order, then position.
- ``uniform``: the same ratio s in every layer, z_l = s * n_l rounded so that the total
  is exact (largest remainder).
- ``erk``: Erdős–Rényi-Kernel densities of RigL (Evci et al., "Rigging the Lottery:
  Making All Tickets Winners", ICML 2020, section 3 and its ``sparse_utils`` code): the
  kept fraction of layer l is d_l = eps * (sum of the weight's dims / product of its
  dims) ** power, i.e. (c_in + c_out + k_h + k_w) / (c_in c_out k_h k_w) for a conv and
  (n_in + n_out) / (n_in n_out) for a linear layer; a layer whose density would exceed 1
  is kept dense and eps is solved again for the others, so that the kept total is
  N - round(s * N) exactly. ``power`` (RigL's ``erk_power_scale``, default 1) is the
  exponent gamma of a density law.
- ``lamp``: Layer-Adaptive Magnitude-based Pruning (Lee et al., "Layer-adaptive
  sparsity for the magnitude-based pruning", ICLR 2021, Eq. 2): in each layer, with
  the weights sorted by w^2 ascending (index u), score(u) = w_u^2 / sum_{v >= u} w_v^2;
  then one global threshold on the scores (the round(s * N) smallest are pruned). The
  largest weight of every layer scores 1, so no layer is emptied before s = 1.
  ``tempered_lamp`` goes from global magnitude (tau = 0) to LAMP (tau = 1): the law
  'lamp' of the smooth genomes (``GenomeOps.law``).
- ``energy_aware``: one global threshold on |W| / c_l, c_l being the dense synaptic
  operations per weight per sample of layer l (``synops_per_weight``: NeuroBench dense
  SynOps of the layer on the teacher, divided by its weights: about T x the layer's
  output positions for a conv, T for a linear layer). A weight used at many positions
  costs more energy per unit of magnitude, so the layers with most SynOps per weight
  are pruned first.

All rules are numpy, deterministic, and torch-free (the SynOps per weight of ``energy_aware`` come from
``evo_snn.evaluation.energy.synops_per_weight``).
``allocation_masks(method, weights, sparsity, ...)`` gives the keep-masks of any rule.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np



def zeros_for(ratio: float, n: int) -> int:
    """Number of pruned weights for prune ratio ``ratio`` in [0, 1] over ``n`` weights."""
    # Python's round() is round-half-even, the same rule torch.nn.utils.prune uses.
    return int(round(ratio * n))

METHODS = ("global", "uniform", "erk", "lamp", "energy_aware")
"""The allocation rules by name (``allocation_counts`` / ``allocation_masks``)."""


# ------------------------------------------------------------------ helpers
def _abs_list(weights) -> list[np.ndarray]:
    """|W| of each layer as float64 arrays, from a sequence or a {name: array} mapping."""
    seq = list(weights.values()) if isinstance(weights, Mapping) else list(weights)
    if not seq:
        raise ValueError("an allocation needs at least one layer")
    out = []
    for w in seq:
        a = np.abs(np.asarray(w, dtype=np.float64))
        if a.size == 0:
            raise ValueError(f"a layer has no weights (shape {a.shape})")
        if not np.isfinite(a).all():
            raise ValueError("weights must be finite")
        out.append(a)
    return out


def target_count(sparsity: float, total: int) -> int:
    """round(sparsity * total), the number of weights an allocation prunes.

    sparsity: a fraction in [0, 1]; raises ValueError outside (or NaN)."""
    s = float(sparsity)
    if not 0.0 <= s <= 1.0:
        raise ValueError(f"sparsity must be in [0, 1], got {sparsity}")
    return zeros_for(s, int(total))


def round_to_total(real: Sequence[float], caps: Sequence[int], total: int) -> np.ndarray:
    """Integers z_l with 0 <= z_l <= caps[l] and sum z_l == total, close to ``real`` (floats).

    Largest-remainder rounding: z = floor(clip(real, 0, caps)), then the missing units go to
    the layers with the largest fractional parts (ties by layer order), or the surplus is
    taken from the smallest (a float error in ``real`` can leave either). raises ValueError
    when ``total`` is not in [0, sum caps]."""
    caps = np.asarray(caps, dtype=np.int64)
    total = int(total)
    if not 0 <= total <= int(caps.sum()):
        raise ValueError(f"cannot place {total} pruned weights in layers of {caps.tolist()} weights")
    r = np.clip(np.asarray(real, dtype=np.float64), 0.0, caps.astype(np.float64))
    z = np.minimum(np.floor(r).astype(np.int64), caps)
    frac = r - z
    diff = total - int(z.sum())
    while diff > 0:  # add to the largest remainders among the layers with room
        room = np.flatnonzero(z < caps)
        order = room[np.argsort(-frac[room], kind="stable")][:diff]
        z[order] += 1
        frac[order] = -1.0  # a second unit only once every layer with room has had one
        diff = total - int(z.sum())
    while diff < 0:  # take from the smallest remainders among the non-empty layers
        have = np.flatnonzero(z > 0)
        order = have[np.argsort(frac[have], kind="stable")][:-diff]
        z[order] -= 1
        frac[order] = 2.0
        diff = total - int(z.sum())
    return z


def _threshold_counts(scores: list[np.ndarray], sparsity: float) -> np.ndarray:
    """Per-layer counts of the round(s * N) smallest of all ``scores`` (one global
    threshold; ties by layer order, then position)."""
    flat = np.concatenate([s.ravel() for s in scores])
    k = target_count(sparsity, flat.size)
    layer_of = np.repeat(np.arange(len(scores)), [s.size for s in scores])
    pruned = np.argsort(flat, kind="stable")[:k]
    return np.bincount(layer_of[pruned], minlength=len(scores)).astype(np.int64)


def mask_from_count(weight_abs: np.ndarray, zeros: int) -> np.ndarray:
    """Keep-mask (bool, shape of ``weight_abs``, True = kept) pruning the ``zeros`` smallest
    |W| of one layer (ties by position, as ``genome.magnitude_mask``).
    raises ValueError when ``zeros`` is not in [0, size]."""
    a = np.abs(np.asarray(weight_abs))
    n = a.size
    if not 0 <= int(zeros) <= n:
        raise ValueError(f"cannot prune {zeros} of {n} weights")
    keep = np.ones(n, dtype=bool)
    keep[np.argsort(a.ravel(), kind="stable")[: int(zeros)]] = False
    return keep.reshape(a.shape)


def masks_from_counts(weights, counts: Sequence[int]) -> list[np.ndarray]:
    """Keep-masks of every layer: the counts[l] smallest |W| of layer l pruned (``mask_from_count``).
    weights: a sequence or {name: array} of L layers; counts: L ints. raises ValueError on a
    length mismatch or a count outside [0, n_l]."""
    ws = list(weights.values()) if isinstance(weights, Mapping) else list(weights)
    if len(ws) != len(counts):
        raise ValueError(f"{len(counts)} counts for {len(ws)} layers")
    return [mask_from_count(w, int(c)) for w, c in zip(ws, counts)]


# ------------------------------------------------------------------ rules
def global_magnitude(weights, sparsity: float) -> np.ndarray:
    """Pruned counts [L] of one |W| threshold over all layers: the round(s * N) smallest |W|
    of the net (ties by layer order, then position). weights: L arrays or {name: array};
    sparsity in [0, 1]. raises ValueError for a sparsity outside [0, 1] or no layers."""
    return _threshold_counts(_abs_list(weights), sparsity)


def uniform(weights, sparsity: float) -> np.ndarray:
    """Pruned counts [L] with the same ratio s in every layer: z_l = s * n_l, rounded by the
    largest remainder (ties by layer order) so that the total is exactly round(s * N)."""
    ws = _abs_list(weights)
    n = np.array([w.size for w in ws], dtype=np.int64)
    k = target_count(sparsity, int(n.sum()))
    return round_to_total(float(sparsity) * n, n, k)


def stages(shapes: Sequence[Sequence[int]]) -> np.ndarray:
    """The stage of each layer (int64 [L]) for per-stage density-law exponents: layers with the
    same number of output channels (conv ``c_out``, linear ``n_out``: a shape's first dim) are
    one stage, numbered in order of first appearance. For ``resnet18_tiny`` that is the stem
    with layer1, layer2, layer3, layer4 (shortcut convs with their stage) and the classifier."""
    ids: dict[int, int] = {}
    return np.array([ids.setdefault(int(s[0]) if len(s) else 1, len(ids)) for s in shapes], dtype=np.int64)


def erk_densities(shapes: Sequence[Sequence[int]], sparsity: float, power=1.0) -> np.ndarray:
    """Kept fractions d_l in [0, 1] (float64 [L]) of the Erdős–Rényi-Kernel rule (RigL,
    Evci et al. 2020): d_l = min(1, eps * (sum(shape_l) / prod(shape_l)) ** power), with
    eps such that sum_l d_l n_l == N - round(s * N) (layers at d = 1 are kept dense and
    eps is solved for the rest, repeatedly). shapes: the weight shapes (conv
    [c_out, c_in/groups, k_h, k_w], linear [n_out, n_in]); power: the exponent gamma (>= 0;
    0 gives uniform densities), one float for every layer or a sequence [L] of per-layer
    exponents (per-stage exponents: ``power[stages(shapes)]``). Real-valued: ``erk`` rounds
    them to exact counts. raises ValueError for an empty shape, a sparsity outside [0, 1],
    a negative power or a power sequence of another length."""
    pw = np.asarray(power, dtype=np.float64)
    if (pw < 0).any() or not np.isfinite(pw).all():
        raise ValueError(f"power must be finite and >= 0, got {power}")
    n = np.array([int(np.prod(s)) for s in shapes], dtype=np.float64)
    if len(n) == 0 or (n <= 0).any():
        raise ValueError(f"every layer needs weights, got shapes {list(map(tuple, shapes))}")
    if pw.ndim > 1 or (pw.ndim == 1 and len(pw) != len(n)):
        raise ValueError(f"power: one exponent or one per layer ({len(n)}), got {pw.size}")
    raw = np.array([float(np.sum(s)) / float(np.prod(s)) for s in shapes]) ** pw
    kept = n.sum() - target_count(sparsity, int(n.sum()))
    dense = np.zeros(len(n), dtype=bool)
    while True:
        rest = ~dense
        budget = kept - n[dense].sum()
        divisor = float((raw[rest] * n[rest]).sum())
        eps = budget / divisor if divisor > 0 else 0.0
        over = rest & (eps * raw > 1.0)
        if not over.any():
            break
        dense |= over  # eps only grows as layers leave, so these stay dense
    d = np.where(dense, 1.0, np.clip(eps * raw, 0.0, 1.0))
    return d


def erk(weights, sparsity: float, power=1.0) -> np.ndarray:
    """Pruned counts [L] of the Erdős–Rényi-Kernel allocation (``erk_densities``): layer l keeps
    about d_l * n_l weights, a layer of small fan (few weights for its dims) is denser; the
    counts are rounded (largest remainder) so that the total pruned is exactly round(s * N)."""
    ws = _abs_list(weights)
    n = np.array([w.size for w in ws], dtype=np.int64)
    d = erk_densities([w.shape if w.ndim else (1,) for w in ws], sparsity, power)
    return round_to_total((1.0 - d) * n, n, target_count(sparsity, int(n.sum())))


def lamp_scores(weight) -> np.ndarray:
    """LAMP scores (Lee et al. 2021, Eq. 2) of one layer, float64, the shape of ``weight``:
    with u indexing the weights by w^2 ascending (ties by position), score(u) = w_u^2 /
    sum_{v >= u} w_v^2, in [0, 1]; the largest weight scores 1 (0 where the layer's
    remaining weights are all zero). Non-decreasing in |w| within the layer."""
    w2 = np.square(np.asarray(weight, dtype=np.float64)).ravel()
    order = np.argsort(w2, kind="stable")
    sorted_w2 = w2[order]
    tail = np.cumsum(sorted_w2[::-1])[::-1]  # tail[u] = sum_{v >= u} w_v^2
    with np.errstate(invalid="ignore", divide="ignore"):
        s = np.where(tail > 0, sorted_w2 / np.where(tail > 0, tail, 1.0), 0.0)
    out = np.empty_like(s)
    out[order] = s
    return out.reshape(np.shape(weight))


def lamp(weights, sparsity: float) -> np.ndarray:
    """Pruned counts [L] of LAMP: one global threshold on ``lamp_scores`` of every layer
    (the round(s * N) smallest scores pruned; ties by layer order, then position). Within a
    layer the pruned weights are then the smallest |W| (``masks_from_counts``)."""
    return _threshold_counts([lamp_scores(w) for w in _abs_list(weights)], sparsity)


def tempered_lamp(weights, sparsity: float, tau: float) -> np.ndarray:
    """Pruned counts [L] of the density law 'lamp' of a smooth genome (``GenomeOps.law``):
    one global threshold on lamp_score ** tau x |W| ** (1 - tau) (in logs; a weight with a
    zero score or a zero |W| scores -inf, pruned first), so tau = 0 is global magnitude and
    tau = 1 is LAMP. weights: a sequence or {name: array} of L layers (used as given, not
    checked as ``_abs_list`` does)."""
    scores = []
    for a in (weights.values() if isinstance(weights, Mapping) else weights):
        ls, w = lamp_scores(a), np.abs(a).astype(np.float64)
        ok = (ls > 0) & (w > 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            scores.append(np.where(ok, tau * np.log(np.where(ok, ls, 1.0)) + (1.0 - tau) * np.log(np.where(ok, w, 1.0)), -np.inf))
    return _threshold_counts(scores, sparsity)


def _capped_threshold_counts(scores: list[np.ndarray], sparsity: float, max_ratio: float) -> np.ndarray:
    """``_threshold_counts`` with no layer pruned beyond ceil(max_ratio * n_l): the
    round(s * N) smallest scores among each layer's ceil(max_ratio * n_l) smallest (exact
    total; ties by layer order, then position). raises ValueError when the caps cannot hold
    the total."""
    sizes = [s.size for s in scores]
    k = target_count(sparsity, sum(sizes))
    caps = [min(n, int(np.ceil(max_ratio * n))) for n in sizes]
    if k > sum(caps):
        raise ValueError(f"sparsity {sparsity} needs {k} pruned weights, more than max_ratio {max_ratio} allows ({sum(caps)})")
    parts = [np.sort(sc.ravel(), kind="stable")[:c] for sc, c in zip(scores, caps)]
    flat = np.concatenate(parts) if parts else np.zeros(0)
    layer_of = np.repeat(np.arange(len(scores)), caps)
    pruned = np.argsort(flat, kind="stable")[:k]
    return np.bincount(layer_of[pruned], minlength=len(scores)).astype(np.int64)


def energy_aware(weights, sparsity: float, synops_per_weight: Sequence[float] | Mapping[str, float],
                 max_ratio: float | None = None) -> np.ndarray:
    """Pruned counts [L] of one global threshold on |W_l| / c_l (ties by layer order, then position).

    max_ratio: no layer is pruned beyond ceil(max_ratio * n_l) weights (``genome.ratio_max``
    in the baselines); None = no cap. Without it, on the CIFAR-10 space (SynOps per weight
    differing ~64x between the first and last stage) the threshold empties the first 15 of 21
    layers and the net learns nothing (RESULTS.md, allocation pilot).

    synops_per_weight: c_l > 0, dense synaptic operations per weight per sample of each layer
    (``synops_per_weight``; about T x output positions), as a sequence in the layers' order
    or, with ``weights`` a mapping, a {name: c_l} mapping holding every layer. Only the ratio
    between layers matters. raises ValueError for a missing layer, a length mismatch or a
    c_l that is not finite and > 0."""
    ws = _abs_list(weights)
    if isinstance(synops_per_weight, Mapping):
        if not isinstance(weights, Mapping):
            raise ValueError("synops_per_weight as a mapping needs weights as a {name: array} mapping")
        missing = [k for k in weights if k not in synops_per_weight]
        if missing:
            raise ValueError(f"synops_per_weight has no value for {missing}")
        c = [float(synops_per_weight[k]) for k in weights]
    else:
        c = [float(v) for v in synops_per_weight]
    if len(c) != len(ws):
        raise ValueError(f"{len(c)} synops_per_weight values for {len(ws)} layers")
    if not all(np.isfinite(v) and v > 0 for v in c):
        raise ValueError(f"synops_per_weight must be finite and > 0, got {c}")
    scores = [w / v for w, v in zip(ws, c)]
    return _threshold_counts(scores, sparsity) if max_ratio is None else _capped_threshold_counts(scores, sparsity, max_ratio)


def allocation_counts(method: str, weights, sparsity: float, *, synops_per_weight=None, power: float = 1.0,
                      max_ratio: float | None = None) -> np.ndarray:
    """Pruned counts [L] (int64, summing to round(s * N)) of the rule ``method`` (``METHODS``).
    synops_per_weight: needed by ``energy_aware``; max_ratio: ``energy_aware``'s per-layer
    cap (None = none); power: ``erk``'s exponent.
    raises ValueError for an unknown method or a missing synops_per_weight."""
    if method == "global":
        return global_magnitude(weights, sparsity)
    if method == "uniform":
        return uniform(weights, sparsity)
    if method == "erk":
        return erk(weights, sparsity, power)
    if method == "lamp":
        return lamp(weights, sparsity)
    if method == "energy_aware":
        if synops_per_weight is None:
            raise ValueError("energy_aware needs synops_per_weight (see allocation.synops_per_weight)")
        return energy_aware(weights, sparsity, synops_per_weight, max_ratio)
    raise ValueError(f"unknown allocation method {method!r}; known: {list(METHODS)}")


def allocation_masks(method: str, weights, sparsity: float, **kwargs) -> list[np.ndarray]:
    """Keep-masks (bool, True = kept, one per layer, shaped as its weight) of ``method`` at
    ``sparsity``: ``allocation_counts`` then the smallest |W| of each layer pruned. kwargs as
    ``allocation_counts``."""
    return masks_from_counts(weights, allocation_counts(method, weights, sparsity, **kwargs))


__all__ = ["METHODS", "allocation_counts", "allocation_masks", "energy_aware", "erk",
           "erk_densities", "global_magnitude", "lamp", "lamp_scores", "mask_from_count", "masks_from_counts",
           "round_to_total", "target_count", "tempered_lamp", "uniform", "zeros_for"]
