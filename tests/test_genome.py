import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.nn.utils import prune

from evo_snn.config import GenomeConfig
from evo_snn.structure.genome import Genome, GenomeOps, magnitude_mask, zeros_for

SHAPES = {"conv": (4, 2, 3, 3), "fc": (5, 16)}


def make_ops(seed=0, **kw):
    rng = np.random.default_rng(seed)
    absw = {n: np.abs(rng.normal(size=s)).astype(np.float32) for n, s in SHAPES.items()}
    return GenomeOps(absw, GenomeConfig(**kw))


def assert_valid(g: Genome, cfg: GenomeConfig):
    for r, m in zip(g.ratios, g.masks):
        assert cfg.ratio_min <= r <= cfg.ratio_max
        assert int((~m).sum()) == zeros_for(r, m.size)
        assert m.dtype == np.bool_


@pytest.mark.parametrize("ratio", [0.0, 0.1, 0.37, 0.5, 0.9])
def test_magnitude_mask_matches_torch_l1_unstructured(ratio):
    w = torch.randn(6, 3, 3, 3)
    ours = magnitude_mask(w.abs().numpy(), ratio)
    theirs = prune.L1Unstructured(amount=ratio).compute_mask(w, default_mask=torch.ones_like(w)).bool().numpy()
    assert int((~ours).sum()) == int((~theirs).sum()) == zeros_for(ratio, w.numel())
    np.testing.assert_array_equal(ours, theirs)  # random weights: no ties


def test_magnitude_mask_prunes_the_smallest():
    w = np.array([[0.5, -3.0, 0.1], [2.0, -0.2, 1.0]])
    m = magnitude_mask(np.abs(w), 0.5)
    np.testing.assert_array_equal(m, [[False, True, False], [True, False, True]])


def test_genome_rejects_mask_that_disagrees_with_ratio():
    with pytest.raises(ValueError, match="zeros"):
        Genome(("a",), (0.5,), (np.ones(10, dtype=bool),))


def test_ratio_mutation_prunes_smallest_survivors_and_regrows_largest():
    ops = make_ops(ratio_mutation_prob=1.0, ratio_mutation_sigma=0.3, mask_mutation_prob=0.0)
    g = ops.magnitude([0.5, 0.5])
    rng = np.random.default_rng(3)
    for _ in range(20):
        child = ops.mutate(g, rng)
        for name, r0, m0, r1, m1 in zip(g.layers, g.ratios, g.masks, child.ratios, child.masks):
            w = ops.abs[name]
            if r1 > r0:  # pruned more: every newly pruned weight was a survivor no larger than any kept one
                newly = m0 & ~m1
                assert newly.any() or zeros_for(r1, m0.size) == zeros_for(r0, m0.size)
                if newly.any():
                    assert w[newly].max() <= w[m1].min()
            elif r1 < r0:  # regrown: the regrown weights are the largest of the pruned ones
                regrown = ~m0 & m1
                if regrown.any() and (~m1).any():
                    assert w[regrown].min() >= w[~m1].max()


def test_mask_mutation_swaps_keep_count_and_change_mask():
    ops = make_ops(ratio_mutation_prob=0.0, mask_mutation_prob=1.0, mask_swap_fraction=0.05)
    g = ops.magnitude([0.5, 0.3])
    child = ops.mutate(g, np.random.default_rng(0))
    assert child.ratios == g.ratios
    for m0, m1 in zip(g.masks, child.masks):
        assert (~m0).sum() == (~m1).sum()
        assert (m0 != m1).any()
    assert child.key != g.key


def test_crossover_takes_layers_whole_from_one_parent():
    ops = make_ops()
    a, b = ops.magnitude([0.2, 0.8]), ops.magnitude([0.7, 0.1])
    for seed in range(10):
        c, d = ops.crossover(a, b, np.random.default_rng(seed))
        for i in range(2):
            src = a if c.ratios[i] == a.ratios[i] else b
            other = b if src is a else a
            np.testing.assert_array_equal(c.masks[i], src.masks[i])
            np.testing.assert_array_equal(d.masks[i], other.masks[i])


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), lo=st.floats(0.0, 0.5), width=st.floats(0.0, 0.45),
       sigma=st.floats(0.01, 0.5), swap=st.floats(0.0, 0.2))
def test_operators_keep_genomes_valid(seed, lo, width, sigma, swap):
    cfg = dict(ratio_min=lo, ratio_max=lo + width, ratio_mutation_prob=0.7, ratio_mutation_sigma=sigma,
               mask_mutation_prob=0.7, mask_swap_fraction=swap, init_swap_fraction=swap)
    ops = make_ops(seed % 7, **cfg)
    rng = np.random.default_rng(seed)
    a, b = ops.random(rng), ops.random(rng)
    assert_valid(a, ops.cfg)
    for _ in range(3):
        a, b = ops.crossover(a, b, rng)
        a, b = ops.mutate(a, rng), ops.mutate(b, rng)
        assert_valid(a, ops.cfg)
        assert_valid(b, ops.cfg)


def test_save_load_roundtrip_uses_packed_masks(tmp_path):
    g = make_ops().random(np.random.default_rng(1))
    g.save(tmp_path)
    assert "masks" not in (tmp_path / "genome.json").read_text().split('"masks_file"')[0]
    h = Genome.load(tmp_path)
    assert h.key == g.key and h.ratios == g.ratios and h.layers == g.layers
    for m0, m1 in zip(g.masks, h.masks):
        np.testing.assert_array_equal(m0, m1)
    assert not list(tmp_path.glob("*.tmp-*"))


def test_key_is_stable_and_structure_sensitive():
    ops = make_ops()
    g1, g2 = ops.magnitude([0.5, 0.5]), ops.magnitude([0.5, 0.5])
    assert g1.key == g2.key and len(g1.key) == 16
    assert ops.magnitude([0.5, 0.6]).key != g1.key


def test_informed_mask_mutation_prunes_weak_student_weights_and_regrows_strong_teacher_weights():
    from evo_snn.config import GenomeConfig as GC
    from evo_snn.structure.genome import GenomeOps as Ops

    rng = np.random.default_rng(0)
    teacher_abs = {"a": rng.random((10, 10))}
    ops = Ops(teacher_abs, GC(ratio_mutation_prob=0.0, mask_mutation_prob=1.0, mask_swap_fraction=0.05,
                              mask_mutation="magnitude"))
    g = ops.random(np.random.default_rng(1))
    student_abs = {"a": rng.random((10, 10))}
    child = ops.mutate(g, np.random.default_rng(2), student_abs)
    before, after = g.masks[0], child.masks[0]
    assert int((~after).sum()) == int((~before).sum())  # the prune ratio is kept
    dropped, grown = before & ~after, ~before & after
    assert dropped.sum() == grown.sum() == 5
    # the dropped ones are the 5 survivors of smallest student |W|; the regrown ones the 5
    # pruned connections of largest teacher |W|
    assert set(np.flatnonzero(dropped)) == set(np.flatnonzero(before)[np.argsort(student_abs["a"][before])[:5]])
    assert set(np.flatnonzero(grown)) == set(np.flatnonzero(~before)[np.argsort(-teacher_abs["a"][~before])[:5]])
    # deterministic: the informed swap draws no random numbers of its own
    assert ops.mutate(g, np.random.default_rng(3), student_abs).key == child.key


# ---------------------------------------------------------------- limits and ties (issue 7, mutation testing)
def _first_by(values, idx, k, largest=False):
    """The k indices of ``idx`` of smallest (largest) ``values``, ties broken by position."""
    return sorted(idx, key=lambda i: (-values[i] if largest else values[i], i))[:k]


def _tied(seed, shape):
    """|W| with many ties (three distinct values), where an unstable argsort reorders equal entries."""
    return np.random.default_rng(seed).integers(0, 3, size=shape).astype(np.float32)


def test_genome_errors_name_what_is_wrong():
    with pytest.raises(ValueError, match="^layers, ratios and masks must have the same length$"):
        Genome(("a", "b"), (0.5,), (np.ones(10, dtype=bool),))
    with pytest.raises(ValueError, match="mask of a must be bool, got int"):
        Genome(("a",), (0.0,), (np.ones(10, dtype=np.int64),))
    with pytest.raises(ValueError, match=r"mask of a has 0 zeros, ratio 0.5 needs 5$"):
        Genome(("a",), (0.5,), (np.ones(10, dtype=bool),))


def test_save_creates_missing_parents_and_records_the_sparsity(tmp_path):
    import json

    g = make_ops().magnitude([0.3, 0.6])
    d = tmp_path / "run" / "genomes" / g.key
    g.save(d)
    meta = json.loads((d / "genome.json").read_text())
    assert meta["sparsity"] == pytest.approx(g.sparsity) and meta["masks_file"] == "masks.npz"
    assert Genome.load(d).key == g.key


def test_load_roundtrips_layers_whose_size_is_not_a_multiple_of_8(tmp_path):
    rng = np.random.default_rng(0)
    ops = GenomeOps({"a": rng.random((3, 5)), "b": rng.random(7)}, GenomeConfig())
    g = ops.magnitude([0.4, 0.3])
    g.save(tmp_path)
    h = Genome.load(tmp_path)
    assert h.key == g.key and [m.shape for m in h.masks] == [(3, 5), (7,)]
    for m0, m1 in zip(g.masks, h.masks):
        np.testing.assert_array_equal(m0, m1)


def test_load_rejects_masks_that_do_not_match_the_key(tmp_path):
    ops = make_ops(ratio_mutation_prob=0.0, mask_mutation_prob=1.0)
    g = ops.magnitude([0.5, 0.5])
    h = ops.mutate(g, np.random.default_rng(0))  # same ratios, other masks
    g.save(tmp_path / "g")
    h.save(tmp_path / "h")
    (tmp_path / "g" / "masks.npz").write_bytes((tmp_path / "h" / "masks.npz").read_bytes())
    with pytest.raises(ValueError, match="masks.npz does not match the key in genome.json"):
        Genome.load(tmp_path / "g")


def test_magnitude_takes_ratios_by_layer_name_or_in_layer_order():
    ops = make_ops()
    assert ops.magnitude({"conv": 0.5, "fc": 0.3}).key == ops.magnitude([0.5, 0.3]).key


def test_global_magnitude_is_one_threshold_over_every_layer():
    rng = np.random.default_rng(0)
    absw = {"a": rng.random((4, 5)), "b": rng.random(30), "c": rng.random((3, 10))}
    g = GenomeOps(absw, GenomeConfig()).global_magnitude(0.4)
    flat = np.concatenate([w.ravel() for w in absw.values()])
    keep = flat > np.sort(flat)[zeros_for(0.4, flat.size) - 1]
    np.testing.assert_array_equal(np.concatenate([m.ravel() for m in g.masks]), keep)
    assert g.ratios == tuple(float((~m).mean()) for m in g.masks)
    with pytest.raises(ValueError, match=r"sparsity must be in \[0, 1\)"):
        GenomeOps(absw, GenomeConfig()).global_magnitude(1.0)


def test_pruning_ties_are_broken_by_layer_order_then_position():
    absw = {"a": _tied(1, (8, 5)), "b": _tied(2, 60)}
    flat = np.concatenate([w.ravel() for w in absw.values()])
    g = GenomeOps(absw, GenomeConfig()).global_magnitude(0.5)
    pruned = np.flatnonzero(~np.concatenate([m.ravel() for m in g.masks]))
    assert sorted(pruned) == sorted(_first_by(flat, range(flat.size), 50))
    m = magnitude_mask(absw["b"], 0.4)
    assert sorted(np.flatnonzero(~m)) == sorted(_first_by(absw["b"], range(60), 24))


def test_uniform_magnitude_accepts_dense_and_refuses_ratio_1():
    ops = make_ops()
    g = ops.uniform_magnitude(0.0)
    assert g.ratios == (0.0, 0.0) and all(m.all() for m in g.masks)
    for bad in (1.0, -0.1):
        with pytest.raises(ValueError, match=r"ratio must be in \[0, 1\)"):
            ops.uniform_magnitude(bad)


def test_initial_ratios_are_drawn_within_the_bounds():
    ops = make_ops(ratio_min=0.1, ratio_max=0.5, init_swap_fraction=0.0)
    rng = np.random.default_rng(0)
    ratios = np.array([ops.random(rng).ratios for _ in range(30)]).ravel()
    assert ((ratios >= 0.1) & (ratios < 0.5)).all()  # uniform: never clipped onto a bound
    assert 0.25 < ratios.mean() < 0.35


def test_ratio_mutation_steps_are_centred_with_sigma():
    ops = make_ops(ratio_min=0.0, ratio_max=0.9, ratio_mutation_prob=1.0, ratio_mutation_sigma=0.02,
                   mask_mutation_prob=0.0)
    g = ops.magnitude([0.3, 0.3])
    rng = np.random.default_rng(0)
    steps = np.array([ops.mutate(g, rng).ratios for _ in range(50)]).ravel() - 0.3
    assert abs(steps.mean()) < 0.01 and 0.01 < steps.std() < 0.03 and np.abs(steps).max() < 0.1


@pytest.mark.parametrize("mode", ["random", "magnitude"])
@pytest.mark.parametrize("fraction", [0.0, 0.05])
def test_mask_mutation_swaps_the_configured_number_of_connections(mode, fraction):
    ops = make_ops(ratio_mutation_prob=0.0, mask_mutation_prob=1.0, mask_swap_fraction=fraction, mask_mutation=mode)
    g = ops.magnitude([0.5, 0.3])
    child = ops.mutate(g, np.random.default_rng(0))
    for m0, m1 in zip(g.masks, child.masks):
        k = max(1, round(fraction * m0.size))  # at least one connection
        assert int((m0 & ~m1).sum()) == int((~m0 & m1).sum()) == k


@pytest.mark.parametrize("mode", ["random", "magnitude"])
def test_mask_mutation_of_an_almost_full_or_empty_layer_swaps_what_it_can(mode):
    ops = make_ops(ratio_min=0.0, ratio_max=0.99, ratio_mutation_prob=0.0, mask_mutation_prob=1.0,
                   mask_swap_fraction=0.2, mask_mutation=mode)
    g = ops.magnitude([0.98, 0.02])  # conv: 1 survivor of 72; fc: 2 pruned of 80
    child = ops.mutate(g, np.random.default_rng(0))
    assert child.ratios == g.ratios
    for m0, m1, k in zip(g.masks, child.masks, (1, 2)):
        assert int((m0 & ~m1).sum()) == int((~m0 & m1).sum()) == k


@pytest.mark.parametrize("student_abs", [None, {}])
def test_informed_mask_mutation_without_the_layers_student_prunes_by_teacher(student_abs):
    ops = make_ops(ratio_mutation_prob=0.0, mask_mutation_prob=1.0, mask_swap_fraction=0.05, mask_mutation="magnitude")
    g = ops.random(np.random.default_rng(1))
    child = ops.mutate(g, np.random.default_rng(2), student_abs)
    for name, m0, m1 in zip(g.layers, g.masks, child.masks):
        w, k = ops.abs[name], round(0.05 * m0.size)
        assert set(np.flatnonzero(m0 & ~m1)) == set(np.flatnonzero(m0)[np.argsort(w[m0])[:k]])


def test_mask_updates_break_ties_by_position():
    from evo_snn.structure.genome import _informed_swap, _match_count

    w, v = _tied(3, 100), _tied(4, 100)
    mask = magnitude_mask(np.random.default_rng(5).random(100), 0.5)
    kept, pruned = np.flatnonzero(mask), np.flatnonzero(~mask)
    more = _match_count(mask, 70, w)  # prune 20 more: the smallest surviving |W|
    assert sorted(np.flatnonzero(mask & ~more)) == sorted(_first_by(w, kept, 20))
    fewer = _match_count(mask, 30, w)  # regrow 20: the largest pruned |W|
    assert sorted(np.flatnonzero(~mask & fewer)) == sorted(_first_by(w, pruned, 20, largest=True))
    swapped = _informed_swap(mask, 15, w, v)
    assert sorted(np.flatnonzero(mask & ~swapped)) == sorted(_first_by(w, kept, 15))
    assert sorted(np.flatnonzero(~mask & swapped)) == sorted(_first_by(v, pruned, 15, largest=True))
