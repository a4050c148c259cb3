"""The state of a ``StructureSearch`` (``evo_snn.search.nsga``) as data, and back:
``state_of(search)`` is ``StructureSearch.state_dict()``, ``restore(search, state)`` its
``load_state_dict(state)``. The checkpoints (``evo_snn.state.checkpoint``) write and read
it, so that an interrupted search continues where it stopped.

The state (``STATE_FORMAT`` 1) is a dict whose entries are JSON-able (``json_default``
for tuples and numpy scalars in metrics) except ``genomes``:

- ``objectives``: ``search.objectives``, the order of every record's fitness values;
- ``format`` (int), ``gen`` (last completed generation, -1 before gen 0),
  ``counter`` (the uid counter: the next individual gets uid ``GG-<counter>``),
  ``elapsed_s`` (search wall time so far, seconds), ``seed`` (search.seed);
- ``numpy_rng``: ``search.rng.bit_generator.state`` (a dict of ints);
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

Plain data, no torch import (as ``nsga``).
"""

from __future__ import annotations

import math
import random

from evo_snn.atomic import to_jsonable
from evo_snn.evaluation.individual import Individual
from evo_snn.front import OBJECTIVES
from evo_snn.structure.genome import Genome

STATE_FORMAT = 1  # version of the dict returned by StructureSearch.state_dict()


def state_of(search) -> dict:
    """The whole state of ``search`` after generation ``search.gen``, as data (the entries
    in the module docstring)."""
    genomes: dict[str, Genome] = {}
    for ind in list(search.population) + list(search.archive):
        genomes.setdefault(ind.genome.key, ind.genome)
    return {
        "format": STATE_FORMAT,
        "objectives": list(search.objectives),
        "gen": search.gen,
        "counter": search._counter,
        "elapsed_s": float(search.elapsed_s),
        "seed": search.search.seed,
        "numpy_rng": to_jsonable(search.rng.bit_generator.state),
        "python_random": to_jsonable(random.getstate()),
        "population": [_record(ind) for ind in search.population],
        "archive": [_record(ind) for ind in search.archive],
        "genomes": genomes,
        "results": dict(search.results),
        **({"laws": {k: [law, s, list(p) if isinstance(p, tuple) else p]
                     for k, (law, s, p) in search.ops.params.items() if k in genomes}}
           if any(k in genomes for k in search.ops.params) else {}),
        **({} if search.screener is None else {"screen": {
            "forward_samples": int(search.screen_forward_samples), "compute_samples": float(search.screen_compute_samples),
            "evals": int(search.screen_evals), "forward_cost_ratio": float(search.screener.forward_cost_ratio)}}),
    }


def restore(search, state: dict) -> None:
    """Put ``state`` (a ``state_of``, after a JSON round trip of its JSON-able part) into
    ``search``, the global ``random`` state included. The students of ``state['results']``
    must be in ``search.store``. Raises ValueError when the state does not fit the search
    (format, objectives, seed, population size, genome layers, a missing genome or student)."""
    check_fits(search, state)
    genomes = state["genomes"]
    search.population = [_individual(search, r, genomes) for r in state["population"]]
    items = [_individual(search, r, genomes) for r in state["archive"]]
    search.archive.clear()
    # HallOfFame invariant: keys ascending by fitness, items descending, keys[i] is items[-1 - i].fitness
    search.archive.items[:] = items
    search.archive.keys[:] = [ind.fitness for ind in reversed(items)]
    search.results = dict(state["results"])
    search.gen = int(state["gen"])
    search._counter = int(state["counter"])
    search.elapsed_s = float(state["elapsed_s"])
    search.rng.bit_generator.state = state["numpy_rng"]
    screen = state.get("screen") or {}
    search.screen_forward_samples = int(screen.get("forward_samples", 0))
    search.screen_compute_samples = float(screen.get("compute_samples", 0.0))
    search.screen_evals = int(screen.get("evals", 0))
    for key, (law, sp, p) in (state.get("laws") or {}).items():  # smooth genomes: their density-law parameters
        search.ops.params[key] = (str(law), float(sp), tuple(float(v) for v in p) if isinstance(p, list) else float(p))
    version, internal, gauss = state["python_random"]
    random.setstate((version, tuple(internal), gauss))


def check_fits(search, state: dict) -> None:
    """Raises ValueError (changing nothing) when ``state`` does not fit ``search``: another
    format, objectives, seed or population size, a genome over other layers than the
    model's prunable ones, or an evaluated genome whose student ``search.store`` lacks."""
    if state.get("format") != STATE_FORMAT:
        raise ValueError(f"search state format {state.get('format')!r}, expected {STATE_FORMAT}")
    if list(state.get("objectives", OBJECTIVES)) != list(search.objectives):
        raise ValueError(f"search state has objectives {list(state.get('objectives', OBJECTIVES))}, "
                         f"the config has search.objectives={list(search.objectives)}")
    if state["seed"] != search.search.seed:
        raise ValueError(f"search state has seed {state['seed']}, the config has search.seed={search.search.seed}")
    if state["gen"] >= 0 and len(state["population"]) != search.search.population:
        raise ValueError(f"search state has a population of {len(state['population'])}, "
                         f"the config has search.population={search.search.population}")
    for key, g in state["genomes"].items():
        if tuple(g.layers) != tuple(search.ops.layers):
            raise ValueError(f"genome {key} has layers {list(g.layers)}, the model's prunable layers are {list(search.ops.layers)}")
    missing = [key for key in state["results"] if key not in search.store]
    if missing:
        raise ValueError(f"the student store lacks the students of {len(missing)} evaluated genome(s), e.g. {missing[0]}")


def _individual(search, rec: dict, genomes: dict[str, Genome]) -> Individual:
    """The ``Individual`` of a state record (``_record``), its genome from ``genomes`` with
    the record's own ratios; raises ValueError when ``genomes`` lacks it."""
    if rec["genome_key"] not in genomes:
        raise ValueError(f"search state lacks genome {rec['genome_key']} of {rec['uid']}")
    g = genomes[rec["genome_key"]]
    ind = Individual(Genome(g.layers, tuple(float(r) for r in rec["ratios"]), g.masks), uid=rec["uid"],
                     gen=int(rec["gen"]), parents=tuple(rec["parents"]), metrics=dict(rec["metrics"]),
                     status=rec["status"], seed=int(rec["seed"]), fitness=search.fitness_cls())
    if rec["fitness"] is not None:
        ind.fitness.values = tuple(float(v) for v in rec["fitness"])
    if rec.get("crowding_dist") is not None:
        ind.fitness.crowding_dist = float(rec["crowding_dist"])
    return ind


def _record(ind: Individual) -> dict:
    """The state record of ``ind`` (the fields in the module docstring)."""
    cd = getattr(ind.fitness, "crowding_dist", None)
    return {"uid": ind.uid, "gen": ind.gen, "parents": list(ind.parents), "seed": int(ind.seed), "status": ind.status,
            "metrics": to_jsonable(ind.metrics), "fitness": list(ind.fitness.values) if ind.fitness.valid else None,
            "crowding_dist": None if cd is None else ("inf" if math.isinf(cd) else float(cd)),
            "genome_key": ind.genome.key, "ratios": [float(r) for r in ind.genome.ratios]}
