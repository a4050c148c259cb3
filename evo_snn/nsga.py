"""NSGA-II structure search over genomes (DEAP ``selNSGA2`` + ``ParetoFront``).

The algorithm writes no files: observers receive each evaluation and each
generation through callbacks (``evo_snn.search`` attaches the run-directory writer).
Objective directions are declared once, in ``Fitness.weights``.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from deap import base, tools
from deap.benchmarks.tools import hypervolume as deap_hypervolume
from tqdm.auto import tqdm

from .config import GenomeConfig, SearchConfig
from .fitness import FitnessResult
from .genome import Genome, GenomeOps

OBJECTIVES = ("accuracy", "sparsity")


class Fitness(base.Fitness):
    """(student validation accuracy, student sparsity): both maximised."""

    weights = (1.0, 1.0)


@dataclass(eq=False)
class Individual:
    genome: Genome
    uid: str
    gen: int
    parents: tuple[str, ...] = ()
    metrics: dict = field(default_factory=dict)
    status: str = "pending"
    seed: int = 0
    fitness: Fitness = field(default_factory=Fitness)


def eval_seed(root_seed: int, gen: int, index: int) -> int:
    """Seed of one evaluation, derived from (root seed, generation, uid counter)."""
    return int(np.random.SeedSequence([root_seed, gen, index]).generate_state(1)[0])


def hypervolume(front: list[Individual]) -> float:
    """Area dominated by ``front`` in (accuracy, sparsity) space, reference point (0, 0)."""
    valid = [ind for ind in front if ind.fitness.valid]
    if not valid:
        return 0.0
    return float(deap_hypervolume(valid, ref=np.zeros(len(OBJECTIVES))))


class StructureSearch:
    """NSGA-II over genomes.

    evaluator: object with ``map([(genome, seed), ...])`` yielding
      ``(index, FitnessResult | Exception)`` (``evo_snn.evaluator``).
    on_evaluation(ind, result): called once per evaluated (or cache-hit) individual.
    on_generation(gen, population, archive, n_evals, elapsed_s): called after each generation.
    """

    def __init__(self, ops: GenomeOps, evaluator, search: SearchConfig, genome_cfg: GenomeConfig,
                 on_evaluation: Callable | None = None, on_generation: Callable | None = None, progress: bool = True):
        self.ops, self.evaluator, self.search, self.genome_cfg = ops, evaluator, search, genome_cfg
        self.on_evaluation = on_evaluation or (lambda *_: None)
        self.on_generation = on_generation or (lambda *_: None)
        self.progress = progress
        self.rng = np.random.default_rng(search.seed)
        random.seed(search.seed)  # DEAP's selTournamentDCD draws from `random`
        self.archive = tools.ParetoFront(similar=lambda a, b: a.genome.key == b.genome.key)
        self.results: dict[str, FitnessResult] = {}  # genome key -> result (kept for cache and export)
        self._counter = 0

    def _new(self, genome: Genome, gen: int, parents: tuple[str, ...] = ()) -> Individual:
        ind = Individual(genome, uid=f"{gen:02d}-{self._counter:04d}", gen=gen, parents=parents,
                         seed=eval_seed(self.search.seed, gen, self._counter))
        self._counter += 1
        return ind

    def evaluate(self, individuals: list[Individual], gen: int) -> int:
        """Evaluate individuals without a valid fitness; returns the number of real evaluations."""
        todo = [ind for ind in individuals if not ind.fitness.valid]
        fresh = []
        for ind in todo:
            cached = self.results.get(ind.genome.key)
            if cached is not None:
                self._assign(ind, cached, "cached")
            else:
                fresh.append(ind)
        jobs = [(ind.genome, ind.seed) for ind in fresh]
        bar = tqdm(total=len(jobs), desc=f"gen {gen} evaluations", unit="eval", disable=not self.progress, leave=False)
        for i, res in self.evaluator.map(jobs):
            ind = fresh[i]
            if isinstance(res, Exception):
                ind.metrics = {"error": f"{type(res).__name__}: {res}"}
                ind.status = "failed"
                ind.fitness.values = (0.0, 0.0)  # worst possible: a failed genome never survives
                self.on_evaluation(ind, None)
            else:
                self.results[ind.genome.key] = res
                self._assign(ind, res, "ok")
            bar.update(1)
        bar.close()
        return len(jobs)

    def _assign(self, ind: Individual, res: FitnessResult, status: str) -> None:
        ind.metrics = dict(res.metrics)
        ind.status = status
        ind.fitness.values = tuple(float(res.metrics[k]) for k in OBJECTIVES)
        self.on_evaluation(ind, res)

    def _forget_unused(self, keep: list[Individual]) -> None:
        """Drop cached student weights of genomes no longer in the population or archive."""
        live = {ind.genome.key for ind in keep} | {ind.genome.key for ind in self.archive}
        self.results = {k: v for k, v in self.results.items() if k in live}

    def run(self) -> tools.ParetoFront:
        P, G = self.search.population, self.search.generations
        t0 = time.perf_counter()
        pop = [self._new(self.ops.random(self.rng), 0) for _ in range(P)]
        n = self.evaluate(pop, 0)
        pop = tools.selNSGA2(pop, P)  # also assigns crowding distances
        self.archive.update(pop)
        self.on_generation(0, pop, self.archive, n, time.perf_counter() - t0)
        for gen in range(1, G + 1):
            parents = tools.selTournamentDCD(pop, P)
            children: list[Individual] = []
            for a, b in zip(parents[::2], parents[1::2]):
                if self.rng.random() < self.genome_cfg.crossover_prob:
                    ga, gb = self.ops.crossover(a.genome, b.genome, self.rng)
                    pa = pb = (a.uid, b.uid)
                else:
                    ga, gb, pa, pb = a.genome, b.genome, (a.uid,), (b.uid,)
                children.append(self._new(self.ops.mutate(ga, self.rng), gen, pa))
                children.append(self._new(self.ops.mutate(gb, self.rng), gen, pb))
            n = self.evaluate(children, gen)
            pop = tools.selNSGA2(pop + children, P)
            self.archive.update(pop)
            self._forget_unused(pop)
            self.on_generation(gen, pop, self.archive, n, time.perf_counter() - t0)
        return self.archive
