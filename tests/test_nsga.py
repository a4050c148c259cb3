"""NSGA-II loop with a cheap analytic fitness function (no training)."""

import numpy as np
import pytest
from deap.tools import sortNondominated

from evo_snn.config import GenomeConfig, SearchConfig
from evo_snn.fitness import FitnessResult
from evo_snn.genome import GenomeOps
from evo_snn.nsga import StructureSearch, eval_seed, hypervolume, nondominated, select_distinct_nsga2


class AnalyticFitness:
    """accuracy = 1 - sparsity**2 - small genome-dependent noise; raises for one chosen key.
    A plain callable: the search maps it with its default (serial) evaluator."""

    def __init__(self, fail_key=None):
        self.calls, self.fail_key = [], fail_key

    def __call__(self, g, seed):
        self.calls.append(g.key)
        if g.key == self.fail_key:
            raise RuntimeError("boom")
        s = g.sparsity
        acc = 1 - s**2 - 0.05 * g.ratios[0]
        return FitnessResult({"accuracy": acc, "sparsity": s, "teacher_accuracy": acc}, {})


class Hooks:
    """A search callback: ``generation(search)`` after each generation, ``evaluation(ind, metrics)`` per evaluation."""

    def __init__(self, generation=None, evaluation=None):
        self.generation, self.evaluation = generation, evaluation

    def __call__(self, search):
        if self.generation is not None:
            self.generation(search)

    def on_evaluation(self, ind, metrics):
        if self.evaluation is not None:
            self.evaluation(ind, metrics)


def _ops():
    rng = np.random.default_rng(0)
    return GenomeOps({"a": np.abs(rng.normal(size=(8, 4))), "b": np.abs(rng.normal(size=(20,)))},
                     GenomeConfig(ratio_mutation_prob=0.5, mask_mutation_prob=0.5))


def test_search_improves_hypervolume_and_archive_is_nondominated():
    gens = []
    ev = AnalyticFitness()
    search = StructureSearch(_ops(), ev, SearchConfig(population=8, generations=5, seed=1), GenomeConfig(),
                             callbacks=[lambda s: gens.append((s.gen, hypervolume(list(s.archive)), s.n_evals))],
                             progress=False)
    archive = search.run()
    assert [g for g, _, _ in gens] == list(range(6))
    hvs = [h for _, h, _ in gens]
    assert hvs[-1] > hvs[0] and all(b >= a - 1e-12 for a, b in zip(hvs, hvs[1:]))
    members = list(archive)
    assert len(sortNondominated(members, len(members), first_front_only=True)[0]) == len(members)
    assert len({m.genome.key for m in members}) == len(members)
    # duplicates are served from the cache, never evaluated twice
    assert len(ev.calls) == len(set(ev.calls)) == sum(n for _, _, n in gens)


def test_failed_evaluation_gets_worst_fitness_and_search_continues():
    ops = _ops()
    bad, good = ops.random(np.random.default_rng(0)), ops.random(np.random.default_rng(1))
    seen = []
    search = StructureSearch(ops, AnalyticFitness(fail_key=bad.key), SearchConfig(population=4, generations=0, seed=2),
                             GenomeConfig(), callbacks=[Hooks(evaluation=lambda ind, res: seen.append(ind.status))],
                             progress=False)
    pop = [search._new(bad, 0), search._new(good, 0)]
    assert search.evaluate(pop, 0) == 2
    assert pop[0].status == "failed" and pop[0].fitness.values == (0.0, 0.0)
    assert "boom" in pop[0].metrics["error"]
    assert pop[1].status == "ok" and pop[1].fitness.values[1] == pytest.approx(good.sparsity)
    assert seen == ["failed", "ok"]


def test_eval_seed_depends_on_every_part():
    s = eval_seed(0, 1, 2)
    assert s == eval_seed(0, 1, 2)
    assert len({s, eval_seed(1, 1, 2), eval_seed(0, 2, 2), eval_seed(0, 1, 3)}) == 4


def test_hypervolume_of_known_front():
    class F:
        def __init__(self, a, s):
            from evo_snn.nsga import Fitness
            self.fitness = Fitness((a, s))

    # union of [0,0.9]x[0,0.2] and [0,0.5]x[0,0.8] = 0.18 + 0.5*0.6 = 0.48
    assert hypervolume([F(0.9, 0.2), F(0.5, 0.8)]) == pytest.approx(0.48)


def _json_round_trip(state):
    """What a checkpoint keeps: everything but the genomes through json, genomes as objects."""
    import json

    doc = json.loads(json.dumps({k: v for k, v in state.items() if k != "genomes"}))
    return {**doc, "genomes": dict(state["genomes"])}


def _summary(search, ev):
    pop = [(i.uid, i.genome.key, i.genome.ratios, i.fitness.values) for i in search.population]
    arch = [(i.uid, i.genome.key, i.fitness.values) for i in search.archive]
    return ev.calls, pop, arch, search._counter


def test_state_dict_round_trip_continues_the_search_exactly():
    import random

    cfg = lambda g: SearchConfig(population=8, generations=g, seed=5)  # noqa: E731
    ev_a = AnalyticFitness()
    straight = StructureSearch(_ops(), ev_a, cfg(5), GenomeConfig(crossover_prob=0.5), progress=False)
    straight.run()

    # interrupted: an observer takes the state after generation 2, then the run dies
    saved = {}

    def stop_after_2(search):
        if search.gen == 2:
            saved["state"] = _json_round_trip(search.state_dict())
            raise KeyboardInterrupt

    ev_b = AnalyticFitness()
    first = StructureSearch(_ops(), ev_b, cfg(5), GenomeConfig(crossover_prob=0.5), callbacks=[stop_after_2], progress=False)
    with pytest.raises(KeyboardInterrupt):
        first.run()
    state = saved["state"]
    assert state["gen"] == 2 and state["counter"] == 8 * 3 and len(state["population"]) == 8
    assert {r["genome_key"] for r in state["population"] + state["archive"]} == set(state["genomes"])
    assert set(state["results"]) <= set(state["genomes"])

    random.seed(12345)  # whatever happened to the global RNGs in between is overwritten
    np.random.seed(7)
    gens = []
    resumed = StructureSearch(_ops(), ev_b, cfg(5), GenomeConfig(crossover_prob=0.5), store=first.store,
                              callbacks=[lambda s: gens.append(s.gen)], progress=False)
    resumed.load_state_dict(state)
    resumed.run()
    assert gens == [3, 4, 5]
    assert _summary(resumed, ev_b) == _summary(straight, ev_a)
    assert resumed.state_dict()["numpy_rng"] == straight.state_dict()["numpy_rng"]


def test_load_state_dict_rejects_a_state_of_another_search():
    search = StructureSearch(_ops(), AnalyticFitness(), SearchConfig(population=4, generations=0, seed=1), GenomeConfig(), progress=False)
    search.run()
    state = search.state_dict()
    with pytest.raises(ValueError, match="seed"):
        StructureSearch(_ops(), AnalyticFitness(), SearchConfig(population=4, seed=2), GenomeConfig()).load_state_dict(state)
    with pytest.raises(ValueError, match="population"):
        StructureSearch(_ops(), AnalyticFitness(), SearchConfig(population=8, seed=1), GenomeConfig()).load_state_dict(state)
    other = GenomeOps({"c": np.ones((3, 3))}, GenomeConfig())
    with pytest.raises(ValueError, match="layers"):
        StructureSearch(other, AnalyticFitness(), SearchConfig(population=4, seed=1), GenomeConfig()).load_state_dict(state)
    # the state holds metrics only: the students must be in the search's store
    with pytest.raises(ValueError, match="student store lacks"):
        StructureSearch(_ops(), AnalyticFitness(), SearchConfig(population=4, seed=1), GenomeConfig()).load_state_dict(state)
    StructureSearch(_ops(), AnalyticFitness(), SearchConfig(population=4, seed=1), GenomeConfig(),
                    store=search.store).load_state_dict(state)


def test_state_keeps_each_members_ratios_when_two_share_a_genome_key():
    from evo_snn.genome import Genome

    ops = _ops()
    g = ops.magnitude([0.5, 0.5])  # 16 of 32 and 10 of 20 pruned
    twin = Genome(g.layers, (0.51, 0.49), g.masks)  # the same zero counts: the same masks and key
    assert twin.key == g.key and twin.ratios != g.ratios
    search = StructureSearch(ops, AnalyticFitness(), SearchConfig(population=4, generations=0, seed=1), GenomeConfig(), progress=False)
    search.population = [search._new(g, 0), search._new(twin, 0)]
    search.evaluate(search.population, 0)
    search.gen = 0
    state = _json_round_trip(search.state_dict())
    assert list(state["genomes"]) == [g.key]
    restored = StructureSearch(ops, AnalyticFitness(), SearchConfig(population=2, generations=0, seed=1), GenomeConfig(),
                               store=search.store, progress=False)
    restored.load_state_dict(state)
    assert [i.genome.ratios for i in restored.population] == [g.ratios, twin.ratios]
    assert [(i.uid, i.status, i.fitness.values) for i in restored.population] == \
        [(i.uid, i.status, i.fitness.values) for i in search.population]


def test_identical_children_in_one_generation_are_evaluated_once():
    ops = _ops()
    g = ops.random(np.random.default_rng(3))
    seen = []
    search = StructureSearch(ops, AnalyticFitness(), SearchConfig(population=4, generations=0, seed=2), GenomeConfig(),
                             callbacks=[Hooks(evaluation=lambda ind, res: seen.append(ind.status))], progress=False)
    twins = [search._new(g, 0), search._new(g, 0), search._new(ops.random(np.random.default_rng(4)), 0)]
    assert search.evaluate(twins, 0) == 2
    assert search.fitness.calls.count(g.key) == 1
    assert sorted(seen) == ["cached", "ok", "ok"]
    assert twins[0].fitness.values == twins[1].fitness.values


def test_failed_twin_is_failed_too():
    ops = _ops()
    g = ops.random(np.random.default_rng(3))
    search = StructureSearch(ops, AnalyticFitness(fail_key=g.key), SearchConfig(population=4, generations=0, seed=2),
                             GenomeConfig(), progress=False)
    twins = [search._new(g, 0), search._new(g, 0)]
    assert search.evaluate(twins, 0) == 1
    assert [t.status for t in twins] == ["failed", "failed"] and twins[1].fitness.values == (0.0, 0.0)


def test_population_never_holds_duplicate_genomes_and_archive_keeps_every_nondominated_member():
    evaluated = {}

    def record(ind, res):
        if res is not None:
            evaluated[ind.genome.key] = ind.fitness.values

    ops = GenomeOps({"a": np.abs(np.random.default_rng(0).normal(size=(3, 2)))},
                    GenomeConfig(ratio_mutation_prob=0.2, mask_mutation_prob=0.2, ratio_mutation_sigma=0.05))
    search = StructureSearch(ops, AnalyticFitness(), SearchConfig(population=8, generations=6, seed=5), GenomeConfig(),
                             callbacks=[Hooks(evaluation=record)], progress=False)
    archive = search.run()
    # only 6 weights: duplicates are frequent, yet the population stays distinct where it can
    keys = [ind.genome.key for ind in search.population]
    assert len(set(keys)) == len(keys) or len(evaluated) < 8
    # archive completeness: every evaluated non-dominated point is in the archive
    pts = np.array(list(evaluated.values()))
    front = {tuple(pts[i]) for i in nondominated(pts)}
    assert front == {tuple(ind.fitness.values) for ind in archive}


def test_archive_is_updated_before_survival():
    """Non-dominated children that NSGA-II's crowding cuts from a small population stay in the archive."""
    evaluated = {}

    def record(ind, res):
        if res is not None:
            evaluated[ind.genome.key] = ind.fitness.values

    search = StructureSearch(_ops(), AnalyticFitness(), SearchConfig(population=4, generations=8, seed=1), GenomeConfig(),
                             callbacks=[Hooks(evaluation=record)], progress=False)
    archive = search.run()
    pts = np.array(list(evaluated.values()))
    nd = nondominated(pts)
    assert len(nd) > 4  # more non-dominated points than the population holds
    assert {tuple(pts[i]) for i in nd} == {tuple(ind.fitness.values) for ind in archive}


def test_survivors_remove_duplicates_before_selection():
    ops = _ops()
    search = StructureSearch(ops, AnalyticFitness(), SearchConfig(population=4, generations=0, seed=2), GenomeConfig(),
                             progress=False)
    rng = np.random.default_rng(8)
    best = ops.magnitude([0.0, 0.0])  # accuracy 1, sparsity 0: non-dominated
    others = [ops.random(rng) for _ in range(4)]
    inds = [search._new(best, 0) for _ in range(3)] + [search._new(g, 0) for g in others]
    search.evaluate(inds, 0)
    survivors = search.survivors(inds)
    assert [ind.genome.key for ind in survivors].count(best.key) == 1
    assert survivors[0] is inds[0] or inds[0] in survivors  # the oldest copy stays


def test_seeding_puts_global_magnitude_genomes_in_generation_zero():
    ops = _ops()
    cfg = GenomeConfig(init_global_fraction=0.5, ratio_min=0.0, ratio_max=0.8)
    search = StructureSearch(ops, AnalyticFitness(), SearchConfig(population=8, generations=0, seed=2), cfg, progress=False)
    genomes = search.initial_genomes()
    assert len(genomes) == 8
    sparsities = [g.sparsity for g in genomes[:4]]
    assert sparsities == pytest.approx([0.2, 0.4, 0.6, 0.8], abs=0.03)
    for s, g in zip([0.2, 0.4, 0.6, 0.8], genomes[:4]):
        assert g.key == ops.global_magnitude(s).key
    # fraction 0: the old behaviour, all random, and the same genomes as before for the same seed
    plain = StructureSearch(ops, AnalyticFitness(), SearchConfig(population=8, generations=0, seed=2), GenomeConfig(),
                            progress=False).initial_genomes()
    rng = np.random.default_rng(2)
    again = [ops.random(rng) for _ in range(8)]
    assert [g.key for g in plain] == [g.key for g in again]


def test_inherit_weights_sends_each_child_its_parents_student():
    jobs, per_gen = [], []

    def fitness(g, seed, *rest):
        jobs.append((g, seed, *rest))
        s = g.sparsity
        return FitnessResult({"accuracy": 1 - s**2, "sparsity": s}, {"w": np.array([g.key])})

    def generation(search):
        per_gen.append(len(jobs))
        if search.gen == 0:
            gen0_keys.update({ind.uid: ind.genome.key for ind in search.population})

    evaluated, gen0_keys = {}, {}
    search = StructureSearch(_ops(), fitness, SearchConfig(population=4, generations=1, seed=3, inherit_weights=True),
                             GenomeConfig(), callbacks=[Hooks(generation, lambda ind, res: evaluated.setdefault(ind.genome.key, ind))],
                             progress=False)
    search.run()
    gen0, gen1 = jobs[:per_gen[0]], jobs[per_gen[0]:]
    assert all(len(j) == 3 and j[2] is None for j in gen0)  # generation 0 has no parents
    assert gen1
    for genome, _, state in gen1:
        child = evaluated[genome.key]
        assert child.gen == 1 and child.init_key in {gen0_keys[u] for u in child.parents}
        assert state["w"][0] == child.init_key  # the student trained for that parent's genome


def test_the_search_algorithm_does_not_load_torch():
    """nsga (and the genome and the result record it holds) is plain data: importing it
    loads neither torch nor spikingjelly."""
    import subprocess
    import sys

    code = "import sys, evo_snn.nsga; print(sorted(m for m in ('torch', 'spikingjelly') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


def test_operators_are_passed_in_and_the_defaults_are_nsga2():
    """pymoo-style: sampling, crossover, mutation, parent selection and survival are
    arguments; passing the defaults explicitly gives the same search."""
    from functools import partial

    from deap import tools

    from evo_snn.nsga import initial_genomes

    calls = {}

    def counting(name, fn):
        def wrapped(*args):
            calls[name] = calls.get(name, 0) + 1
            return fn(*args)
        return wrapped

    ops, gcfg = _ops(), GenomeConfig(crossover_prob=0.9)
    cfg = SearchConfig(population=8, generations=2, seed=4)
    plain = StructureSearch(ops, AnalyticFitness(), cfg, gcfg, progress=False)
    plain.run()
    custom = StructureSearch(ops, AnalyticFitness(), cfg, gcfg,
                             sampling=counting("sampling", partial(initial_genomes, ops, gcfg)),
                             crossover=counting("crossover", ops.crossover), mutation=counting("mutation", ops.mutate),
                             parent_selection=counting("parent_selection", tools.selTournamentDCD),
                             survival=counting("survival", select_distinct_nsga2), progress=False)
    custom.run()
    assert calls["sampling"] == 1 and calls["parent_selection"] == 2 and calls["survival"] == 3
    assert calls["crossover"] >= 4 and calls["mutation"] >= 16  # 4 pairs, 8 children per generation
    assert _summary(custom, custom.fitness) == _summary(plain, plain.fitness)
    # another survival is really used: by accuracy alone, the sparsest genomes die out
    greedy = StructureSearch(ops, AnalyticFitness(), cfg, gcfg, parent_selection=tools.selRandom,
                             survival=lambda inds, k: tools.selBest(inds, k), progress=False)
    greedy.run()
    assert max(i.genome.sparsity for i in greedy.population) < max(i.genome.sparsity for i in plain.population)
