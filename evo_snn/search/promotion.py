"""The promotion step of a generation: which offspring of a ``StructureSearch``
(``evo_snn.search.nsga``) go on to the full KD budget.

``evaluate_offspring``: one fidelity evaluates them all; otherwise the children in the
cache get their full-fidelity result, the others are screened forward-only
(``screen``, with ``search.screen``; ``evo_snn.evaluation.screening``) and/or scored at
rung 0 of a multi-fidelity search (``promote``, with ``search.fidelity_fraction`` < 1;
``evo_snn.evaluation.fidelity``), and only the promoted reach the full budget. Both
selections are DEAP ``selNSGA2`` among the candidates themselves.

Functions of the search object (``search``: the ``StructureSearch``), which calls them
from its methods of the same names. Plain data, no torch import (as ``nsga``).
"""

from __future__ import annotations

import math

import numpy as np
from deap import tools
from tqdm.auto import tqdm

from evo_snn.evaluation.fidelity import FULL_RUNG
from evo_snn.evaluation.individual import Individual


def evaluate_offspring(search, children: list[Individual], gen: int) -> tuple[list[Individual], int]:
    """Evaluate a generation's offspring; returns (the full-fidelity ones, in order, and
    the number of real evaluations).

    One fidelity: ``search.evaluate(children)``, all of them. Multi-fidelity: a child whose
    genome is in the cache gets its full-fidelity result ('cached'); the others are
    scored at rung 0, ``search.promote`` picks among those results only, and the promoted
    genomes (with their twins) continue from their rung-0 student to the full budget
    (rung 1). Children not promoted keep their rung-0 result and are returned neither
    for survival nor for the archive. The rung-0 results live for this generation only.
    With a screener, ``search.screen`` first picks the children that are KD-trained at all.
    """
    if search.rungs is None and search.screener is None:
        return children, search.evaluate(children, gen)
    cached = [c for c in children if c.genome.key in search.results]
    search.evaluate(cached, gen, None if search.rungs is None else FULL_RUNG)  # cache hits only: no evaluation
    ids = {id(c) for c in cached}
    screened = [c for c in children if id(c) not in ids]
    if search.screener is not None:  # forward-only screening: only the promoted go on to KD training
        screened = search.screen(screened, gen)
    if search.rungs is None:
        n = search.evaluate(screened, gen)
        ids |= {id(c) for c in screened}
        return [c for c in children if id(c) in ids], n
    r0, r1 = search.rungs
    search._screened = {}
    n = search.evaluate(screened, gen, r0)
    keys = {ind.genome.key for ind in search.promote(screened)}
    cont = [c for c in screened if c.genome.key in keys]
    for c in cont:
        c.fitness = search.fitness_cls()  # a rung-0 value is never compared with a full one
    n += search.evaluate(cont, gen, r1)
    ids |= {id(c) for c in cont}
    search._screened = {}
    return [c for c in children if id(c) in ids], n


def distinct(individuals: list[Individual]) -> list[Individual]:
    """The first individual of each genome key, in order (a twin counts once)."""
    out, seen = [], set()
    for ind in individuals:
        if ind.genome.key not in seen:
            seen.add(ind.genome.key)
            out.append(ind)
    return out


def promote(search, screened: list[Individual]) -> list[Individual]:
    """The rung-0 individuals promoted to the full budget: the best ``ceil(
    search.promote_fraction x n)`` of the n distinct genomes scored at rung 0, by
    non-dominated sorting and crowding among themselves only (DEAP ``selNSGA2``; a
    twin counts once, failed ones are never promoted). Returns them in selection order."""
    candidates = distinct(screened)
    ok = [ind for ind in candidates if ind.status == "ok"]
    k = min(len(ok), math.ceil(search.promote_fraction * len(candidates) - 1e-9))
    return tools.selNSGA2(ok, k) if k > 0 else []


def screen(search, children: list[Individual], gen: int) -> list[Individual]:
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

    sc, cfg = search.screener, search.search
    candidates = distinct(children)
    if not candidates:
        return []
    n = len(sc.val_index)
    n0 = min(n, max(1, math.ceil(float(cfg.screen_first_share) * n - 1e-9)))
    k_promote = min(len(candidates), promote_count(cfg))
    k_keep = min(len(candidates), max(k_promote, math.ceil(float(cfg.screen_keep) * len(candidates) - 1e-9)))
    size = max(1, int(getattr(cfg, "screen_group", 1) or 1))  # search.screen_group: candidates per grouped net
    cands, rows = _first_step(search, candidates, n0, size, gen)
    keep = select(search, candidates, cands, k_keep)
    if n0 < n:
        rows += _second_step(search, keep, cands, n, size)
    keys = {ind.genome.key for ind in select(search, keep, cands, k_promote)}
    _report(search, rows, cands, n0, keys)
    return [ind for ind in children if ind.genome.key in keys]


def _first_step(search, candidates: list[Individual], n0: int, size: int, gen: int) -> tuple[dict, list[tuple]]:
    """Screening step 0: each candidate, in groups of ``size``, starts from its inherited
    student (``search.inherit_weights``) or the sparse teacher, BN recalibrated, and is
    scored on the first ``n0`` images. Returns ({genome key: screened candidate}, rows
    ``(individual, 0, forward samples, seconds)``)."""
    sc, cfg = search.screener, search.search
    cands, rows = {}, []
    bar = tqdm(total=len(candidates), desc=f"gen {gen} screening ({sc.mode})", unit="cand", disable=not search.progress,
               leave=False)
    for i in range(0, len(candidates), size):
        chunk = candidates[i:i + size]
        inits = [search.student(ind.init_key) if cfg.inherit_weights and ind.init_key else None for ind in chunk]
        group = sc.start_group([ind.genome for ind in chunk], inits)
        bns = [c.forward_samples for c in group]
        sc.extend_group(group, n0)
        for ind, c, bn in zip(chunk, group, bns):
            cands[ind.genome.key] = c
            rows.append((ind, 0, bn + n0, c.seconds))
        bar.update(len(chunk))
    bar.close()
    return cands, rows


def _second_step(search, keep: list[Individual], cands: dict, n: int, size: int) -> list[tuple]:
    """Screening step 1: the kept candidates, in groups of ``size``, scored on the rest of
    the ``n`` images; returns their rows ``(individual, 1, forward samples, seconds)`` of
    this step alone."""
    rows = []
    for i in range(0, len(keep), size):
        chunk = [cands[ind.genome.key] for ind in keep[i:i + size]]
        before = [(c.seconds, c.forward_samples) for c in chunk]
        search.screener.extend_group(chunk, n)
        for ind, c, (t, f) in zip(keep[i:i + size], chunk, before):
            rows.append((ind, 1, c.forward_samples - f, c.seconds - t))
    return rows


def _report(search, rows: list[tuple], cands: dict, n0: int, keys: set[str]) -> None:
    """One 'screened' row per candidate and step (the metrics listed in ``screen``) to the
    search's callbacks, in ``rows`` order, ``promoted`` (genome key in ``keys``) on each
    candidate's last; adds them to the search's screening counters."""
    sc = search.screener
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
        search.screen_forward_samples += int(fwd)
        search.screen_compute_samples += metrics["counted_samples"]
        search.screen_evals += 1
        ind.rung = None
        ind.metrics, ind.status = metrics, "screened"
        search._notify(ind, metrics)


def select(search, inds: list[Individual], cands: dict, k: int) -> list[Individual]:
    """The best ``k`` of ``inds`` by their screening values (``screen``): ``selNSGA2``
    over the objectives, 'accuracy' replaced by ``Screener.quality``."""
    if k >= len(inds):
        return list(inds)
    proxies = []
    for ind in inds:
        c = cands[ind.genome.key]
        vals = []
        for o in search.objectives:
            if o == "accuracy":
                vals.append(search.screener.quality(c))
            elif o == "sparsity":
                vals.append(float(ind.genome.sparsity))
            elif o == "energy":
                vals.append(float(c.energy_fraction) if c.energy_fraction is not None else 1.0)
            else:
                vals.append(0.0)
        p = Individual.__new__(Individual)
        p.genome, p.fitness = ind.genome, search.fitness_cls(tuple(vals))
        proxies.append(p)
    chosen = {id(p) for p in tools.selNSGA2(proxies, k)}
    return [ind for ind, p in zip(inds, proxies) if id(p) in chosen]


def torch_free_mean(chunks, n: int) -> float:
    """Mean of the first ``n`` values of a list of 1-D arrays or tensors (a candidate's
    per-sample screening scores), nan for none."""
    vals = np.concatenate([np.asarray(c, dtype=np.float64).ravel() for c in chunks]) if chunks else np.zeros(0)
    vals = vals[:n]
    return float(vals.mean()) if vals.size else float("nan")
