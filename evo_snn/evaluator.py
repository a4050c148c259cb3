"""Evaluators: the one seam for parallelism (DEAP's ``toolbox.map``).

``SerialEvaluator`` and ``RayEvaluator`` are interchangeable: ``map(jobs)`` takes
``[(genome, seed), ...]`` (or ``(genome, seed, init_state)``: a parent's student to
start from, weight inheritance) and yields ``(index, FitnessResult | Exception)`` as
results arrive; the caller orders them by index. An evaluation that raises is
reported, not fatal, so one bad genome cannot end a long search.

Ray actors are created once per run; each holds the data set and the teacher once
and asks for a GPU (or a fraction of one) when CUDA is present. Locally, memory-mapped
frame sets travel as a path to the cache file (one copy in the page cache); with
``address`` (a cluster) the frames themselves are shipped.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Iterator

import torch

from .fitness import FitnessContext, FitnessResult, GenomeFitness
from .genome import Genome

Job = tuple  # (Genome, seed) or (Genome, seed, init_state: state_dict | None)


class SerialEvaluator:
    """Evaluates in this process, in order (used with ``--workers 1`` and in tests)."""

    workers = 1

    def __init__(self, ctx: FitnessContext):
        self.fitness = GenomeFitness(ctx)

    def map(self, jobs: list[Job]) -> Iterator[tuple[int, FitnessResult | Exception]]:
        for i, job in enumerate(jobs):
            try:
                yield i, self.fitness(*job)
            except Exception as e:  # reported per evaluation by the caller
                yield i, e

    def close(self) -> None:
        pass


class RayEvaluator:
    """Evaluates on ``workers`` Ray actors.

    address: None starts a local Ray bound to loopback with ``num_cpus=workers``;
    otherwise an existing cluster (``ray.init(address=...)``, e.g. 'auto' or
    'ray://host:10001'). gpus_per_worker: None = 1/workers of one GPU when the
    driver sees CUDA, else 0.
    """

    def __init__(self, ctx: FitnessContext, workers: int, address: str | None = None, gpus_per_worker: float | None = None):
        import ray
        from ray.util import ActorPool

        self._ray = ray
        self._owns_ray = False
        if not ray.is_initialized():
            if address:
                ray.init(address=address, log_to_driver=False)
            else:
                ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
            self._owns_ray = True
        if gpus_per_worker is None:
            gpus_per_worker = (1.0 / workers if workers > 1 else 1.0) if torch.cuda.is_available() else 0.0
        if address:  # nodes of a cluster need not see this machine's frame cache: ship the frames
            ctx = replace(ctx, train=ctx.train.in_memory(), val=ctx.val.in_memory())
        ctx_ref = ray.put(ctx)
        actor_cls = ray.remote(_FitnessActor)
        self.actors = [actor_cls.options(num_cpus=1, num_gpus=gpus_per_worker).remote(ctx_ref, 1) for _ in range(workers)]
        self.pool = ActorPool(self.actors)
        self.workers = workers

    def map(self, jobs: list[Job]) -> Iterator[tuple[int, FitnessResult | Exception]]:
        indexed = list(enumerate(jobs))
        yield from self.pool.map_unordered(lambda actor, item: actor.evaluate.remote(item[0], *item[1]), indexed)

    def close(self) -> None:
        for a in self.actors:
            self._ray.kill(a)
        self.actors = []
        if self._owns_ray:
            self._ray.shutdown()


class _FitnessActor:
    """Ray actor body: one teacher and one copy of the data per worker."""

    def __init__(self, ctx: FitnessContext, num_threads: int = 1):
        # threads = the actor's CPU share, never an inherited OMP_NUM_THREADS: two actors
        # with 2 threads each on 2 cores oversubscribe them and run tiny nets ~17x slower
        # (measured here: 153 s instead of ~9 s for one N-MNIST generation)
        torch.set_num_threads(num_threads)
        self.fitness = GenomeFitness(ctx)

    def evaluate(self, index: int, genome: Genome, seed: int, init_state: dict | None = None):
        try:
            return index, self.fitness(genome, seed, init_state)
        except Exception as e:
            return index, e


def make_evaluator(ctx: FitnessContext, workers: int, address: str | None = None):
    """Serial evaluator for one local worker, Ray otherwise (always Ray with ``address``)."""
    if workers <= 1 and not address:
        return SerialEvaluator(ctx)
    return RayEvaluator(ctx, workers, address)
