"""NSGA-II structure search over genomes (DEAP ``selNSGA2`` + ``ParetoFront``).

The algorithm writes no files itself: students go to a ``StudentStore`` (``evo_snn.state.store``)
as results arrive, and observers receive each evaluation and each generation through
callbacks that get the search object (``evo_snn.search.run`` attaches the run logger and
the checkpoint writer, ``evo_snn.state.checkpoint``). The operators (sampling, crossover,
mutation, parent selection, survival) and the evaluator are passed in, with today's
NSGA-II choices as defaults (sampling and survival in ``evo_snn.search.operators``,
re-exported here). ``StructureSearch.state_dict()`` / ``load_state_dict()`` hand the
whole search state out and back in as data (``evo_snn.search.snapshot``), so that an
interrupted search continues where it stopped.

Multi-fidelity (``search.fidelity_fraction`` b < 1, ``evo_snn.evaluation.fidelity``): each
generation's offspring are scored at b x kd.epochs (rung 0), ranked among themselves
(``promote``: DEAP ``selNSGA2``), and the best ``ceil(search.promote_fraction x n)``
continue from their rung-0 student to the full budget (rung 1); only full-fidelity
individuals enter survival and the archive (``evaluate_offspring``). That promotion
step, and the forward-only screening (``search.screen``), are in ``evo_snn.search.promotion``.

Objectives (``search.objectives``, default accuracy and sparsity, both maximised; 'energy',
the student's estimated energy as a fraction of its dense bound, minimised) and their
directions are declared once, in the ``config.OBJECTIVES`` table, from which
``fitness_class`` builds the DEAP fitness (``weights``) with the hypervolume's reference
point (``search.hv_reference``). ``objective_value`` and ``hypervolume`` live in
``evo_snn.front`` (re-exported here), below ``rundir``, which needs them too.
"""

from __future__ import annotations

import random
import time
from functools import partial
from typing import Callable, Sequence

import numpy as np
from deap import tools
from tqdm.auto import tqdm

from evo_snn.config import OBJECTIVES as OBJECTIVE_TABLE
from evo_snn.config import GenomeConfig, SearchConfig
from evo_snn.evaluation.evaluator import SerialEvaluator, failure_metrics
from evo_snn.evaluation.fidelity import FULL, FULL_RUNG, Rung, rungs, student_key
from evo_snn.evaluation.fidelity import enabled as fidelity_enabled
from evo_snn.front import OBJECTIVES, Fitness, fitness_class, hypervolume, nondominated, objective_value, points_hypervolume  # noqa: F401
from evo_snn.evaluation.individual import Individual, eval_seed
from evo_snn.search import promotion, snapshot
from evo_snn.search.operators import allocation_seeds, initial_genomes, select_distinct_nsga2  # noqa: F401 (re-exported)
from evo_snn.search.snapshot import STATE_FORMAT  # noqa: F401 (re-exported)
from evo_snn.structure.genome import Genome, GenomeOps
from evo_snn.state.store import StudentStore

MAX_RESAMPLE = 10  # mutations tried per child before a duplicate genome is kept


class StructureSearch:
    """NSGA-II over genomes, with its operators passed in (as pymoo's ``NSGA2(sampling=...)``).

    ops: the genome operators of the model (its prunable layers; default operators).
    fitness: ``fitness(genome, seed[, init_state])`` -> an object with ``metrics`` (dict
      with the metric of every objective of ``search.objectives``: ``accuracy`` and
      ``sparsity``, fractions in [0, 1], and for 'energy' ``energy_fraction``) and
      ``student_state`` (the trained student's state_dict), e.g. ``FitnessResult``; it
      may raise (the individual then fails). Applied through ``evaluator.map(fitness,
      jobs)``; with ``search.inherit_weights`` jobs carry ``init_state``, the first
      parent's student (None when unknown). In a multi-fidelity search
      (``search.fidelity_fraction`` < 1) every job is ``(genome, seed, init_state, rung)``
      with ``rung`` a ``fidelity.Rung``: train ``rung.spent`` x kd.epochs; at a
      continuation (``rung.continues``) init_state is the genome's own rung-0 student.
    evaluator: ``map(fn, jobs)`` yielding ``(index, result | Exception)``
      (``evo_snn.evaluation.evaluator``; default ``SerialEvaluator()``).
    store: where students go as results arrive and are read from (``StudentStore``;
      default in memory). The search keeps metrics only (``results``).
    sampling(n, rng) -> n genomes of generation 0 (default ``initial_genomes``).
    crossover(a, b, rng) -> two child genomes (default ``ops.crossover``), applied with
      probability ``genome.crossover_prob`` per pair.
    mutation(genome, rng, student_abs) -> genome (default ``ops.mutate``); student_abs:
      {layer: |W| of the first parent's student} with ``genome.mask_mutation='magnitude'``,
      else None.
    parent_selection(population, k) -> k parents (default ``tools.selTournamentDCD``).
    survival(candidates, k) -> k survivors (default ``select_distinct_nsga2``).
    callbacks: each ``cb(search)`` is called after every generation (gen 0 = the initial
      population), in order, where ``search.gen``, ``population``, ``archive``,
      ``n_evals`` (real evaluations of that generation) and ``elapsed_s`` describe it and
      ``state_dict()`` is the state right after it; a callback with an
      ``on_evaluation(ind, metrics)`` method also gets every evaluated (or cache-hit)
      individual as it arrives (``metrics`` None when it failed).

    ``run()`` evaluates generations 0..``search.generations``; after
    ``load_state_dict(state)`` it continues from generation ``state['gen'] + 1``.
    """

    def __init__(self, ops: GenomeOps, fitness: Callable, search: SearchConfig, genome_cfg: GenomeConfig, *,
                 evaluator=None, store: StudentStore | None = None, sampling: Callable | None = None,
                 crossover: Callable | None = None, mutation: Callable | None = None,
                 parent_selection: Callable = tools.selTournamentDCD, survival: Callable = select_distinct_nsga2,
                 callbacks: Sequence[Callable] = (), progress: bool = True, screener=None):
        self.ops, self.fitness, self.search, self.genome_cfg = ops, fitness, search, genome_cfg
        self.evaluator = SerialEvaluator() if evaluator is None else evaluator
        self.store = StudentStore() if store is None else store
        self.sampling = sampling or partial(initial_genomes, ops, genome_cfg)
        self.crossover = crossover or ops.crossover
        self.mutation = mutation or ops.mutate
        self.parent_selection, self.survival = parent_selection, survival
        self.callbacks = list(callbacks)
        self.progress = progress
        self.objectives = tuple(getattr(search, "objectives", OBJECTIVES))
        self.fitness_cls = fitness_class(self.objectives, getattr(search, "hv_reference", None))
        self._worst = tuple(float(OBJECTIVE_TABLE[o][2]) for o in self.objectives)
        self.rng = np.random.default_rng(search.seed)
        random.seed(search.seed)  # DEAP's selTournamentDCD draws from `random`
        self.archive = tools.ParetoFront(similar=lambda a, b: a.genome.key == b.genome.key)
        self.results: dict[str, dict] = {}  # genome key -> metrics (the cache); students: self.store
        self.population: list[Individual] = []
        self.gen = -1  # last completed generation (-1: none yet)
        self.n_evals = 0  # real evaluations of generation `gen`
        self.elapsed_s = 0.0  # search wall time up to the end of generation `gen`, over all sessions
        self._counter = 0
        self._grouped = None  # GroupedJobs(fitness), built on the first grouped map
        # multi-fidelity (evo_snn.evaluation.fidelity): (rung 0, rung 1), or None for one fidelity
        self.rungs = rungs(search.fidelity_fraction) if fidelity_enabled(search) else None
        self.promote_fraction = float(getattr(search, "promote_fraction", 0.5))
        self._screened: dict[str, dict] = {}  # genome key -> rung-0 metrics, this generation only
        # forward-only screening (search.screen, evo_snn.evaluation.screening): the screener and the run's counted screening compute
        self.screener = screener
        if self.screener is None and str(getattr(search, "screen", "none") or "none") != "none":
            from evo_snn.evaluation.screening import Screener, context_of

            ctx = context_of(fitness)
            if ctx is None:
                raise ValueError(f"search.screen={search.screen!r} needs a Screener (screener=Screener(ctx)): "
                                 "the fitness carries no FitnessContext")
            self.screener = Screener(ctx, energy="energy" in self.objectives)  # measures forward_cost_ratio now
        self.screen_forward_samples = 0  # every forward sample of the screens so far, BN recalibration included
        self.screen_compute_samples = 0.0  # the same in training-sample equivalents (x forward_cost_ratio)
        self.screen_evals = 0  # screening rows so far (one per candidate and step)

    def _new(self, genome: Genome, gen: int, parents: tuple[str, ...] = ()) -> Individual:
        ind = Individual(genome, uid=f"{gen:02d}-{self._counter:04d}", gen=gen, parents=parents,
                         seed=eval_seed(self.search.seed, gen, self._counter), fitness=self.fitness_cls())
        self._counter += 1
        return ind

    def evaluate(self, individuals: list[Individual], gen: int, rung: Rung | None = None) -> int:
        """Evaluate individuals without a valid fitness; returns the number of real evaluations.

        A genome already in the cache, or equal to another one of this call, is
        evaluated once: the others get its result with status 'cached'. Each student
        goes to the store as its result arrives.

        rung: None (one fidelity), or the ``fidelity.Rung`` of a multi-fidelity search:
        its ``metrics()`` (fidelity, rung, fidelity_spent) are added to each result. A
        full-fidelity result goes to the cache (``results``) and its student under the
        genome key; a rung-0 result goes to this generation's ``_screened`` and its
        student under ``fidelity.student_key`` (``<key>.rung0``).
        """
        full = rung is None or rung.fidelity >= FULL
        cache = self.results if full else self._screened
        todo = [ind for ind in individuals if not ind.fitness.valid]
        fresh: list[Individual] = []
        twins: list[Individual] = []  # same genome as an earlier individual of this call
        first: set[str] = set()
        for ind in todo:
            ind.rung = rung
            cached = cache.get(ind.genome.key)
            if cached is not None:
                self._assign(ind, cached, "cached")
            elif ind.genome.key in first:
                twins.append(ind)
            else:
                first.add(ind.genome.key)
                fresh.append(ind)
        jobs = [self._job(ind) for ind in fresh]
        extra = {} if rung is None else rung.metrics()
        failed: dict[str, dict] = {}
        desc = f"gen {gen} evaluations" + ("" if rung is None else f" (fidelity {rung.fidelity:g})")
        bar = tqdm(total=len(jobs), desc=desc, unit="eval", disable=not self.progress, leave=False)
        for i, res in self._map(jobs):
            ind = fresh[i]
            if isinstance(res, Exception):
                ind.metrics = {**failure_metrics(res), **extra}  # error, attempts, faults (after the retries)
                failed[ind.genome.key] = ind.metrics
                self._fail(ind)
            else:
                metrics = {**res.metrics, **extra}
                if rung is not None and rung.continues and "inherited" in self._screened.get(ind.genome.key, {}):
                    metrics["inherited"] = self._screened[ind.genome.key]["inherited"]  # the lineage's, not the continuation's
                key = ind.genome.key if full else student_key(ind.genome.key, rung.fidelity, rung.index)
                self.store.put(key, res.student_state)
                cache[ind.genome.key] = metrics
                self._assign(ind, metrics, "ok")
            bar.update(1)
        bar.close()
        for ind in twins:
            if ind.genome.key in failed:
                ind.metrics = dict(failed[ind.genome.key])
                self._fail(ind)
            else:
                self._assign(ind, cache[ind.genome.key], "cached")
        return len(jobs)

    def evaluate_offspring(self, children: list[Individual], gen: int) -> tuple[list[Individual], int]:
        """Evaluate a generation's offspring; returns (the full-fidelity ones, in order, and the
        number of real evaluations): ``promotion.evaluate_offspring`` (screening, rung 0, promotion)."""
        return promotion.evaluate_offspring(self, children, gen)

    def screen(self, children: list[Individual], gen: int) -> list[Individual]:
        """The children (not in the cache) that forward-only screening promotes to the KD rung,
        with their twins, in children order: ``promotion.screen``."""
        return promotion.screen(self, children, gen)

    def promote(self, screened: list[Individual]) -> list[Individual]:
        """The rung-0 individuals promoted to the full budget, in selection order: ``promotion.promote``."""
        return promotion.promote(self, screened)

    def _map(self, jobs: list[tuple]):
        """``evaluator.map(fitness, jobs)``; with ``search.students_per_batch`` K > 1 the jobs
        go in groups of K, in order (``evo_snn.evaluation.grouped.GroupedJobs``: one grouped network
        trains the K students), and each member's result (or the group's exception) is
        yielded under the member's own index, as the ungrouped map does."""
        K = int(getattr(self.search, "students_per_batch", 1) or 1)
        if K <= 1:
            yield from self.evaluator.map(self.fitness, jobs)
            return
        from evo_snn.evaluation.grouped import GroupedJobs

        if getattr(self, "_grouped", None) is None:  # one wrapper per search: a Ray actor receives (and builds) it once
            self._grouped = GroupedJobs(self.fitness)
        groups = [jobs[i:i + K] for i in range(0, len(jobs), K)]
        for g, res in self.evaluator.map(self._grouped, [(tuple(grp), grp[0][1]) for grp in groups]):
            for j in range(len(groups[g])):
                yield g * K + j, res if isinstance(res, Exception) else res[j]

    def student(self, key: str) -> dict | None:
        """The trained student of genome ``key`` from the store, or None when it has none."""
        if key not in self.results or key not in self.store:
            return None
        return self.store.get(key)

    def _job(self, ind: Individual) -> tuple:
        """(genome, seed), or with ``search.inherit_weights`` (genome, seed, parent student
        state); in a multi-fidelity search (genome, seed of the rung, init_state, rung), whose
        init_state at a continuation is the genome's rung-0 student (None when the store
        lacks it: only a resumed run's replayed continuation, which is not trained)."""
        if ind.rung is not None and ind.rung.continues:
            r0 = self.rungs[0]
            key = student_key(ind.genome.key, r0.fidelity, r0.index)
            return ind.genome, ind.evaluation_seed, self.store.get(key) if key in self.store else None, ind.rung
        init = self.student(ind.init_key) if self.search.inherit_weights and ind.init_key else None
        if ind.rung is None:
            return (ind.genome, ind.seed, init) if self.search.inherit_weights else (ind.genome, ind.seed)
        return ind.genome, ind.evaluation_seed, init, ind.rung

    def _notify(self, ind: Individual, metrics: dict | None) -> None:
        for cb in self.callbacks:
            on_evaluation = getattr(cb, "on_evaluation", None)
            if on_evaluation is not None:
                on_evaluation(ind, metrics)

    def _fail(self, ind: Individual) -> None:
        ind.status = "failed"
        ind.fitness.values = self._worst  # worst possible: a failed genome never survives
        self._notify(ind, None)

    def _assign(self, ind: Individual, metrics: dict, status: str) -> None:
        ind.metrics = dict(metrics)
        ind.status = status
        missing = [OBJECTIVE_TABLE[o][0] for o in self.objectives if OBJECTIVE_TABLE[o][0] not in metrics]
        if missing:
            raise ValueError(f"the fitness reported no {missing} for {ind.uid}, needed by search.objectives={list(self.objectives)}")
        ind.fitness.values = tuple(float(metrics[OBJECTIVE_TABLE[o][0]]) for o in self.objectives)
        self._notify(ind, metrics)

    def _forget_unused(self, keep: list[Individual]) -> None:
        """Drop the cached metrics of genomes no longer in the population or archive, and
        tell the store that the search needs only the live genomes' students."""
        live = {ind.genome.key for ind in keep} | {ind.genome.key for ind in self.archive}
        self.results = {k: v for k, v in self.results.items() if k in live}
        self.store.retain("search", live)

    def _finish_generation(self, gen: int, pop: list[Individual], n: int, t0: float) -> None:
        self.population, self.gen, self.n_evals = pop, gen, n
        self.elapsed_s = time.perf_counter() - t0
        for cb in self.callbacks:
            cb(self)

    def initial_genomes(self) -> list[Genome]:
        """The generation-0 genomes: ``sampling(search.population, rng)``."""
        return self.sampling(self.search.population, self.rng)

    def offspring(self, pop: list[Individual], gen: int) -> list[Individual]:
        """Parent selection (default: tournament DCD) -> crossover -> mutation. A child
        whose genome equals one in ``pop`` or an earlier child is mutated again, up to
        ``MAX_RESAMPLE`` times (then kept: the cache serves it without training)."""
        P = self.search.population
        parents = self.parent_selection(pop, P)
        seen = {ind.genome.key for ind in pop}
        children: list[Individual] = []
        for a, b in zip(parents[::2], parents[1::2]):
            if self.rng.random() < self.genome_cfg.crossover_prob:
                ga, gb = self.crossover(a.genome, b.genome, self.rng)
                pa = pb = (a.uid, b.uid)
            else:
                ga, gb, pa, pb = a.genome, b.genome, (a.uid,), (b.uid,)
            for g, p, first in ((ga, pa, a), (gb, pb, b)):
                student_abs = self._student_abs(first)
                child = self.mutation(g, self.rng, student_abs)
                for _ in range(MAX_RESAMPLE):
                    if child.key not in seen:
                        break
                    child = self.mutation(g, self.rng, student_abs)
                seen.add(child.key)
                ind = self._new(child, gen, p)
                ind.init_key = first.genome.key  # its own first parent: a for the first child, b for the second
                children.append(ind)
        return children

    def _student_abs(self, parent: Individual) -> dict[str, np.ndarray] | None:
        """|W| of the parent's trained student per prunable layer, for the informed mask
        mutation (``genome.mask_mutation='magnitude'``); None otherwise or when unknown."""
        if self.genome_cfg.mask_mutation != "magnitude":
            return None
        state = self.student(parent.genome.key)
        if state is None:
            return None
        return {n: np.abs(np.asarray(state[n + ".weight"])) for n in self.ops.layers if n + ".weight" in state}

    def survivors(self, candidates: list[Individual]) -> list[Individual]:
        """``survival(candidates, search.population)``."""
        return self.survival(candidates, self.search.population)

    def run(self) -> tools.ParetoFront:
        """Run (or continue) the search up to generation ``search.generations``; returns the archive.

        The archive (DEAP ``ParetoFront``, one entry per genome key) is updated with
        every evaluated individual, parents and offspring, before survival, so a
        non-dominated member cut by ``selNSGA2``'s crowding stays in it. In a
        multi-fidelity search only full-fidelity offspring reach the archive and survival
        (``evaluate_offspring``); generation 0 is evaluated at full fidelity.
        """
        G = self.search.generations
        t0 = time.perf_counter() - self.elapsed_s  # elapsed_s keeps counting across a resume
        if self.gen < 0:
            pop = [self._new(g, 0) for g in self.initial_genomes()]
            n = self.evaluate(pop, 0, None if self.rungs is None else FULL_RUNG)  # gen 0: full fidelity
            self.archive.update(pop)
            pop = self.survivors(pop)
            self._forget_unused(pop)
            self._finish_generation(0, pop, n, t0)
        for gen in range(self.gen + 1, G + 1):
            pop = self.population
            children, n = self.evaluate_offspring(self.offspring(pop, gen), gen)
            self.archive.update(pop + children)
            pop = self.survivors(pop + children)
            self._forget_unused(pop)
            self._finish_generation(gen, pop, n, t0)
        return self.archive

    def state_dict(self) -> dict:
        """The whole search state after generation ``self.gen``, as data (``snapshot.state_of``;
        its entries are listed in ``evo_snn.search.snapshot``)."""
        return snapshot.state_of(self)

    def load_state_dict(self, state: dict) -> None:
        """Restore a ``state_dict()`` (after a JSON round trip of its JSON-able part), the global
        ``random`` state too (``snapshot.restore``). The students of ``state['results']`` must
        be in this search's ``store`` (a resumed run opens the run's student folder). Raises
        ValueError when the state does not fit this search (format, seed, population size,
        genome layers, a missing genome or student)."""
        snapshot.restore(self, state)

