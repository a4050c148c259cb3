"""genome.init_allocations: the initial population seeded with allocation rules at exact pruned counts."""

import numpy as np
import pytest

from evo_snn.structure import allocation
from evo_snn.config import Config, ConfigError, GenomeConfig, SearchConfig
from evo_snn.structure.genome import GenomeOps
from evo_snn.search.nsga import StructureSearch, allocation_seeds, initial_genomes


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


# ---------------------------------------------------------------- smooth allocations (genome.mutation='smooth')
def _total(g):
    return int(sum((~m).sum() for m in g.masks))


def test_density_laws_hit_the_exact_count_and_reduce_to_the_rules():
    teacher_abs = _abs()
    ops = GenomeOps(teacher_abs, GenomeConfig(mutation="smooth"))
    n = sum(a.size for a in teacher_abs.values())
    for s in (0.3, 0.77, 0.95):
        for law, p in (("erk", 0.0), ("erk", 0.6), ("erk", 1.7), ("lamp", 0.0), ("lamp", 0.4), ("lamp", 1.3)):
            g = ops.law(law, s, p)
            assert _total(g) == round(s * n), (law, p, s)
            assert ops.params[g.key] == (law, s, p)
        assert ops.law("erk", s, 1.0).key == ops.allocation("erk", s).key
        assert ops.law("lamp", s, 1.0).key == ops.allocation("lamp", s).key
        assert ops.law("lamp", s, 0.0).key == ops.global_magnitude(s).key
        assert ops.law("erk", s, 0.0).key == ops.allocation("uniform", s).key
    with pytest.raises(ValueError, match="density law"):
        ops.law("magic", 0.5, 1.0)


def test_level_switch_and_smooth_mutation_keep_the_total_exact():
    teacher_abs = _abs()
    cfg = GenomeConfig(mutation="smooth", level_switch_prob=0.7, level_switch_fraction=0.05)
    ops = GenomeOps(teacher_abs, cfg)
    rng = np.random.default_rng(0)
    g = ops.law("erk", 0.8, 1.0)
    total = _total(g)
    changed = 0
    for _ in range(200):
        child = ops.level_switch(g, rng)
        assert _total(child) == total
        moved = [int((~a).sum()) - int((~b).sum()) for a, b in zip(child.masks, g.masks)]
        nz = [i for i, d in enumerate(moved) if d]
        assert len(nz) in (0, 2) and (not nz or (nz[1] - nz[0] == 1 and sum(moved) == 0))  # adjacent layers only
        for m, a in zip(child.masks, teacher_abs.values()):  # magnitude within each layer
            assert (m == allocation.mask_from_count(a, int((~m).sum()))).all()
        changed += bool(nz)
        g = child
    assert changed > 100
    # mutation (law known or not) and 'crossover' keep every total exact, over generations
    pop = [ops.random(rng) for _ in range(8)]
    for _ in range(30):
        nxt = []
        for a, b in zip(pop[::2], pop[1::2]):
            ca, cb = ops.crossover(a, b, rng)
            assert (_total(ca), _total(cb)) == (_total(a), _total(b))
            for parent, c in ((a, ca), (b, cb)):
                child = ops.mutate(c, rng)
                assert _total(child) == _total(parent)
                nxt.append(child)
        pop = nxt
    unknown = GenomeOps(teacher_abs, cfg)  # a fresh ops (e.g. after a resume) knows no law: level switches only
    g = ops.law("lamp", 0.6, 0.5)
    assert _total(unknown.mutate(g, rng)) == _total(g)


def test_free_mutation_is_the_default():
    assert GenomeConfig().mutation == "free"
    with pytest.raises(ConfigError, match="genome.mutation"):
        Config().override(["genome.mutation=magic"]).validate()
    Config().override(["genome.mutation=smooth"]).validate()


def test_smooth_search_runs_and_keeps_totals():
    from evo_snn.evaluation.fitness import FitnessResult

    teacher_abs = _abs()
    cfg = GenomeConfig(mutation="smooth")
    ops = GenomeOps(teacher_abs, cfg)
    seen = []

    def fit(g, seed):
        seen.append(g)
        return FitnessResult({"accuracy": 1.0 - g.sparsity ** 2, "sparsity": g.sparsity}, {})

    search = StructureSearch(ops, fit, SearchConfig(population=8, generations=3, seed=1), cfg, progress=False)
    search.run()
    n = sum(a.size for a in teacher_abs.values())
    initial = {_total(g) for g in seen[:8]}
    assert all(_total(g) in initial for g in seen)  # no move ever changes a genome's total
    assert all(round(min(max(_total(g) / n, 0), 1) * n) == _total(g) for g in seen)


def test_stages_group_layers_by_output_channels_and_per_stage_erk_is_exact():
    teacher_abs = _abs()  # conv1 8 out, conv2 16 out, fc 4 out: three stages
    shapes = [a.shape for a in teacher_abs.values()]
    assert allocation.stages(shapes).tolist() == [0, 1, 2]
    assert allocation.stages([(8, 3, 3, 3), (8, 8, 3, 3), (16, 8, 3, 3), (16, 8, 1, 1), (10, 16)]).tolist() == [0, 0, 1, 1, 2]
    n = sum(a.size for a in teacher_abs.values())
    for s in (0.5, 0.9):
        # equal per-layer exponents are the scalar rule exactly
        assert allocation.erk(teacher_abs, s, [0.7, 0.7, 0.7]).tolist() == allocation.erk(teacher_abs, s, 0.7).tolist()
        a, b = allocation.erk(teacher_abs, s, [0.0, 2.0, 1.0]), allocation.erk(teacher_abs, s, 1.0)
        assert int(a.sum()) == int(b.sum()) == round(s * n)
    assert allocation.erk(teacher_abs, 0.9, [0.0, 2.0, 1.0]).tolist() == [39, 1151, 207]  # stage 0 denser, 1 sparser
    assert allocation.erk(teacher_abs, 0.9, 1.0).tolist() == [122, 1111, 164]
    with pytest.raises(ValueError, match="one per layer"):
        allocation.erk(teacher_abs, 0.5, [1.0, 1.0])
    with pytest.raises(ValueError, match=">= 0"):
        allocation.erk(teacher_abs, 0.5, [1.0, -1.0, 1.0])


def test_stage_exponents_seed_at_erk_and_mutate_every_stage_at_the_exact_total():
    teacher_abs = _abs()
    cfg = GenomeConfig(mutation="smooth", stage_exponents=True, level_switch_prob=0.0, smooth_sigma=0.3)
    ops = GenomeOps(teacher_abs, cfg)
    assert ops.n_stages == 3
    g = ops.allocation("erk", 0.8)
    assert ops.params[g.key] == ("erk", 0.8, (1.0, 1.0, 1.0))  # seeded ERK: gamma 1 in every stage
    assert ops.law("erk", 0.8, (1.0, 1.0, 1.0)).key == g.key == GenomeOps(teacher_abs, GenomeConfig()).allocation("erk", 0.8).key
    rng = np.random.default_rng(0)
    keys = set()
    for _ in range(20):
        child = ops.mutate(g, rng)
        law, s, p = ops.params[child.key]
        assert law == "erk" and s == 0.8 and len(p) == 3 and all(v >= 0 for v in p)
        assert _total(child) == _total(g)
        keys.add(child.key)
        g = child
    assert len(keys) > 10
    r = ops.random_smooth(np.random.default_rng(4))
    assert isinstance(ops.params[r.key][2], (tuple, float))
    with pytest.raises(ValueError, match="needs 3"):
        ops.law("erk", 0.5, (1.0, 1.0))


def test_the_search_state_keeps_the_density_laws_of_smooth_genomes():
    """A resumed smooth search perturbs the same gamma / tau (state_dict 'laws'), not level switches only."""
    import json

    from evo_snn.evaluation.fitness import FitnessResult

    teacher_abs = _abs()
    cfg = GenomeConfig(mutation="smooth", stage_exponents=True, init_allocations=("erk", "lamp"), init_allocation_fraction=1.0)

    def fit(g, seed):
        return FitnessResult({"accuracy": 1.0 - g.sparsity ** 2, "sparsity": g.sparsity}, {})

    search = StructureSearch(GenomeOps(teacher_abs, cfg), fit, SearchConfig(population=8, generations=1, seed=1), cfg,
                             progress=False)
    search.run()
    state = json.loads(json.dumps({k: v for k, v in search.state_dict().items() if k != "genomes"}))
    live = {ind.genome.key for ind in list(search.population) + list(search.archive)}
    assert set(state["laws"]) == live & set(search.ops.params) and state["laws"]
    fresh = StructureSearch(GenomeOps(teacher_abs, cfg), fit, SearchConfig(population=8, generations=1, seed=1), cfg,
                            store=search.store, progress=False)
    fresh.load_state_dict({**state, "genomes": search.state_dict()["genomes"]})
    assert {k: fresh.ops.params[k] for k in state["laws"]} == {k: search.ops.params[k] for k in state["laws"]}
    assert any(isinstance(p, tuple) for _, _, p in fresh.ops.params.values())
