"""The front arithmetic of the search: an individual's objective values
(``objective_value``) and the hypervolume of a front (``hypervolume``), with the default
objectives (``OBJECTIVES``).

Shared by the search (``evo_snn.nsga``, which re-exports all three) and the run directory
(``evo_snn.rundir``, for generations.csv and pareto.csv). Below both: of evo_snn it
imports only ``config`` (the objectives table).
"""

from __future__ import annotations

import numpy as np
from deap.benchmarks.tools import hypervolume as deap_hypervolume

from .config import OBJECTIVES as OBJECTIVE_TABLE

OBJECTIVES = ("accuracy", "sparsity")  # the default search.objectives


def objective_value(ind, name: str, default: float = 0.0) -> float:
    """``name`` ('accuracy', 'sparsity', 'energy', or any metric) of an individual: its
    fitness value when ``name`` is one of its objectives, else its metric (for 'energy':
    ``energy_fraction``), ``default`` when it has none (a failed individual)."""
    fitness = ind.fitness  # duck-typed: anything with ``values`` (and DEAP's ``valid``)
    objectives = getattr(fitness, "objectives", OBJECTIVES)
    if name in objectives and getattr(fitness, "valid", bool(fitness.values)):
        return float(fitness.values[objectives.index(name)])
    key = OBJECTIVE_TABLE[name][0] if name in OBJECTIVE_TABLE else name
    value = getattr(ind, "metrics", {}).get(key)
    return default if value is None else float(value)


def hypervolume(front: list) -> float:
    """Volume dominated by ``front`` in its objective space, up to the reference point of
    its fitness class (``fitness.reference``): with the default objectives the area in
    (accuracy, sparsity) space from (0, 0); with 'energy' (minimised) the volume up to
    ``search.hv_reference['energy']`` (default 1). DEAP's ``hypervolume`` (moocore)."""
    valid = [ind for ind in front if ind.fitness.valid]
    if not valid:
        return 0.0
    f = valid[0].fitness
    ref = np.asarray(getattr(f, "reference", np.zeros(len(f.weights))), dtype=float)
    return float(deap_hypervolume(valid, ref=-np.asarray(f.weights) * ref))  # DEAP minimises -weights * values
