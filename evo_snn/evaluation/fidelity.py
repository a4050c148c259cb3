"""Multi-fidelity evaluation: successive halving inside one generation (issue 9, section 2).

With ``search.fidelity_fraction`` b < 1 a generation's offspring are first trained for
b x ``kd.epochs`` (rung 0) and ranked among themselves only (DEAP non-dominated sorting
+ crowding, ``StructureSearch.promote``). The best ``ceil(search.promote_fraction x n)``
then continue **from their rung-0 student** for the remaining (1 - b) x ``kd.epochs``
(rung 1), so that a promoted genome costs b x S + (1 - b) x S = S training samples, S
being a plain evaluation's. Only full-fidelity (rung-1, or cached) results enter
survival, the archive, pareto.csv and the export; a rung-0 result is never ranked
against a full one.

This module holds the data that travels with a job and the names the rest of the
package shares, nothing that trains: torch-free, like ``nsga``.

Seeds. Rung 0 uses the individual's seed (``nsga.eval_seed(root seed, generation, uid
counter)``, the seed a single-fidelity search gives it); the continuation uses
``rung_seed(seed, 1)``, a fresh batch order and augmentation stream derived from it
(``SeedSequence([seed, rung])``), so both are fixed by (root seed, generation, uid).

Students. A rung-0 student lives in the ``StudentStore`` under ``student_key(genome
key, fidelity)`` = ``<genome key>.rung0``, never under the genome key itself, which
holds the genome's full-fidelity student only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FULL = 1.0  # the fidelity of a full evaluation: kd.epochs of KD training


@dataclass(frozen=True)
class Rung:
    """The budget of one evaluation of a multi-fidelity search, as fractions of ``kd.epochs``.

    index: 0 (the screening of every offspring) or 1 (the continuation of a promoted one).
    start: fraction the student had been trained for before (0 at rung 0; b at rung 1,
      where the job's init_state is the genome's own rung-0 student, loaded as it is).
    stop: fraction it has been trained for afterwards, its ``fidelity`` (b at rung 0, 1 at rung 1).
    """

    index: int
    start: float
    stop: float

    @property
    def fidelity(self) -> float:
        return self.stop

    @property
    def spent(self) -> float:
        """Fraction of ``kd.epochs`` this evaluation trains: stop - start."""
        return self.stop - self.start

    @property
    def continues(self) -> bool:
        """True when the job's init_state is this genome's own student at ``start``."""
        return self.start > 0

    def metrics(self) -> dict:
        """The fields a multi-fidelity search adds to the evaluation's metrics (and to its
        evaluations.jsonl row): ``fidelity`` (stop), ``rung`` (index), ``fidelity_spent``
        (stop - start, the fraction of kd.epochs this evaluation trained)."""
        return {"fidelity": float(self.stop), "rung": int(self.index), "fidelity_spent": float(self.spent)}


FULL_RUNG = Rung(1, 0.0, FULL)
"""A full evaluation from scratch in a multi-fidelity search: generation 0 (whose
individuals form the first population) and hits of the full-fidelity cache."""


def rungs(fraction: float) -> tuple[Rung, Rung]:
    """(rung 0, rung 1) of a search with ``search.fidelity_fraction`` = ``fraction`` in (0, 1)."""
    return Rung(0, 0.0, float(fraction)), Rung(1, float(fraction), FULL)


def enabled(search) -> bool:
    """Whether a ``SearchConfig`` asks for rungs: ``fidelity_fraction`` set and below 1."""
    b = getattr(search, "fidelity_fraction", None)
    return b is not None and float(b) < FULL


def rung_seed(seed: int, rung: int) -> int:
    """The seed of an individual's evaluation at ``rung``: its own ``seed`` at rung 0, else
    ``SeedSequence([seed, rung])``'s first word (deterministic, distinct from ``seed``)."""
    if rung == 0:
        return int(seed)
    return int(np.random.SeedSequence([int(seed), int(rung)]).generate_state(1)[0])


def student_key(genome_key: str, fidelity: float | None = None, rung: int | None = 0) -> str:
    """The ``StudentStore`` key of a genome's student at ``fidelity``: the genome key for a
    full-fidelity student (``fidelity`` None or 1), ``<genome key>.rung<rung>`` below."""
    if fidelity is None or float(fidelity) >= FULL:
        return genome_key
    return f"{genome_key}.rung{int(rung or 0)}"


def row_student_key(genome_key: str, metrics: dict) -> str:
    """``student_key`` of an evaluation from its metrics (an evaluations.jsonl row):
    rows without ``fidelity`` are full-fidelity."""
    return student_key(genome_key, metrics.get("fidelity"), metrics.get("rung"))


def is_full(metrics: dict) -> bool:
    """Whether an evaluation's metrics (an evaluations.jsonl row) are of full fidelity
    (rows of a single-fidelity search carry no ``fidelity``)."""
    f = metrics.get("fidelity")
    return f is None or float(f) >= FULL


def full_rows(evaluations):
    """The full-fidelity rows of an evaluations table (a pandas DataFrame of
    evaluations.jsonl rows): a multi-fidelity search's rung-0 scores (``fidelity`` < 1) are
    not comparable with the others; without a ``fidelity`` column (a single-fidelity
    search) every row stays. The table form of ``is_full``."""
    if "fidelity" not in evaluations:
        return evaluations
    return evaluations[evaluations["fidelity"].isna() | (evaluations["fidelity"] >= FULL)]
