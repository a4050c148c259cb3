"""The default operators of ``StructureSearch`` (``evo_snn.search.nsga``) that are not the
genome's own: the sampling of generation 0 (``initial_genomes``: global-magnitude seeds,
the ``genome.init_allocations`` seeds, random genomes) and the survival
(``select_distinct_nsga2``: NSGA-II over distinct genomes). Crossover and mutation are
``GenomeOps``'; parent selection is DEAP's ``selTournamentDCD``.

Plain data, no torch import (as ``nsga``).
"""

from __future__ import annotations

import numpy as np
from deap import tools

from evo_snn.config import GenomeConfig
from evo_snn.structure.genome import Genome, GenomeOps


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
