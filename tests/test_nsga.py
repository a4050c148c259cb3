"""NSGA-II loop with a cheap analytic evaluator (no training)."""

import numpy as np
import pytest
from deap.tools import sortNondominated

from evo_snn.config import GenomeConfig, SearchConfig
from evo_snn.fitness import FitnessResult
from evo_snn.genome import GenomeOps
from evo_snn.nsga import StructureSearch, eval_seed, hypervolume


class AnalyticEvaluator:
    """accuracy = 1 - sparsity**2 - small genome-dependent noise; fails for one chosen key."""

    def __init__(self, fail_key=None):
        self.calls, self.fail_key = [], fail_key

    def map(self, jobs):
        for i, (g, seed) in enumerate(jobs):
            self.calls.append(g.key)
            if g.key == self.fail_key:
                yield i, RuntimeError("boom")
                continue
            s = g.sparsity
            acc = 1 - s**2 - 0.05 * g.ratios[0]
            yield i, FitnessResult({"accuracy": acc, "sparsity": s, "teacher_accuracy": acc}, {})


def _ops():
    rng = np.random.default_rng(0)
    return GenomeOps({"a": np.abs(rng.normal(size=(8, 4))), "b": np.abs(rng.normal(size=(20,)))},
                     GenomeConfig(ratio_mutation_prob=0.5, mask_mutation_prob=0.5))


def test_search_improves_hypervolume_and_archive_is_nondominated():
    gens = []
    ev = AnalyticEvaluator()
    search = StructureSearch(_ops(), ev, SearchConfig(population=8, generations=5, seed=1), GenomeConfig(),
                             on_generation=lambda g, pop, arch, n, t: gens.append((g, hypervolume(list(arch)), n)),
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
    search = StructureSearch(ops, AnalyticEvaluator(fail_key=bad.key), SearchConfig(population=4, generations=0, seed=2),
                             GenomeConfig(), on_evaluation=lambda ind, res: seen.append(ind.status), progress=False)
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
