import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.nn.utils import prune

from evo_snn.config import GenomeConfig
from evo_snn.genome import Genome, GenomeOps, magnitude_mask, zeros_for

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
    from evo_snn.genome import GenomeOps as Ops

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
