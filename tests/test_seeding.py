"""genome.init_allocations: the initial population seeded with allocation rules at exact pruned counts."""

import numpy as np
import pytest

from evo_snn import allocation
from evo_snn.config import Config, ConfigError, GenomeConfig, SearchConfig
from evo_snn.genome import GenomeOps
from evo_snn.nsga import StructureSearch, allocation_seeds, initial_genomes


def _abs():
    rng = np.random.default_rng(3)
    return {"conv1": np.abs(rng.normal(size=(8, 2, 3, 3))), "conv2": np.abs(rng.normal(size=(16, 8, 3, 3))),
            "fc": np.abs(rng.normal(size=(4, 64)))}


def test_seeded_genomes_have_exactly_the_allocations_counts():
    teacher_abs = _abs()
    cfg = GenomeConfig(ratio_min=0.1, ratio_max=0.9, init_allocations=("global", "uniform", "lamp", "erk"),
                       init_allocation_fraction=1.0)
    ops = GenomeOps(teacher_abs, cfg)
    gs = initial_genomes(ops, cfg, 8, np.random.default_rng(0))
    assert len(gs) == 8
    n_total = sum(a.size for a in teacher_abs.values())
    expected_s = [0.1 + 0.8 * (i + 1) / 2 for i in range(2)]  # 8 genomes over 4 rules: 2 each
    for j, method in enumerate(("global", "uniform", "lamp", "erk")):
        for i, s in enumerate(expected_s):
            g = gs[2 * j + i]
            counts = allocation.allocation_counts(method, teacher_abs, s)
            assert [int((~m).sum()) for m in g.masks] == counts.tolist(), (method, s)
            assert int(sum((~m).sum() for m in g.masks)) == round(s * n_total)
            # magnitude within each layer
            for m, c, a in zip(g.masks, counts, teacher_abs.values()):
                assert (m == allocation.mask_from_count(a, int(c))).all()
    assert gs[0].key == ops.global_magnitude(expected_s[0]).key  # 'global' is one |W| threshold


def test_seed_counts_split_evenly_and_rest_random():
    teacher_abs = _abs()
    cfg = GenomeConfig(init_allocations=("lamp", "erk", "uniform"), init_allocation_fraction=0.5)
    ops = GenomeOps(teacher_abs, cfg)
    seeds = allocation_seeds(ops, cfg, 16)  # 8 over 3 rules: 3, 3, 2
    assert len(seeds) == 8
    gs = initial_genomes(ops, cfg, 16, np.random.default_rng(5))
    assert [g.key for g in gs[:8]] == [g.key for g in seeds]
    rng = np.random.default_rng(5)
    assert [g.key for g in gs[8:]] == [ops.random(rng).key for _ in range(8)]
    # with init_global_fraction: global first, then the rules, capped at the population
    cfg2 = GenomeConfig(init_global_fraction=0.5, init_allocations=("erk",), init_allocation_fraction=1.0)
    gs2 = initial_genomes(GenomeOps(teacher_abs, cfg2), cfg2, 4, np.random.default_rng(0))
    assert len(gs2) == 4
    assert gs2[0].key == ops.global_magnitude(0.95 / 2).key
    assert gs2[2].key == ops.allocation("erk", 0.95 / 4).key


def test_default_is_unchanged():
    teacher_abs = _abs()
    ops = GenomeOps(teacher_abs, GenomeConfig())
    assert allocation_seeds(ops, GenomeConfig(), 8) == []
    plain = StructureSearch(ops, lambda g, s: None, SearchConfig(population=8, generations=0, seed=2), GenomeConfig(),
                            progress=False).initial_genomes()
    rng = np.random.default_rng(2)
    assert [g.key for g in plain] == [ops.random(rng).key for _ in range(8)]


def test_config_checks_init_allocations():
    cfg = Config().override(["genome.init_allocations=[global,uniform,lamp,erk]"]).validate()
    assert cfg.genome.init_allocations == ("global", "uniform", "lamp", "erk")
    with pytest.raises(ConfigError, match="init_allocations"):
        Config().override(["genome.init_allocations=[magic]"]).validate()
    with pytest.raises(ConfigError, match="init_allocation_fraction"):
        Config().override(["genome.init_allocation_fraction=1.5"]).validate()
