"""The front arithmetic of the search: an individual's objective values
(``objective_value``) and the hypervolume of a front (``hypervolume``), with the default
objectives (``OBJECTIVES``).

Shared by the search (``evo_snn.search.nsga``, which re-exports all three) and the run directory
(``evo_snn.state.rundir``, for generations.csv and pareto.csv). Below both: of evo_snn it
imports only ``config`` (the objectives table).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from deap import base
from deap.benchmarks.tools import hypervolume as deap_hypervolume
from deap.tools import sortNondominated

from evo_snn.config import OBJECTIVES as OBJECTIVE_TABLE

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


class Fitness(base.Fitness):
    """(student validation accuracy, student sparsity): both maximised; hypervolume
    reference (0, 0). The default; ``fitness_class`` builds the class of other objectives."""

    weights = (1.0, 1.0)
    objectives = OBJECTIVES
    reference = (0.0, 0.0)


_FITNESS_CLASSES: dict[tuple, type] = {}


def fitness_class(objectives=OBJECTIVES, reference: dict | None = None) -> type:
    """The DEAP fitness class of ``objectives`` (names in ``config.OBJECTIVES``), in order.

    Its ``weights`` come from that table (+1 maximised, -1 minimised), ``objectives`` names
    its values, and ``reference`` is the hypervolume's reference point, one value per
    objective: ``reference[name]``, else the objective's worst value (accuracy 0,
    sparsity 0, energy 1). ``Fitness`` itself for (accuracy, sparsity) at (0, 0).
    raises ValueError naming an unknown objective.
    """
    objectives = tuple(objectives)
    unknown = [o for o in objectives if o not in OBJECTIVE_TABLE]
    if unknown:
        raise ValueError(f"unknown objective(s) {unknown}; known: {list(OBJECTIVE_TABLE)}")
    reference = reference or {}
    ref = tuple(float(reference.get(o, OBJECTIVE_TABLE[o][2])) for o in objectives)
    if objectives == Fitness.objectives and ref == Fitness.reference:
        return Fitness
    key = (objectives, ref)
    if key not in _FITNESS_CLASSES:
        weights = tuple(OBJECTIVE_TABLE[o][1] for o in objectives)
        _FITNESS_CLASSES[key] = type(f"Fitness_{'_'.join(objectives)}", (base.Fitness,),
                                     {"weights": weights, "objectives": objectives, "reference": ref,
                                      "__module__": __name__, "__doc__": f"{objectives}, weights {weights}, reference {ref}"})
    return _FITNESS_CLASSES[key]


@dataclass(eq=False)
class _Point:
    fitness: base.Fitness


def _points(points) -> list:
    pts = []
    for values in np.asarray(points, dtype=float).reshape(-1, len(OBJECTIVES)):
        pts.append(_Point(Fitness(tuple(values))))  # only .fitness is read by DEAP's sorting and hypervolume
    return pts


def points_hypervolume(points) -> float:
    """``hypervolume`` of plain points: [M, 2] (accuracy, sparsity) fractions, reference (0, 0)."""
    pts = _points(points)
    return float(deap_hypervolume(pts, ref=np.zeros(len(OBJECTIVES)))) if pts else 0.0


def nondominated(points) -> list[int]:
    """Indices (ascending) of the non-dominated rows of [M, 2] (accuracy, sparsity),
    both maximised (DEAP ``sortNondominated``, first front; equal points all stay)."""
    pts = _points(points)
    if not pts:
        return []
    first = sortNondominated(pts, len(pts), first_front_only=True)[0]
    ids = {id(p) for p in first}
    return [i for i, p in enumerate(pts) if id(p) in ids]
