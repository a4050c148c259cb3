"""The baseline methods of ``evo_snn.analysis.baselines``: their names, seed streams and genomes,
and ``Member``, one evaluated point of a method.

``baseline_genomes`` builds a method's (genome, ratio) pairs from the teacher's |W|
(``GenomeOps``) and, for ``energy_aware``, the teacher's dense SynOps per weight; no
training or data here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from evo_snn.structure.genome import Genome, GenomeOps, allocation_genome

ALLOCATIONS = ("lamp", "erk", "energy_aware")
"""Baselines of ``evo_snn.structure.allocation`` rules (each with a ``<method>_long`` twin at equal compute)."""
LONG = ("global_long",) + tuple(f"{a}_long" for a in ALLOCATIONS)
"""The methods trained with the search's training samples shared among their ratios."""
METHODS = ("uniform", "global", "random", "global_long", "global_matched") + tuple(
    m for a in ALLOCATIONS for m in (a, f"{a}_long"))
DEFAULT_METHODS = METHODS[:4]  # global_matched is meant with --final-epochs (a paired mask comparison)
DEFAULT_RATIOS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
ENERGY_KEY = "energy_fraction"
"""The fitness metric of the energy front (``EnergyReport.energy_fraction``; the search's ``energy`` objective)."""
# seed streams: eval_seed(root seed, stream, index); far above any generation number,
# so no baseline evaluation replays a search evaluation's seed
STREAMS = {"uniform": 1_000_001, "global": 1_000_002, "random": 1_000_003, "global_long": 1_000_004,
           "global_matched": 1_000_005}
# the allocation baselines take global's (and global_long's) seeds: at each ratio the same seed,
# hence the same batch order, as global, so that they differ from it in the allocation only
STREAMS.update({a: STREAMS["global"] for a in ALLOCATIONS})
STREAMS.update({f"{a}_long": STREAMS["global_long"] for a in ALLOCATIONS})
FINETUNED = "search_finetuned"
"""The search's validation-chosen members fine-tuned once with the ``_long`` recipe (finetune_share > 0)."""


@dataclass
class Member:
    """One evaluated point of a method. ``metrics``: the fitness metrics on validation;
    ``student_state``: the trained student (None after a failed evaluation)."""

    method: str
    uid: str
    genome: Genome
    seed: int
    metrics: dict
    student_state: dict | None
    ratio: float | None = None
    selected: bool = False
    test: dict = field(default_factory=dict)
    partner: str | None = None  # global_matched: the uid of the search member it is paired with
    selected_energy: bool = False  # on the method's validation front in (accuracy, energy fraction)

    @property
    def ok(self) -> bool:
        return self.student_state is not None


def allocation_of(method: str) -> str | None:
    """The ``evo_snn.structure.allocation`` rule of a baseline method (``lamp_long`` -> ``lamp``), or None."""
    base = method[: -len("_long")] if method.endswith("_long") else method
    return base if base in ALLOCATIONS else None


def baseline_genomes(method: str, ops: GenomeOps, ratios, n_random: int, rng: np.random.Generator,
                     synops_per_weight: dict[str, float] | None = None) -> list[tuple[Genome, float | None]]:
    """(genome, ratio) pairs of one baseline method; raises ValueError for an unknown method,
    or for ``energy_aware``(``_long``) without ``synops_per_weight`` ({layer: dense SynOps per
    weight per sample of the teacher}, ``energy.synops_per_weight``).
    ``global_matched`` takes as ``ratios`` the sparsities of the search members it pairs with;
    the allocation methods take them as sparsities (exactly round(r * N) weights pruned)."""
    if method == "uniform":
        return [(ops.uniform_magnitude(r), r) for r in ratios]
    if method in ("global", "global_long", "global_matched"):
        return [(ops.global_magnitude(r), r) for r in ratios]
    rule = allocation_of(method)
    if rule is not None:
        if rule == "energy_aware" and synops_per_weight is None:
            raise ValueError(f"{method} needs the teacher's synops_per_weight")
        kw = ({"synops_per_weight": synops_per_weight, "max_ratio": max(ops.cfg.ratio_max, max(ratios, default=0.0))}
              if rule == "energy_aware" else {})  # capped: uncapped, it empties the early layers (RESULTS.md)
        return [(allocation_genome(rule, ops.abs, r, **kw), r) for r in ratios]
    if method == "random":
        return [(ops.random(rng), None) for _ in range(n_random)]
    raise ValueError(f"unknown baseline method {method!r}; known: {list(METHODS)}")


def member_of(method: str, i: int, genome: Genome, seed: int, res, ratio: float | None = None,
              partner: str | None = None) -> Member:
    """The ``i``-th member (uid ``<method>-<iiii>``) of one fitness result ``res``: a
    ``FitnessResult``, or the Exception of a failed evaluation (then ``metrics`` holds only
    its ``error`` and ``student_state`` is None)."""
    uid = f"{method}-{i:04d}"
    if isinstance(res, Exception):
        return Member(method, uid, genome, seed, {"error": f"{type(res).__name__}: {res}"}, None, ratio, partner=partner)
    return Member(method, uid, genome, seed, dict(res.metrics), res.student_state, ratio, partner=partner)
