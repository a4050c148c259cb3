"""Fault injection: make a run's evaluations fail on purpose, to check that a run (or a
Ray cluster) survives worker faults before a long run is started on it.

Configured by the ``faults`` section (``evo_snn.config.FaultsConfig``), e.g.
``--set faults.fail_rate=0.2 --set faults.kinds=[raise,exit,hang] --set search.eval_timeout_s=60``.
The evaluator (``evo_snn.evaluation.evaluator``) decides before every attempt of an evaluation
whether it gets a fault (``planned_fault``) and the worker then runs ``inject`` before
the fitness:

- ``raise``: the attempt raises ``InjectedFault`` (as a fitness that raises);
- ``exit``: the worker process ends at once with ``os._exit`` (as a worker killed by
  the OOM killer or a lost node); the evaluator replaces the Ray actor;
- ``hang``: the worker sleeps until ``search.eval_timeout_s`` ends the attempt; the
  evaluator kills and replaces the actor.

Every fault, injected or real, is retried (``search.max_retries``) with the same
(genome, seed) and recorded in the evaluation's row of evaluations.jsonl (``attempts``,
``faults``), so a run with faults gives the same front as one without, as long as every
evaluation succeeds within its retries.

Pure Python (no torch): the evaluator imports it.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import numpy as np

from evo_snn.config import FAULT_KINDS, FaultsConfig

__all__ = ["FAULT_KINDS", "InjectedFault", "planned_fault", "inject", "probe", "Probe"]


class InjectedFault(RuntimeError):
    """The error of an injected 'raise' fault (``faults.kinds``)."""


def planned_fault(faults: FaultsConfig | None, token: int, attempt: int) -> str | None:
    """The fault that attempt ``attempt`` (1, 2, ...) of the evaluation ``token`` (its
    seed) gets: one of ``faults.kinds``, or None (no fault). Deterministic: drawn from
    ``SeedSequence([faults.seed, token, attempt])``, with probability ``faults.fail_rate``."""
    if faults is None or faults.fail_rate <= 0:
        return None
    u, v = np.random.default_rng(np.random.SeedSequence([faults.seed, int(token) % 2**63, attempt])).random(2)
    if u >= faults.fail_rate:
        return None
    return faults.kinds[min(int(v * len(faults.kinds)), len(faults.kinds) - 1)]


def inject(kind: str | None) -> None:
    """Run the fault ``kind`` in this (worker) process: 'raise' raises ``InjectedFault``,
    'exit' ends the process (exit status 70), 'hang' sleeps for ever; None does nothing.
    raises ValueError for an unknown kind."""
    if kind is None:
        return
    if kind == "raise":
        raise InjectedFault("injected fault 'raise' (faults.fail_rate)")
    if kind == "exit":
        os._exit(70)
    if kind == "hang":
        while True:  # ended by the evaluator's timeout, which kills this process
            time.sleep(3600)
    raise ValueError(f"unknown fault kind {kind!r}; known: {list(FAULT_KINDS)}")


@dataclass
class Probe:
    """Result of ``probe``: ``metrics`` as a fitness result has them."""

    metrics: dict = field(default_factory=dict)


def probe(value, seed: int = 0, sleep_s: float = 0.0) -> Probe:
    """A stand-in fitness for checking an evaluator or a cluster, called as a fitness is
    (``probe(value, seed)``; ``seed`` keys the injected faults): sleeps ``sleep_s`` seconds
    and returns ``Probe({"value": value, "seed": seed, "pid": <worker pid>})``."""
    if sleep_s > 0:
        time.sleep(sleep_s)
    return Probe({"value": value, "seed": seed, "pid": os.getpid()})
