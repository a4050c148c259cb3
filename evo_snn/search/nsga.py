"""NSGA-II structure search over genomes (DEAP ``selNSGA2`` + ``ParetoFront``).

The algorithm writes no files itself: students go to a ``StudentStore`` (``evo_snn.state.store``)
as results arrive, and observers receive each evaluation and each generation through
callbacks that get the search object (``evo_snn.search.run`` attaches the run logger and
the checkpoint writer, ``evo_snn.state.checkpoint``). The operators (sampling, crossover,
mutation, parent selection, survival) and the evaluator are passed in, with today's
NSGA-II choices as defaults. ``StructureSearch.state_dict()``
/ ``load_state_dict()`` hand the whole search state out and back in as data, so that
an interrupted search continues where it stopped.

Multi-fidelity (``search.fidelity_fraction`` b < 1, ``evo_snn.evaluation.fidelity``): each
generation's offspring are scored at b x kd.epochs (rung 0), ranked among themselves
(``promote``: DEAP ``selNSGA2``), and the best ``ceil(search.promote_fraction x n)``
continue from their rung-0 student to the full budget (rung 1); only full-fidelity
individuals enter survival and the archive (``evaluate_offspring``).

Objectives (``search.objectives``, default accuracy and sparsity, both maximised; 'energy',
the student's estimated energy as a fraction of its dense bound, minimised) and their
directions are declared once, in the ``config.OBJECTIVES`` table, from which
``fitness_class`` builds the DEAP fitness (``weights``) with the hypervolume's reference
point (``search.hv_reference``). ``objective_value`` and ``hypervolume`` live in
``evo_snn.front`` (re-exported here), below ``rundir``, which needs them too.
"""

from __future__ import annotations

import math
import random
import time
from functools import partial
from typing import Callable, Sequence

import numpy as np
from deap import tools
from tqdm.auto import tqdm

from evo_snn.atomic import to_jsonable
from evo_snn.config import OBJECTIVES as OBJECTIVE_TABLE
from evo_snn.config import GenomeConfig, SearchConfig
from evo_snn.evaluation.evaluator import SerialEvaluator, failure_metrics
from evo_snn.evaluation.fidelity import FULL, FULL_RUNG, Rung, rungs, student_key
from evo_snn.evaluation.fidelity import enabled as fidelity_enabled
from evo_snn.front import OBJECTIVES, Fitness, fitness_class, hypervolume, nondominated, objective_value, points_hypervolume  # noqa: F401
from evo_snn.evaluation.individual import Individual, eval_seed
from evo_snn.structure.genome import Genome, GenomeOps
from evo_snn.state.store import StudentStore

STATE_FORMAT = 1  # version of the dict returned by StructureSearch.state_dict()
MAX_RESAMPLE = 10  # mutations tried per child before a duplicate genome is kept


def initial_genomes(ops: GenomeOps, cfg: GenomeConfig, n: int, rng: np.random.Generator) -> list[Genome]:
    """The default sampling: ``n`` generation-0 genomes. ``round(cfg.init_global_fraction * n)``
    global-magnitude genomes at sparsities spread evenly over (ratio_min, ratio_max]
    (seeding: elitism then keeps the front at least as good as one-shot pruning on
    validation), then the ``genome.init_allocations`` seeds (``allocation_seeds``), the
    rest ``ops.random(rng)``."""
    k = int(round(cfg.init_global_fraction * n))
    lo, hi = cfg.ratio_min, cfg.ratio_max
    seeded = [ops.global_magnitude(lo + (hi - lo) * (i + 1) / k) for i in range(k)]
    seeded += allocation_seeds(ops, cfg, n)[:max(0, n - k)]
    return seeded + [ops.random(rng) for _ in range(n - len(seeded))]


def allocation_seeds(ops: GenomeOps, cfg: GenomeConfig, n: int) -> list[Genome]:
    """The generation-0 genomes of ``genome.init_allocations`` for a population of ``n``:
    round(``init_allocation_fraction`` x n) genomes split evenly over the listed rules (the
    first rules get one more when it does not divide); rule a with k_a genomes gives them at
    the sparsities ratio_min + (ratio_max - ratio_min) x (i + 1) / k_a, i < k_a, each at
    exactly round(s x N) pruned weights (``GenomeOps.allocation``). Rule order, then
    sparsity ascending. [] when init_allocations is empty."""
    methods = tuple(getattr(cfg, "init_allocations", ()) or ())
    if not methods:
        return []
    total = min(n, int(round(float(getattr(cfg, "init_allocation_fraction", 0.5)) * n)))
    per, extra = divmod(total, len(methods))
    lo, hi = cfg.ratio_min, cfg.ratio_max
    out = []
    for j, method in enumerate(methods):
        k = per + (1 if j < extra else 0)
        out += [ops.allocation(method, lo + (hi - lo) * (i + 1) / k) for i in range(k)]
    return out


def select_distinct_nsga2(individuals: list, k: int) -> list:
    """The default survival: NSGA-II (``selNSGA2``, which also assigns crowding distances)
    of ``k`` from ``individuals`` with duplicate genomes removed first (the oldest copy
    stays); duplicates fill up only when fewer than ``k`` distinct genomes exist."""
    unique, dups, keys = [], [], set()
    for ind in individuals:
        (dups if ind.genome.key in keys else unique).append(ind)
        keys.add(ind.genome.key)
    pool = unique if len(unique) >= k else unique + dups
    return tools.selNSGA2(pool, k)


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
        """Evaluate a generation's offspring; returns (the full-fidelity ones, in order, and
        the number of real evaluations).

        One fidelity: ``evaluate(children)``, all of them. Multi-fidelity: a child whose
        genome is in the cache gets its full-fidelity result ('cached'); the others are
        scored at rung 0, ``promote`` picks among those results only, and the promoted
        genomes (with their twins) continue from their rung-0 student to the full budget
        (rung 1). Children not promoted keep their rung-0 result and are returned neither
        for survival nor for the archive. The rung-0 results live for this generation only.
        """
        if self.rungs is None and self.screener is None:
            return children, self.evaluate(children, gen)
        cached = [c for c in children if c.genome.key in self.results]
        self.evaluate(cached, gen, None if self.rungs is None else FULL_RUNG)  # cache hits only: no evaluation
        ids = {id(c) for c in cached}
        screened = [c for c in children if id(c) not in ids]
        if self.screener is not None:  # forward-only screening: only the promoted go on to KD training
            screened = self.screen(screened, gen)
        if self.rungs is None:
            n = self.evaluate(screened, gen)
            ids |= {id(c) for c in screened}
            return [c for c in children if id(c) in ids], n
        r0, r1 = self.rungs
        self._screened = {}
        n = self.evaluate(screened, gen, r0)
        keys = {ind.genome.key for ind in self.promote(screened)}
        cont = [c for c in screened if c.genome.key in keys]
        for c in cont:
            c.fitness = self.fitness_cls()  # a rung-0 value is never compared with a full one
        n += self.evaluate(cont, gen, r1)
        ids |= {id(c) for c in cont}
        self._screened = {}
        return [c for c in children if id(c) in ids], n

    def screen(self, children: list[Individual], gen: int) -> list[Individual]:
        """Forward-only multi-step screening (``search.screen``, ``evo_snn.evaluation.screening``) of
        children not in the cache; returns those promoted to the KD rung (with their twins),
        in children order.

        Every distinct genome is scored on the first ``search.screen_first_share`` of the
        fixed validation subset after BN recalibration (step 0); the best ``screen_keep`` of
        them (at least ``screen_promote``) are scored on the rest (step 1, pooled with step
        0: the whole subset); the best ``promote_count`` are promoted. "Best": DEAP
        ``selNSGA2`` over the search's objectives with the screening quality in place of
        accuracy (``Screener.quality``), the genome's sparsity, and the screened energy
        fraction. Each screening step of a candidate is one row (``on_evaluation``) with
        status 'screened' and metrics ``rung`` 'screen', ``screen``, ``screen_step``,
        ``score`` (mean NLL / KL / accuracy over its scored images), ``screen_scored``,
        ``forward_samples`` (this step's forwards: BN batches x batch size + scored images
        at step 0, scored images at step 1), ``forward_cost_ratio``, ``counted_samples``
        (forward_samples x ratio, training-sample equivalents), ``seconds``, ``sparsity``,
        ``promoted`` (on the last row of a candidate). Adds to ``screen_forward_samples``,
        ``screen_compute_samples`` and ``screen_evals``."""
        from evo_snn.evaluation.screening import promote_count

        sc, cfg = self.screener, self.search
        distinct, seen = [], {}
        for ind in children:
            if ind.genome.key not in seen:
                seen[ind.genome.key] = ind
                distinct.append(ind)
        if not distinct:
            return []
        n = len(sc.val_index)
        n0 = min(n, max(1, math.ceil(float(cfg.screen_first_share) * n - 1e-9)))
        k_promote = min(len(distinct), promote_count(cfg))
        k_keep = min(len(distinct), max(k_promote, math.ceil(float(cfg.screen_keep) * len(distinct) - 1e-9)))
        cands, rows = {}, []
        bar = tqdm(total=len(distinct), desc=f"gen {gen} screening ({sc.mode})", unit="cand", disable=not self.progress, leave=False)
        size = max(1, int(getattr(cfg, "screen_group", 1) or 1))  # search.screen_group: candidates per grouped net
        for i in range(0, len(distinct), size):
            chunk = distinct[i:i + size]
            inits = [self.student(ind.init_key) if cfg.inherit_weights and ind.init_key else None for ind in chunk]
            group = sc.start_group([ind.genome for ind in chunk], inits)
            bns = [c.forward_samples for c in group]
            sc.extend_group(group, n0)
            for ind, c, bn in zip(chunk, group, bns):
                cands[ind.genome.key] = c
                rows.append((ind, 0, bn + n0, c.seconds))
            bar.update(len(chunk))
        bar.close()
        keep = self._screen_select(distinct, cands, k_keep)
        if n0 < n:
            for i in range(0, len(keep), size):
                chunk = [cands[ind.genome.key] for ind in keep[i:i + size]]
                before = [(c.seconds, c.forward_samples) for c in chunk]
                sc.extend_group(chunk, n)
                for ind, c, (t, f) in zip(keep[i:i + size], chunk, before):
                    rows.append((ind, 1, c.forward_samples - f, c.seconds - t))
        promoted = self._screen_select(keep, cands, k_promote)
        keys = {ind.genome.key for ind in promoted}
        last = {ind.genome.key: i for i, (ind, _, _, _) in enumerate(rows)}
        for i, (ind, step, fwd, secs) in enumerate(rows):
            c = cands[ind.genome.key]
            partial_score = torch_free_mean(c.losses, n0 if step == 0 else c.scored)
            metrics = {"rung": "screen", "screen": sc.mode, "screen_step": step, "score": partial_score,
                       "screen_scored": n0 if step == 0 else c.scored, "forward_samples": int(fwd),
                       "forward_cost_ratio": float(sc.forward_cost_ratio),
                       "counted_samples": float(fwd) * float(sc.forward_cost_ratio), "seconds": float(secs),
                       "sparsity": float(ind.genome.sparsity),
                       **({} if c.energy_fraction is None else {"energy_fraction": c.energy_fraction})}
            if last[ind.genome.key] == i:
                metrics["promoted"] = ind.genome.key in keys
            self.screen_forward_samples += int(fwd)
            self.screen_compute_samples += metrics["counted_samples"]
            self.screen_evals += 1
            ind.rung = None
            ind.metrics, ind.status = metrics, "screened"
            self._notify(ind, metrics)
        return [ind for ind in children if ind.genome.key in keys]

    def _screen_select(self, inds: list[Individual], cands: dict, k: int) -> list[Individual]:
        """The best ``k`` of ``inds`` by their screening values (``screen``): ``selNSGA2``
        over the objectives, 'accuracy' replaced by ``Screener.quality``."""
        if k >= len(inds):
            return list(inds)
        proxies = []
        for ind in inds:
            c = cands[ind.genome.key]
            vals = []
            for o in self.objectives:
                if o == "accuracy":
                    vals.append(self.screener.quality(c))
                elif o == "sparsity":
                    vals.append(float(ind.genome.sparsity))
                elif o == "energy":
                    vals.append(float(c.energy_fraction) if c.energy_fraction is not None else 1.0)
                else:
                    vals.append(0.0)
            p = Individual.__new__(Individual)
            p.genome, p.fitness = ind.genome, self.fitness_cls(tuple(vals))
            proxies.append(p)
        chosen = {id(p) for p in tools.selNSGA2(proxies, k)}
        return [ind for ind, p in zip(inds, proxies) if id(p) in chosen]

    def promote(self, screened: list[Individual]) -> list[Individual]:
        """The rung-0 individuals promoted to the full budget: the best ``ceil(
        search.promote_fraction x n)`` of the n distinct genomes scored at rung 0, by
        non-dominated sorting and crowding among themselves only (DEAP ``selNSGA2``; a
        twin counts once, failed ones are never promoted). Returns them in selection order."""
        distinct, seen = [], set()
        for ind in screened:
            if ind.genome.key not in seen:
                seen.add(ind.genome.key)
                distinct.append(ind)
        ok = [ind for ind in distinct if ind.status == "ok"]
        k = min(len(ok), math.ceil(self.promote_fraction * len(distinct) - 1e-9))
        return tools.selNSGA2(ok, k) if k > 0 else []

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

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        """The whole search state after generation ``self.gen``, as data.

        Returns a dict whose entries are JSON-able (``json_default`` for tuples and
        numpy scalars in metrics) except ``genomes``:

        - ``objectives``: ``search.objectives``, the order of every record's fitness values;
        - ``format`` (int), ``gen`` (last completed generation, -1 before gen 0),
          ``counter`` (the uid counter: the next individual gets uid ``GG-<counter>``),
          ``elapsed_s`` (search wall time so far, seconds), ``seed`` (search.seed);
        - ``numpy_rng``: ``self.rng.bit_generator.state`` (a dict of ints);
          ``python_random``: ``random.getstate()`` as nested lists (DEAP's
          tournament draws from the global ``random``);
        - ``population`` (in order: the order feeds the tournament) and ``archive``
          (the ParetoFront's items, best first objective first): lists of records
          ``{uid, gen, parents, seed, status, metrics, fitness: [values of objectives],
          crowding_dist, genome_key, ratios}`` (``crowding_dist``: float, ``"inf"`` or None);
        - ``genomes``: ``{genome key: Genome}`` for every key in the records (a key
          fixes the masks; each record carries its own ``ratios``, since two ratios
          can round to the same zero count);
        - ``results``: ``{genome key: metrics}``, the evaluation cache of every live
          genome; their students are in ``store`` (``StudentStore``), not in the state;
        - ``screen`` (only with ``search.screen``): ``{forward_samples, compute_samples, evals,
          forward_cost_ratio}``, the screening compute counted so far;
        - ``laws`` (only for smooth genomes, ``genome.mutation='smooth'``): ``{genome key: [law,
          sparsity, parameter]}`` of the live genomes whose density law is known
          (``GenomeOps.params``), so that a resumed run goes on perturbing their gamma / tau.
        """
        genomes: dict[str, Genome] = {}
        for ind in list(self.population) + list(self.archive):
            genomes.setdefault(ind.genome.key, ind.genome)
        return {
            "format": STATE_FORMAT,
            "objectives": list(self.objectives),
            "gen": self.gen,
            "counter": self._counter,
            "elapsed_s": float(self.elapsed_s),
            "seed": self.search.seed,
            "numpy_rng": to_jsonable(self.rng.bit_generator.state),
            "python_random": to_jsonable(random.getstate()),
            "population": [_record(ind) for ind in self.population],
            "archive": [_record(ind) for ind in self.archive],
            "genomes": genomes,
            "results": dict(self.results),
            **({"laws": {k: [law, s, list(p) if isinstance(p, tuple) else p]
                         for k, (law, s, p) in self.ops.params.items() if k in genomes}}
               if any(k in genomes for k in self.ops.params) else {}),
            **({} if self.screener is None else {"screen": {
                "forward_samples": int(self.screen_forward_samples), "compute_samples": float(self.screen_compute_samples),
                "evals": int(self.screen_evals), "forward_cost_ratio": float(self.screener.forward_cost_ratio)}}),
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore a ``state_dict()`` (after a JSON round trip of its JSON-able part).

        Sets the global ``random`` state too. The students of ``state['results']`` must
        be in this search's ``store`` (a resumed run opens the run's student folder).
        Raises ValueError when the state does not fit this search (format, seed,
        population size, genome layers, a missing genome or student).
        """
        if state.get("format") != STATE_FORMAT:
            raise ValueError(f"search state format {state.get('format')!r}, expected {STATE_FORMAT}")
        if list(state.get("objectives", OBJECTIVES)) != list(self.objectives):
            raise ValueError(f"search state has objectives {list(state.get('objectives', OBJECTIVES))}, "
                             f"the config has search.objectives={list(self.objectives)}")
        if state["seed"] != self.search.seed:
            raise ValueError(f"search state has seed {state['seed']}, the config has search.seed={self.search.seed}")
        if state["gen"] >= 0 and len(state["population"]) != self.search.population:
            raise ValueError(f"search state has a population of {len(state['population'])}, "
                             f"the config has search.population={self.search.population}")
        genomes = state["genomes"]
        for key, g in genomes.items():
            if tuple(g.layers) != tuple(self.ops.layers):
                raise ValueError(f"genome {key} has layers {list(g.layers)}, the model's prunable layers are {list(self.ops.layers)}")
        missing = [key for key in state["results"] if key not in self.store]
        if missing:
            raise ValueError(f"the student store lacks the students of {len(missing)} evaluated genome(s), e.g. {missing[0]}")

        def individual(rec: dict) -> Individual:
            if rec["genome_key"] not in genomes:
                raise ValueError(f"search state lacks genome {rec['genome_key']} of {rec['uid']}")
            g = genomes[rec["genome_key"]]
            ind = Individual(Genome(g.layers, tuple(float(r) for r in rec["ratios"]), g.masks), uid=rec["uid"],
                             gen=int(rec["gen"]), parents=tuple(rec["parents"]), metrics=dict(rec["metrics"]),
                             status=rec["status"], seed=int(rec["seed"]), fitness=self.fitness_cls())
            if rec["fitness"] is not None:
                ind.fitness.values = tuple(float(v) for v in rec["fitness"])
            if rec.get("crowding_dist") is not None:
                ind.fitness.crowding_dist = float(rec["crowding_dist"])
            return ind

        self.population = [individual(r) for r in state["population"]]
        items = [individual(r) for r in state["archive"]]
        self.archive.clear()
        # HallOfFame invariant: keys ascending by fitness, items descending, keys[i] is items[-1 - i].fitness
        self.archive.items[:] = items
        self.archive.keys[:] = [ind.fitness for ind in reversed(items)]
        self.results = dict(state["results"])
        self.gen = int(state["gen"])
        self._counter = int(state["counter"])
        self.elapsed_s = float(state["elapsed_s"])
        self.rng.bit_generator.state = state["numpy_rng"]
        screen = state.get("screen") or {}
        self.screen_forward_samples = int(screen.get("forward_samples", 0))
        self.screen_compute_samples = float(screen.get("compute_samples", 0.0))
        self.screen_evals = int(screen.get("evals", 0))
        for key, (law, sp, p) in (state.get("laws") or {}).items():  # smooth genomes: their density-law parameters
            self.ops.params[key] = (str(law), float(sp), tuple(float(v) for v in p) if isinstance(p, list) else float(p))
        version, internal, gauss = state["python_random"]
        random.setstate((version, tuple(internal), gauss))


def torch_free_mean(chunks, n: int) -> float:
    """Mean of the first ``n`` values of a list of 1-D arrays or tensors (a candidate's
    per-sample screening scores), nan for none."""
    vals = np.concatenate([np.asarray(c, dtype=np.float64).ravel() for c in chunks]) if chunks else np.zeros(0)
    vals = vals[:n]
    return float(vals.mean()) if vals.size else float("nan")


def _record(ind: Individual) -> dict:
    cd = getattr(ind.fitness, "crowding_dist", None)
    return {"uid": ind.uid, "gen": ind.gen, "parents": list(ind.parents), "seed": int(ind.seed), "status": ind.status,
            "metrics": to_jsonable(ind.metrics), "fitness": list(ind.fitness.values) if ind.fitness.valid else None,
            "crowding_dist": None if cd is None else ("inf" if math.isinf(cd) else float(cd)),
            "genome_key": ind.genome.key, "ratios": [float(r) for r in ind.genome.ratios]}
