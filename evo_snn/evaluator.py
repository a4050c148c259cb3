"""Evaluators: the one seam for parallelism, mapping a function as DEAP's ``toolbox.map``.

``SerialEvaluator`` and ``RayEvaluator`` are interchangeable: ``map(fn, jobs)`` applies
``fn(*job)`` to every job and yields ``(index, result | Exception)`` as results arrive
(the Ray evaluator in completion order; the caller orders them by index). For the
search a job is ``(genome, seed)`` or ``(genome, seed, init_state)`` (a parent's
student to start from, weight inheritance) and ``fn`` returns a ``FitnessResult``. An
evaluation that raises is reported, not fatal, so one bad genome cannot end a long
search. ``fn`` may be any picklable callable: tests pass a plain function.

The fitness of a run is heavy (a teacher, the data set): ``genome_fitness(ctx)`` wraps
``partial(GenomeFitness, ctx)`` in ``PerWorker``, which builds the callable from the
factory once per process, in the process that uses it; pickling ships the factory,
never the built object. Before its first job an evaluator calls ``fn.build()`` where
``fn`` has one, so a fitness that cannot be built (a bad config) stops the run instead
of failing every evaluation.

Ray actors are created once per evaluator; each receives every new ``fn`` once
(through the object store) and keeps it, so each holds the data set and the teacher
once; an actor asks for a GPU (or a fraction of one) when CUDA is present. Locally,
memory-mapped frame sets travel as a path to the cache file (one copy in the page
cache); with ``address`` (a cluster) ``genome_fitness`` ships the frames themselves.

No torch import at module level: ``nsga`` imports ``SerialEvaluator`` as its default.
"""

from __future__ import annotations

from dataclasses import replace
from functools import partial
from typing import Callable, Iterable, Iterator

Job = tuple  # (Genome, seed) or (Genome, seed, init_state: state_dict | None)


def _build(fn) -> None:
    build = getattr(fn, "build", None)
    if callable(build):
        build()


class PerWorker:
    """A callable built from ``factory()`` on first use, once per process.

    ``PerWorker(partial(GenomeFitness, ctx))(genome, seed)`` builds ``GenomeFitness(ctx)``
    on the first call (or on ``build()``) and calls it; pickled (to a Ray actor), only
    the factory travels, and the receiving process builds its own.
    """

    def __init__(self, factory: Callable[[], Callable]):
        self.factory = factory
        self._fn = None

    def build(self) -> Callable:
        """The built callable (built now on the first call; errors of ``factory`` propagate)."""
        if self._fn is None:
            self._fn = self.factory()
        return self._fn

    def __call__(self, *job):
        return self.build()(*job)

    def __getstate__(self):
        return {"factory": self.factory}

    def __setstate__(self, state):
        self.factory, self._fn = state["factory"], None


def genome_fitness(ctx, address: str | None = None) -> PerWorker:
    """The fitness function of a run for ``map``: ``GenomeFitness(ctx)`` built once per worker.

    ctx: a ``FitnessContext``; address: a Ray cluster address, whose nodes need not see
    this machine's frame cache, so the frames are shipped in memory.
    """
    from .fitness import GenomeFitness

    if address:
        ctx = replace(ctx, train=ctx.train.in_memory(), val=ctx.val.in_memory())
    return PerWorker(partial(GenomeFitness, ctx))


class SerialEvaluator:
    """Evaluates in this process, in order (used with ``--workers 1`` and in tests)."""

    workers = 1

    def map(self, fn: Callable, jobs: Iterable[Job]) -> Iterator[tuple[int, object]]:
        jobs = list(jobs)
        if jobs:
            _build(fn)
        for i, job in enumerate(jobs):
            try:
                yield i, fn(*job)
            except Exception as e:  # reported per evaluation by the caller
                yield i, e

    def close(self) -> None:
        pass


class RayEvaluator:
    """Evaluates on ``workers`` Ray actors (one CPU and one torch thread each).

    address: None starts a local Ray bound to loopback with ``num_cpus=workers``;
    otherwise an existing cluster (``ray.init(address=...)``, e.g. 'auto' or
    'ray://host:10001'). gpus_per_worker: None = 1/workers of one GPU when the
    driver sees CUDA, else 0. ``fn`` must be picklable; it is sent to every actor once
    (when it differs from the last one) and built there (``build()``) before any job
    runs, so an error building it raises here.
    """

    def __init__(self, workers: int, address: str | None = None, gpus_per_worker: float | None = None):
        import ray
        import torch
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
        actor_cls = ray.remote(_Actor)
        self.actors = [actor_cls.options(num_cpus=1, num_gpus=gpus_per_worker).remote(1) for _ in range(workers)]
        self.pool = ActorPool(self.actors)
        self.workers = workers
        self._fn = None  # the function the actors hold

    def map(self, fn: Callable, jobs: Iterable[Job]) -> Iterator[tuple[int, object]]:
        indexed = list(enumerate(jobs))
        if not indexed:
            return
        if fn is not self._fn:
            ref = self._ray.put(fn)
            self._ray.get([a.load.remote(ref) for a in self.actors])
            self._fn = fn
        yield from self.pool.map_unordered(lambda actor, item: actor.evaluate.remote(item[0], *item[1]), indexed)

    def close(self) -> None:
        for a in self.actors:
            self._ray.kill(a)
        self.actors = []
        self._fn = None
        if self._owns_ray:
            self._ray.shutdown()


class _Actor:
    """Ray actor body: holds one function (one teacher and one copy of the data per worker)."""

    def __init__(self, num_threads: int = 1):
        import torch

        # threads = the actor's CPU share, never an inherited OMP_NUM_THREADS: two actors
        # with 2 threads each on 2 cores oversubscribe them and run tiny nets ~17x slower
        # (measured here: 153 s instead of ~9 s for one N-MNIST generation)
        torch.set_num_threads(num_threads)
        self.fn = None

    def load(self, fn: Callable) -> None:
        self.fn = fn
        _build(fn)

    def evaluate(self, index: int, *job):
        try:
            return index, self.fn(*job)
        except Exception as e:
            return index, e


def make_evaluator(workers: int, address: str | None = None):
    """Serial evaluator for one local worker, Ray otherwise (always Ray with ``address``)."""
    if workers <= 1 and not address:
        return SerialEvaluator()
    return RayEvaluator(workers, address)
