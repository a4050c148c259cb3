"""Evaluators: the one seam for parallelism, mapping a function as DEAP's ``toolbox.map``.

``SerialEvaluator`` and ``RayEvaluator`` are interchangeable: ``map(fn, jobs)`` applies
``fn(*job)`` to every job and yields ``(index, result | Exception)`` as results arrive
(the Ray evaluator in completion order; the caller orders them by index). For the
search a job is ``(genome, seed)`` or ``(genome, seed, init_state)`` (a parent's
student to start from, weight inheritance) and ``fn`` returns a ``FitnessResult``.
``fn`` may be any picklable callable: tests pass a plain function.

Faults. An attempt of a job fails when ``fn`` raises, when its Ray worker dies (the
actor is replaced by a fresh one), when it outlives ``eval_timeout_s`` (the actor is
killed and replaced), or, with a CUDA error, whose actor is replaced too (a CUDA
context cannot be trusted after one). A failed attempt is run again with the same job,
so the same (genome, seed), on whichever actor is free, up to ``max_retries`` times.
A result that needed more than one attempt carries ``metrics['attempts']`` and
``metrics['faults']`` (one ``{attempt, kind, error}`` per failed attempt); a job that
failed every attempt is yielded as its last exception with the attributes
``attempts`` and ``faults`` (``failure_metrics`` turns it into the metrics of a failed
evaluation). No fault stops the map. ``faults`` (``FaultsConfig``) injects faults on
purpose (``evo_snn.evaluation.faults``).

The fitness of a run is heavy (a teacher, the data set): ``genome_fitness(ctx)`` wraps
``partial(GenomeFitness, ctx)`` in ``PerWorker`` (``evo_snn.evaluation.workers``), which builds the
callable from the factory once per process, in the process that uses it; pickling ships
the factory, never the built object. Before its first job an evaluator calls ``fn.build()`` where
``fn`` has one, so a fitness that cannot be built (a bad config) stops the run instead
of failing every evaluation.

Ray actors are created once per evaluator (and again only to replace a dead one); each
receives every new ``fn`` once (through the object store) and keeps it, so each holds
the data set and the teacher once. GPUs come from the cluster, not from the driver:
the per-actor GPU share is computed from ``ray.cluster_resources()`` (``gpu_share``),
an actor picks its device from ``ray.get_gpu_ids()`` and passes it to the factory, and
its torch threads equal its CPU share. Locally, memory-mapped frame sets travel as a
path to the cache file (one copy in the page cache); with ``address`` (a cluster)
``genome_fitness`` ships the frames themselves.

A local Ray (no ``address``) is started by ``init_local_ray``: a new instance of its
own (``address='local'``, never one that happens to run on the machine) whose
processes listen on 127.0.0.1 only, with Ray's token authentication on.

Where it lives: this module holds ``genome_fitness``, ``SerialEvaluator`` and
``make_evaluator``; ``evo_snn.evaluation.attempts`` the attempts and faults of a job
(``failure_metrics``); ``evo_snn.evaluation.ray_evaluator`` the ``RayEvaluator`` and its
actors; ``evo_snn.evaluation.ray_setup`` starting a local Ray; ``evo_snn.evaluation.replay``
the ``ReplayEvaluator`` of a resumed run. Their public names are importable from here too.

No torch import at module level: ``nsga`` imports ``SerialEvaluator`` as its default.
"""

from __future__ import annotations

from dataclasses import replace
from functools import partial
from typing import Callable, Iterable, Iterator

from evo_snn.evaluation.attempts import Job, Task, check_faults, failed, is_cuda_error, succeeded
from evo_snn.evaluation.faults import inject, planned_fault
from evo_snn.evaluation.ray_evaluator import RayEvaluator
from evo_snn.evaluation.workers import PerWorker, build
from evo_snn.threads import cpu_share

# Re-exported: the names code outside imports from evo_snn.evaluation.evaluator, as before the split.
from evo_snn.evaluation.attempts import EvaluationTimeout, WorkerDied, failure_metrics  # noqa: F401  (re-exported)
from evo_snn.evaluation.ray_setup import gpu_share, init_local_ray, ray_auth_mode  # noqa: F401  (re-exported)
from evo_snn.evaluation.replay import RECOVERED_OWNER, ReplayEvaluator  # noqa: F401  (re-exported)


def genome_fitness(ctx, address: str | None = None) -> PerWorker:
    """The fitness function of a run for ``map``: ``GenomeFitness(ctx)`` built once per worker.

    ctx: a ``FitnessContext``; address: a Ray cluster address, whose nodes need not see
    this machine's frame cache, so the frames are shipped in memory.
    """
    from evo_snn.evaluation.fitness import GenomeFitness

    if address:
        ctx = replace(ctx, train=ctx.train.in_memory(), val=ctx.val.in_memory())
    return PerWorker(partial(GenomeFitness, ctx))


class SerialEvaluator:
    """Evaluates in this process, in order (used with ``--workers 1`` and in tests).

    max_retries: attempts after the first for a job that raises (same job, at once);
    faults: a ``FaultsConfig`` whose kinds are ['raise'] only (an 'exit' or a 'hang'
    would hit this process; raises ValueError). No timeout: this process cannot
    interrupt itself.
    """

    workers = 1
    max_retries = 2  # class defaults: a subclass that skips __init__ behaves as the default
    faults = None

    def __init__(self, max_retries: int = 2, faults=None):
        check_faults(faults, ray_workers=False)
        self.max_retries, self.faults = max_retries, faults

    def map(self, fn: Callable, jobs: Iterable[Job]) -> Iterator[tuple[int, object]]:
        jobs = list(jobs)
        if jobs:
            build(fn)
        for i, job in enumerate(jobs):
            task = Task(i, job)
            while True:
                task.attempt += 1
                planned = planned_fault(self.faults, task.token, task.attempt)
                try:
                    inject(planned)
                    result = fn(*job)
                except Exception as e:  # reported per evaluation by the caller
                    task.fault("cuda" if is_cuda_error(e) else "raise", e, planned)
                    if task.attempt > self.max_retries:
                        yield i, failed(e, task)
                        break
                    continue
                yield i, succeeded(result, task)
                break

    def describe(self) -> dict:
        """What manifest.json records about the evaluator (see ``RayEvaluator.describe``)."""
        return {"kind": "serial", "workers": 1, "max_retries": self.max_retries}

    def close(self) -> None:
        pass


def make_evaluator(workers: int, address: str | None = None, *, max_retries: int = 2, eval_timeout_s: float = 0.0,
                   faults=None, threads: int | None = None):
    """Serial evaluator for one local worker, Ray otherwise (always Ray with ``address``);
    max_retries, eval_timeout_s, faults: see ``RayEvaluator`` (the serial one has no timeout).
    threads: torch threads per Ray worker, fixed (``train.threads``); None = fitted by each
    worker (``evo_snn.threads``) within its CPU share: the usable CPUs // workers for a local
    Ray, 1 CPU on a cluster (``--address``)."""
    if workers <= 1 and not address:
        return SerialEvaluator(max_retries=max_retries, faults=faults)
    cpus = int(threads) if threads is not None else (1 if address else cpu_share(workers))
    return RayEvaluator(workers, address, max_retries=max_retries, eval_timeout_s=eval_timeout_s, faults=faults,
                        cpus_per_worker=cpus, fixed_threads=threads is not None)

