"""One member of a population: a genome, its evaluation seed, status, metrics and DEAP
fitness (``evo_snn.front.Fitness`` or a class of ``fitness_class``).

Plain data (no torch import). The search (``evo_snn.search.nsga``) breeds and ranks
them; the baselines (``evo_snn.analysis.baselines``) build them for one-shot genomes so
that both fronts go through the same front arithmetic (``evo_snn.front``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from evo_snn.evaluation.fidelity import Rung, rung_seed
from evo_snn.front import Fitness
from evo_snn.structure.genome import Genome


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
    init_key: str | None = None  # genome key of the parent whose student it inherits (search.inherit_weights)
    rung: Rung | None = None  # the rung of its latest evaluation (multi-fidelity search); None: single fidelity

    @property
    def evaluation_seed(self) -> int:
        """The seed of its latest evaluation: ``seed``, or at a continuation (rung 1 from its
        rung-0 student) ``fidelity.rung_seed(seed, rung.index)``."""
        if self.rung is None or not self.rung.continues:
            return self.seed
        return rung_seed(self.seed, self.rung.index)


def eval_seed(root_seed: int, gen: int, index: int) -> int:
    """Seed of one evaluation, derived from (root seed, generation, uid counter)."""
    return int(np.random.SeedSequence([root_seed, gen, index]).generate_state(1)[0])


__all__ = ["Individual", "eval_seed"]
