"""Per-layer allocations at an exact pruned count (evo_snn.structure.allocation): the totals, the
within-layer magnitude order, ERK's density ordering, LAMP by hand, energy-aware order,
and the teacher's SynOps per weight."""

import numpy as np
import pytest
import torch
import torch.nn as nn

from evo_snn.evaluation.energy import synops_per_weight
from evo_snn.structure import allocation as A
from evo_snn.config import GenomeConfig
from evo_snn.structure.genome import Genome, GenomeOps, allocation_genome

SPARSITIES = (0.0, 1e-6, 0.1, 1 / 3, 0.5, 0.85, 0.95, 0.999, 1 - 1e-6, 1.0)


def _weights(seed=0):
    """Three layers: a first conv (small fan), a big conv, a linear readout; scales differ."""
    rng = np.random.default_rng(seed)
    return {"c1": rng.normal(size=(8, 3, 3, 3)), "c2": 0.3 * rng.normal(size=(32, 8, 3, 3)),
            "fc": 2.0 * rng.normal(size=(5, 37))}


SPW = {"c1": 2 * 64.0, "c2": 2 * 16.0, "fc": 2.0}  # T=2 x output positions (8x8, 4x4, 1)


def _counts(method, w, s):
    return A.allocation_counts(method, w, s, synops_per_weight=SPW)


@pytest.mark.parametrize("method", A.METHODS)
@pytest.mark.parametrize("s", SPARSITIES)
def test_every_method_prunes_exactly_round_s_n(method, s):
    w = _weights()
    n = np.array([v.size for v in w.values()])
    c = _counts(method, w, s)
    assert c.dtype == np.int64 and c.shape == (3,)
    assert int(c.sum()) == round(s * n.sum())
    assert (c >= 0).all() and (c <= n).all()
    masks = A.allocation_masks(method, w, s, synops_per_weight=SPW)
    assert int(sum((~m).sum() for m in masks)) == round(s * n.sum())
    assert [m.shape for m in masks] == [v.shape for v in w.values()] and all(m.dtype == np.bool_ for m in masks)


@pytest.mark.parametrize("method", A.METHODS)
def test_exact_total_on_awkward_sizes(method):
    """Odd layer sizes and sparsities whose s * n_l all have fractional parts."""
    rng = np.random.default_rng(3)
    w = [rng.normal(size=(7,)), rng.normal(size=(3, 11)), rng.normal(size=(1, 1, 1, 1)), rng.normal(size=(13, 2))]
    spw = [5.0, 1.0, 3.0, 0.5]
    total = sum(v.size for v in w)
    for s in np.linspace(0, 1, 41):
        c = A.allocation_counts(method, w, s, synops_per_weight=spw)
        assert int(c.sum()) == round(s * total), (method, s, c)
        assert all(0 <= ci <= v.size for ci, v in zip(c, w))


@pytest.mark.parametrize("method", A.METHODS)
@pytest.mark.parametrize("s", (0.2, 0.5, 0.9, 0.99))
def test_magnitude_order_within_each_layer(method, s):
    w = _weights(1)
    for (name, v), m in zip(w.items(), A.allocation_masks(method, w, s, synops_per_weight=SPW)):
        a = np.abs(v)
        if m.all() or not m.any():
            continue
        assert a[m].min() >= a[~m].max(), (method, s, name)


def test_edge_sparsities_give_dense_and_empty_nets():
    w = _weights()
    for method in A.METHODS:
        assert all(m.all() for m in A.allocation_masks(method, w, 0.0, synops_per_weight=SPW))
        assert not any(m.any() for m in A.allocation_masks(method, w, 1.0, synops_per_weight=SPW))
        for bad in (-0.01, 1.01, float("nan")):
            with pytest.raises(ValueError, match="sparsity"):
                _counts(method, w, bad)
    with pytest.raises(ValueError, match="unknown allocation"):
        A.allocation_counts("magic", w, 0.5)
    with pytest.raises(ValueError, match="synops_per_weight"):
        A.allocation_counts("energy_aware", w, 0.5)


def test_global_equals_genome_ops_global_magnitude():
    w = {k: np.abs(v).astype(np.float32) for k, v in _weights().items()}
    ops = GenomeOps(w, GenomeConfig())
    for s in (0.0, 0.3, 0.7, 0.95):
        g, h = ops.global_magnitude(s), allocation_genome("global", ops.abs, s)
        assert g.key == h.key and g.ratios == h.ratios
        flat = np.concatenate([v.ravel() for v in w.values()])
        keep = np.concatenate([m.ravel() for m in h.masks])
        if s > 0:
            assert flat[~keep].max() <= flat[keep].min()  # one threshold


def test_uniform_spreads_the_rounding_so_the_total_is_exact():
    w = [np.arange(1, 8, dtype=float)] * 3  # 3 layers of 7: 0.5 * 7 = 3.5 each, total round(10.5) = 10
    c = A.uniform(w, 0.5)
    assert c.sum() == 10 and sorted(c.tolist()) == [3, 3, 4]
    assert A.uniform(w, 0.25).sum() == round(0.25 * 21)
    big = _weights()
    c = A.uniform(big, 0.5)
    assert all(abs(ci - 0.5 * v.size) <= 1 for ci, v in zip(c, big.values()))


def test_erk_densities_follow_the_fan_and_keep_the_budget():
    shapes = [(8, 3, 3, 3), (32, 8, 3, 3), (5, 37)]
    n = np.array([np.prod(s) for s in shapes])
    raw = np.array([sum(s) / np.prod(s) for s in shapes])
    d = A.erk_densities(shapes, 0.8)
    # the small-fan first conv (17/216 per weight) is denser than the big conv (51/2304)
    assert raw[0] > raw[1] and d[0] > d[1]
    assert (d * n).sum() == pytest.approx(n.sum() - round(0.8 * n.sum()))
    # below density 1 every layer's density is proportional to its raw ERK value
    free = d < 1
    assert np.allclose(d[free] / raw[free], (d[free] / raw[free])[0])
    c = A.erk([np.ones(s) for s in shapes], 0.8)
    assert c[0] / n[0] < c[1] / n[1]  # the big conv is pruned harder


def test_erk_keeps_layers_dense_that_would_exceed_one_and_rescales_the_rest():
    # a tiny layer (raw 0.5 + ... huge) and two big ones; at low sparsity eps * raw > 1 for the tiny one
    shapes = [(2, 2), (64, 64), (128, 64)]
    n = np.array([np.prod(s) for s in shapes], dtype=float)
    raw = np.array([sum(s) / np.prod(s) for s in shapes])
    s = 0.3
    kept = n.sum() - round(s * n.sum())
    naive = kept / (raw * n).sum()
    assert naive * raw[0] > 1  # without the rule the tiny layer would be over-dense
    d = A.erk_densities(shapes, s)
    assert d[0] == 1.0 and (d[1:] < 1).all()
    eps = (kept - n[0]) / (raw[1:] * n[1:]).sum()  # solved again without the dense layer
    assert np.allclose(d[1:], eps * raw[1:])
    c = A.erk([np.ones(sh) for sh in shapes], s)
    assert c[0] == 0 and c.sum() == round(s * n.sum())


def test_erk_power_zero_is_uniform_and_linear_layers_use_fan_in_plus_fan_out():
    shapes = [(10, 20), (30, 40)]
    assert np.allclose(A.erk_densities(shapes, 0.6, power=0.0), 0.4)
    d = A.erk_densities(shapes, 0.6)
    assert d[0] / d[1] == pytest.approx((30 / 200) / (70 / 1200))
    with pytest.raises(ValueError, match="power"):
        A.erk_densities(shapes, 0.5, power=-1)


def test_lamp_scores_equal_a_hand_computation():
    w = np.array([3.0, -1.0, 2.0, 0.5])
    # w^2 ascending: 0.25, 1, 4, 9 (total 14.25); tails 14.25, 14, 13, 9
    expected = np.array([9 / 9, 1 / 14, 4 / 13, 0.25 / 14.25])
    assert np.allclose(A.lamp_scores(w), expected)
    assert np.allclose(A.lamp_scores(w.reshape(2, 2)), expected.reshape(2, 2))
    # second layer: [4, 4] -> w^2 ascending 16, 16: scores 16/32, 16/16
    v = np.array([4.0, -4.0])
    assert np.allclose(A.lamp_scores(v), [0.5, 1.0])
    assert np.allclose(A.lamp_scores(np.zeros(3)), 0.0)
    # global threshold on the scores of both layers: [1, .0714, .3077, .0175] and [.5, 1]
    # 3 of 6 pruned: 0.0175 (w=0.5), 0.0714 (w=-1), 0.3077 (w=2); the second layer keeps both
    assert A.lamp([w, v], 0.5).tolist() == [3, 0]
    # 4 of 6: next smallest is 0.5 (a 4 of the second layer), not the 3 of the first (score 1)
    assert A.lamp([w, v], 4 / 6).tolist() == [3, 1]
    # global magnitude would prune differently: |W| 0.5, 1, 2 then a 3 before any 4
    assert A.global_magnitude([w, v], 4 / 6).tolist() == [4, 0]


def test_energy_aware_prunes_the_layers_with_most_synops_per_weight_first():
    # equal magnitudes in three layers, different SynOps per weight: the dearest layer goes first
    w = {"a": np.full(10, 1.0), "b": np.full(10, 1.0), "c": np.full(10, 1.0)}
    spw = {"a": 4.0, "b": 100.0, "c": 1.0}
    assert A.energy_aware(w, 10 / 30, spw).tolist() == [0, 10, 0]
    assert A.energy_aware(w, 0.5, spw).tolist() == [5, 10, 0]
    assert A.energy_aware(w, 0.9, spw).tolist() == [10, 10, 7]
    # magnitudes and cost trade off: |W| / c; layer b's weights are 10x larger but 100x dearer
    w2 = {"a": np.linspace(1, 2, 10), "b": 10 * np.linspace(1, 2, 10)}
    c = A.energy_aware(w2, 0.5, {"a": 1.0, "b": 100.0})
    assert c.tolist() == [0, 10]  # every b score (<= 0.2) is below every a score (>= 1)
    assert A.global_magnitude(w2, 0.5).tolist() == [10, 0]
    # a sequence in layer order works the same; only the ratios between layers matter
    assert A.energy_aware(list(w.values()), 0.5, [8.0, 200.0, 2.0]).tolist() == [5, 10, 0]
    with pytest.raises(ValueError, match="no value"):
        A.energy_aware(w, 0.5, {"a": 1.0})
    with pytest.raises(ValueError, match="> 0"):
        A.energy_aware(w, 0.5, {"a": 1.0, "b": 0.0, "c": 1.0})


def test_allocation_genome_is_a_genome_with_exact_ratios():
    w = {k: np.abs(v).astype(np.float32) for k, v in _weights().items()}
    n = sum(v.size for v in w.values())
    for method in A.METHODS:
        for s in (0.0, 0.5, 0.95):
            g = allocation_genome(method, w, s, synops_per_weight=SPW)
            assert isinstance(g, Genome) and g.layers == tuple(w)
            assert round(g.sparsity * n) == round(s * n)
            assert g.ratios == tuple(int((~m).sum()) / m.size for m in g.masks)


def test_round_to_total_respects_caps_and_rejects_impossible_totals():
    z = A.round_to_total([2.6, 2.6, 0.0], [3, 2, 5], 7)
    assert z.sum() == 7 and (z <= [3, 2, 5]).all() and z[1] == 2
    assert A.round_to_total([1.2, 1.2], [5, 5], 1).tolist() == [0, 1]  # surplus from the smallest remainder, ties: first layer
    with pytest.raises(ValueError, match="cannot place"):
        A.round_to_total([1.0], [3], 4)


class _Net(nn.Module):
    """x [T*N, 2, 8, 8] -> conv 3x3 pad 1 (8x8 out) -> conv 3x3 stride 2 pad 1 (4x4) -> linear."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(2, 4, 3, padding=1, bias=False)
        self.c2 = nn.Conv2d(4, 6, 3, stride=2, padding=1, bias=False)
        self.fc = nn.Linear(6 * 16, 3, bias=False)

    def forward(self, x_seq):
        t, n = x_seq.shape[:2]
        x = self.c2(torch.relu(self.c1(x_seq.flatten(0, 1))))
        return self.fc(x.flatten(1)).view(t, n, -1).mean(0)


def test_synops_per_weight_is_about_t_times_output_positions():
    torch.manual_seed(0)
    net, t = _Net(), 3
    spw = synops_per_weight(net, torch.zeros(t, 2, 2, 8, 8), ["c1", "c2", "fc"])
    assert spw["fc"] == pytest.approx(t)  # one output position
    # convs: T x output positions, less the products with zero padding at the border
    # c1 (8x8 out, pad 1): per axis the 3 kernel offsets meet an input at 7, 8, 7 of the 8 outputs,
    # so a weight works at (22/3)^2 of the 64 positions on average
    assert spw["c1"] == pytest.approx(t * (22 / 3) ** 2)
    # c2 (stride 2, 4x4 out): per axis 3, 4, 4 of the 4 outputs -> (11/3)^2 of 16 positions
    assert spw["c2"] == pytest.approx(t * (11 / 3) ** 2)
    assert spw["c1"] > spw["c2"] > spw["fc"]  # early layers use each weight at more positions
    # what energy_aware then does: the first conv is pruned first at equal magnitudes
    w = {k: np.ones(tuple(m.weight.shape)) for k, m in [("c1", net.c1), ("c2", net.c2), ("fc", net.fc)]}
    assert A.energy_aware(w, 0.1, spw).tolist() == [58, 0, 0]  # round(0.1 * 576), all from c1 (72 weights)
    assert A.energy_aware(w, 0.2, spw).tolist() == [72, 43, 0]  # then c2
    with pytest.raises(KeyError):
        synops_per_weight(net, torch.zeros(t, 2, 2, 8, 8), ["nope"])


def test_energy_aware_with_max_ratio_keeps_every_layer_alive_at_the_exact_total():
    """Uncapped, a layer with many SynOps per weight is emptied first (the pilot's collapse);
    with max_ratio no layer passes ceil(max_ratio * n_l) and the total stays exact."""
    import numpy as np

    from evo_snn.structure import allocation

    rng = np.random.default_rng(0)
    ws = [rng.normal(size=(8, 4, 3, 3)), rng.normal(size=(16, 8, 3, 3)), rng.normal(size=(10, 64))]
    c = [1024.0, 256.0, 1.0]  # the first layer's weights are used at many positions
    total = sum(w.size for w in ws)
    free = allocation.energy_aware(ws, 0.8, c)
    assert free[0] == ws[0].size  # emptied
    for s in (0.5, 0.8, 0.9, 0.95):
        capped = allocation.energy_aware(ws, s, c, max_ratio=0.9 if s < 0.95 else 0.95)
        assert capped.sum() == allocation.target_count(s, total)
        cap = 0.9 if s < 0.95 else 0.95
        assert all(k <= np.ceil(cap * w.size) for k, w in zip(capped, ws))
    capped = allocation.energy_aware(ws, 0.8, c, max_ratio=0.9)
    assert capped[0] == np.ceil(0.9 * ws[0].size)  # still pruned hardest, up to the cap
    with pytest.raises(ValueError, match="more than max_ratio"):
        allocation.energy_aware(ws, 0.95, c, max_ratio=0.5)
