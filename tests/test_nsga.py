"""NSGA-II loop with a cheap analytic fitness function (no training)."""

import numpy as np
import pytest
from deap.tools import sortNondominated

from evo_snn.config import GenomeConfig, SearchConfig
from evo_snn.evaluation.fitness import FitnessResult
from evo_snn.structure.genome import GenomeOps
from evo_snn.search.nsga import StructureSearch, eval_seed, hypervolume, nondominated, select_distinct_nsga2


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
            from evo_snn.search.nsga import Fitness
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


@pytest.mark.parametrize("stop_gen", [0, 2])
def test_state_dict_round_trip_continues_the_search_exactly(stop_gen):
    """Interrupted after generation ``stop_gen`` (0: before any offspring) and resumed from the
    JSON state: the same evaluations, population, archive and RNG as the straight run, and the
    search clock goes on from the saved ``elapsed_s``."""
    import random

    cfg = lambda g: SearchConfig(population=8, generations=g, seed=5)  # noqa: E731
    ev_a = AnalyticFitness()
    straight = StructureSearch(_ops(), ev_a, cfg(5), GenomeConfig(crossover_prob=0.5), progress=False)
    straight.run()

    # interrupted: an observer takes the state after generation stop_gen, then the run dies
    saved = {}

    def stop_after(search):
        if search.gen == stop_gen:
            saved["state"] = _json_round_trip(search.state_dict())
            raise KeyboardInterrupt

    ev_b = AnalyticFitness()
    first = StructureSearch(_ops(), ev_b, cfg(5), GenomeConfig(crossover_prob=0.5), callbacks=[stop_after], progress=False)
    with pytest.raises(KeyboardInterrupt):
        first.run()
    state = {**saved["state"], "elapsed_s": 100.0}
    assert state["gen"] == stop_gen and state["counter"] == 8 * (stop_gen + 1) and len(state["population"]) == 8
    assert {r["genome_key"] for r in state["population"] + state["archive"]} == set(state["genomes"])
    assert set(state["results"]) <= set(state["genomes"])
    assert "inf" in [r["crowding_dist"] for r in state["population"]]  # NSGA-II's boundary members

    random.seed(12345)  # whatever happened to the global RNGs in between is overwritten
    np.random.seed(7)
    gens = []
    resumed = StructureSearch(_ops(), ev_b, cfg(5), GenomeConfig(crossover_prob=0.5), store=first.store,
                              callbacks=[lambda s: gens.append(s.gen)], progress=False)
    resumed.load_state_dict(state)
    restored = _json_round_trip(resumed.state_dict())
    assert (restored["population"], restored["archive"]) == (state["population"], state["archive"])  # every record field
    resumed.run()
    assert gens == list(range(stop_gen + 1, 6)) and resumed.elapsed_s >= 100.0
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
    from evo_snn.structure.genome import Genome

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
    assert "boom" in str(twins[0].metrics) and twins[1].metrics == twins[0].metrics  # the twin carries the error


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

    code = "import sys, evo_snn.search.nsga; print(sorted(m for m in ('torch', 'spikingjelly') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


def test_operators_are_passed_in_and_the_defaults_are_nsga2():
    """pymoo-style: sampling, crossover, mutation, parent selection and survival are
    arguments; passing the defaults explicitly gives the same search."""
    from functools import partial

    from deap import tools

    from evo_snn.search.nsga import initial_genomes

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


# ------------------------------------------------- objectives, limits and state (issue 7, mutation testing)
def _ind(key, values, cls=None):
    """A duck-typed individual: what DEAP's sorting, ``hypervolume`` and the survival read."""
    from types import SimpleNamespace

    from evo_snn.search.nsga import Fitness

    return SimpleNamespace(genome=SimpleNamespace(key=key), fitness=(cls or Fitness)(values))


def _noisy_fitness(g, seed):
    """accuracy: a genome-dependent draw (so that many members are dominated); sparsity: the genome's."""
    acc = float(np.random.default_rng(int(g.key, 16) % 2**32).random())
    return FitnessResult({"accuracy": acc, "sparsity": g.sparsity}, {})


def test_fitness_class_builds_the_declared_weights_objectives_and_reference():
    from evo_snn.search.nsga import Fitness, fitness_class

    assert fitness_class() is Fitness and fitness_class(["accuracy", "sparsity"], {"accuracy": 0.0}) is Fitness
    ae = fitness_class(("accuracy", "energy"), {"energy": 0.8})
    assert (ae.weights, ae.objectives, ae.reference) == ((1.0, -1.0), ("accuracy", "energy"), (0.0, 0.8))
    assert ae.__name__ == "Fitness_accuracy_energy" and ae.__module__ == "evo_snn.front"
    assert ae.__doc__ == "('accuracy', 'energy'), weights (1.0, -1.0), reference (0.0, 0.8)"
    assert ae((0.9, 0.3)).wvalues == (0.9, -0.3)
    assert fitness_class(("accuracy", "energy"), {"energy": 0.8}) is ae  # one class per (objectives, reference)
    default_energy = fitness_class(("accuracy", "energy"))
    assert default_energy is not ae and default_energy.reference == (0.0, 1.0)
    swapped = fitness_class(("sparsity", "accuracy"))  # reference (0, 0) too, but not Fitness's order
    assert swapped is not Fitness and swapped.objectives == ("sparsity", "accuracy")
    shifted = fitness_class(("accuracy", "sparsity"), {"accuracy": 0.5})
    assert shifted is not Fitness and shifted.reference == (0.5, 0.0)
    with pytest.raises(ValueError, match=r"^unknown objective\(s\) \['loss'\]; known: \['accuracy', 'sparsity', 'energy'\]$"):
        fitness_class(("accuracy", "loss"))


def test_objective_value_reads_the_fitness_then_the_metrics():
    from types import SimpleNamespace

    from evo_snn.search.nsga import fitness_class, objective_value

    ae = fitness_class(("accuracy", "energy"))
    ind = SimpleNamespace(fitness=ae((0.9, 0.25)), metrics={"accuracy": 0.5, "sparsity": 0.7, "energy_fraction": 0.3, "loss": 2})
    assert objective_value(ind, "accuracy") == 0.9 and objective_value(ind, "energy") == 0.25  # its fitness values
    assert objective_value(ind, "sparsity") == 0.7 and objective_value(ind, "loss") == 2.0  # its metrics
    failed = SimpleNamespace(fitness=ae(), metrics={"energy_fraction": 0.4})  # no fitness values
    assert objective_value(failed, "energy") == 0.4 and objective_value(failed, "accuracy") == 0.0
    assert objective_value(failed, "accuracy", default=-1.0) == -1.0
    plain = SimpleNamespace(fitness=SimpleNamespace(values=(0.8, 0.6)))  # duck-typed: no objectives, valid or metrics
    assert objective_value(plain, "sparsity") == 0.6 and objective_value(plain, "energy") == 0.0


def test_hypervolume_of_an_empty_a_one_point_and_an_energy_front():
    from evo_snn.search.nsga import fitness_class, points_hypervolume

    assert hypervolume([]) == 0.0 and points_hypervolume([]) == 0.0
    assert hypervolume([_ind("a", (0.5, 0.4))]) == pytest.approx(0.2)
    ae = fitness_class(("accuracy", "energy"), {"energy": 0.8})
    front = [_ind("a", (0.5, 0.3), ae), _ind("b", (0.9, 0.6), ae)]
    # accuracy maximised from 0, energy minimised up to its reference 0.8
    assert hypervolume(front) == pytest.approx(0.5 * (0.8 - 0.3) + (0.9 - 0.5) * (0.8 - 0.6))


def test_seeded_sparsities_are_spread_over_the_ratio_bounds():
    from evo_snn.search.nsga import initial_genomes

    ops = _ops()
    gs = initial_genomes(ops, GenomeConfig(ratio_min=0.2, ratio_max=0.6, init_global_fraction=0.5), 4, np.random.default_rng(0))
    assert [g.key for g in gs[:2]] == [ops.global_magnitude(0.4).key, ops.global_magnitude(0.6).key]


def test_survival_keeps_distinct_genomes_when_exactly_k_exist():
    a, b, a_again = _ind("a", (0.9, 0.9)), _ind("b", (0.1, 0.1)), _ind("a", (0.9, 0.9))
    assert sorted(i.genome.key for i in select_distinct_nsga2([a, b, a_again], 2)) == ["a", "b"]


def test_a_fresh_search_and_its_generation_0_records():
    import time

    search = StructureSearch(_ops(), AnalyticFitness(), SearchConfig(population=4, generations=1, seed=3), GenomeConfig(),
                             progress=False)
    fresh = search.state_dict()
    assert (fresh["gen"], fresh["population"], fresh["elapsed_s"], fresh["objectives"]) == (-1, [], 0.0, ["accuracy", "sparsity"])
    gen0 = []
    search.callbacks.append(lambda s: gen0.extend(s.population) if s.gen == 0 else None)
    t = time.perf_counter()
    search.run()
    assert 0.0 < search.elapsed_s <= time.perf_counter() - t
    assert len(gen0) == 4 and all(i.gen == 0 and i.uid.startswith("00-") for i in gen0)
    for ind in gen0 + search.population:
        assert ind.seed == eval_seed(3, ind.gen, int(ind.uid.split("-")[1]))


def test_a_genome_in_the_cache_is_not_evaluated_again():
    ops = _ops()
    g = ops.random(np.random.default_rng(3))
    search = StructureSearch(ops, AnalyticFitness(), SearchConfig(population=4, generations=0, seed=2), GenomeConfig(), progress=False)
    first = search._new(g, 0)
    assert search.evaluate([first], 0) == 1
    again = search._new(g, 1)
    assert search.evaluate([again], 1) == 0
    assert search.fitness.calls == [g.key] and (first.status, again.status) == ("ok", "cached")
    assert again.metrics == first.metrics and again.fitness.values == first.fitness.values


def test_student_is_known_only_for_genomes_in_the_cache_and_the_store():
    search = StructureSearch(_ops(), AnalyticFitness(), SearchConfig(population=4, generations=0, seed=2), GenomeConfig(), progress=False)
    search.store.put("a", {"w": np.ones(2)})  # in the store, no longer in the cache
    search.results["b"] = {"accuracy": 1.0, "sparsity": 0.5}  # in the cache, no student
    assert search.student("a") is None and search.student("b") is None
    search.results["a"] = {"accuracy": 1.0, "sparsity": 0.5}
    np.testing.assert_array_equal(search.student("a")["w"], np.ones(2))


def test_a_fitness_without_an_objectives_metric_is_an_error():
    ops = _ops()
    search = StructureSearch(ops, lambda g, seed: FitnessResult({"accuracy": 0.5}, {}),
                             SearchConfig(population=4, generations=0, seed=2), GenomeConfig(), progress=False)
    ind = search._new(ops.random(np.random.default_rng(0)), 0)
    with pytest.raises(ValueError, match=r"^the fitness reported no \['sparsity'\] for 00-0000, "
                                         r"needed by search.objectives=\['accuracy', 'sparsity'\]$"):
        search.evaluate([ind], 0)


def test_the_cache_and_the_store_keep_every_live_genome():
    search = StructureSearch(_ops(), _noisy_fitness, SearchConfig(population=8, generations=3, seed=4),
                             GenomeConfig(crossover_prob=0.5), progress=False)
    search.run()
    live = {i.genome.key for i in search.population} | {i.genome.key for i in search.archive}
    assert live - {i.genome.key for i in search.archive}  # some live members are off the front
    assert set(search.results) == live and all(search.student(k) is not None for k in live)


def test_informed_mutation_gets_the_first_parents_student_and_a_repeated_child_is_mutated_again():
    ops = _ops()
    fixed = ops.magnitude([0.9, 0.9])

    def fitness(g, seed):  # its student: twice the teacher's |W| on the kept connections
        student = {f"{n}.weight": 2 * ops.abs[n] * m for n, m in g.mask_dict().items()}
        return FitnessResult(_noisy_fitness(g, seed).metrics, {**student, "a.bias": np.zeros(8)})

    calls = []

    def mutation(g, rng, student_abs):  # with crossover_prob 0, g is the first parent's genome
        assert sorted(student_abs) == sorted(g.layers)
        for n, m in g.mask_dict().items():
            np.testing.assert_array_equal(student_abs[n], 2 * ops.abs[n] * m)
        calls.append(g.key)
        if len(calls) == 1:
            return g  # the parent itself: mutated again
        return fixed if len(calls) in (2, 3) else ops.mutate(g, rng, student_abs)  # the 2nd child repeats the 1st

    search = StructureSearch(ops, fitness, SearchConfig(population=4, generations=0, seed=2),
                             GenomeConfig(mask_mutation="magnitude", crossover_prob=0.0), mutation=mutation, progress=False)
    search.run()
    assert calls == []  # generation 0 is sampled
    children = search.offspring(search.population, 1)
    keys = [c.genome.key for c in children] + [p.genome.key for p in search.population]
    assert len(calls) >= 5 and children[0].genome.key == fixed.key and len(set(keys)) == len(keys) == 8
    assert search._student_abs(search._new(fixed, 1)) is None  # a parent without a student
    random_mode = StructureSearch(ops, fitness, SearchConfig(population=4, generations=0, seed=2), GenomeConfig(), progress=False)
    random_mode.run()
    assert random_mode._student_abs(random_mode.population[0]) is None


def test_an_energy_search_uses_its_objectives_reference_and_state():
    def fitness(g, seed):
        return FitnessResult({"accuracy": 1 - g.sparsity**2, "sparsity": g.sparsity, "energy_fraction": 1 - g.sparsity}, {})

    cfg = SearchConfig(population=4, generations=1, seed=3, objectives=("accuracy", "energy"),
                       hv_reference={"accuracy": 0.0, "energy": 0.5})
    search = StructureSearch(_ops(), fitness, cfg, GenomeConfig(), progress=False)
    search.run()
    cls = search.fitness_cls
    assert (cls.objectives, cls.reference) == (("accuracy", "energy"), (0.0, 0.5))
    assert all(type(i.fitness) is cls for i in list(search.population) + list(search.archive))
    state = _json_round_trip(search.state_dict())
    assert state["objectives"] == ["accuracy", "energy"]
    restored = StructureSearch(_ops(), fitness, cfg, GenomeConfig(), store=search.store, progress=False)
    restored.load_state_dict(state)
    assert [(type(i.fitness), i.fitness.values) for i in restored.population] == \
        [(type(i.fitness), i.fitness.values) for i in search.population]
    with pytest.raises(ValueError, match="objectives"):
        StructureSearch(_ops(), fitness, SearchConfig(population=4, seed=3), GenomeConfig(),
                        store=search.store).load_state_dict(state)


def test_a_multi_fidelity_search_without_inheritance_starts_rung_0_students_fresh():
    seen = []

    def fitness(g, seed, init_state=None, rung=None):
        seen.append((rung, init_state))
        return FitnessResult(_noisy_fitness(g, seed).metrics, {"w": np.ones(1)})

    search = StructureSearch(_ops(), fitness, SearchConfig(population=4, generations=1, seed=2, fidelity_fraction=0.5),
                             GenomeConfig(), progress=False)
    search.run()
    rung0 = [init for rung, init in seen if rung is not None and rung.fidelity < 1]
    assert rung0 and all(init is None for init in rung0)  # no parent's student without search.inherit_weights
    assert any(rung is not None and rung.continues and init is not None for rung, init in seen)  # its own rung-0 student
