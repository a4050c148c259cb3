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

No torch import at module level: ``nsga`` imports ``SerialEvaluator`` as its default.
"""

from __future__ import annotations

import math
import numbers
import os
import sys
import time
import warnings
from collections import deque
from contextlib import contextmanager
from dataclasses import replace
from functools import partial
from typing import Callable, Iterable, Iterator

from evo_snn.evaluation.faults import inject, planned_fault
from evo_snn.threads import configure, cpu_share, set_torch_threads
from evo_snn.evaluation.workers import PerWorker  # (also re-exported: evo_snn.evaluation.evaluator.PerWorker, as before)

Job = tuple  # (Genome, seed) or (Genome, seed, init_state: state_dict | None)


def _build(fn, device: str | None = None) -> None:
    """``fn.build()`` where ``fn`` has one; a ``PerWorker`` whose factory takes ``device``
    gets ``device`` (a torch device string) when it is given."""
    if isinstance(fn, PerWorker):
        fn.build(device)
        return
    build = getattr(fn, "build", None)
    if callable(build):
        build()


def genome_fitness(ctx, address: str | None = None) -> PerWorker:
    """The fitness function of a run for ``map``: ``GenomeFitness(ctx)`` built once per worker.

    ctx: a ``FitnessContext``; address: a Ray cluster address, whose nodes need not see
    this machine's frame cache, so the frames are shipped in memory.
    """
    from evo_snn.evaluation.fitness import GenomeFitness

    if address:
        ctx = replace(ctx, train=ctx.train.in_memory(), val=ctx.val.in_memory())
    return PerWorker(partial(GenomeFitness, ctx))




# ---------------------------------------------------------------------- faults and retries
class EvaluationTimeout(TimeoutError):
    """An evaluation attempt outlived ``eval_timeout_s`` (its Ray actor was killed)."""


class WorkerDied(RuntimeError):
    """The Ray worker running an evaluation attempt died (e.g. SIGKILL, OOM, a lost node)."""


class _Task:
    """One job and its attempts so far: ``token`` (the job's seed, or its index) keys the
    injected faults; ``faults`` lists ``{attempt, kind, error, injected}`` per failed attempt."""

    __slots__ = ("index", "job", "token", "attempt", "faults")

    def __init__(self, index: int, job: tuple):
        self.index, self.job, self.attempt, self.faults = index, tuple(job), 0, []
        seed = self.job[1] if len(self.job) >= 2 else None
        self.token = int(seed) if isinstance(seed, numbers.Integral) else index

    def fault(self, kind: str, error: BaseException, injected: str | None) -> None:
        self.faults.append({"attempt": self.attempt, "kind": kind, "error": f"{type(error).__name__}: {error}"[:500],
                            "injected": injected})


def _succeeded(result, task: _Task):
    """``result``, with ``attempts`` and ``faults`` added to its ``metrics`` dict (where it
    has one; to each member's for the list a grouped job returns, ``evo_snn.evaluation.grouped``) when
    it needed more than one attempt."""
    if task.faults:
        for r in result if isinstance(result, list) else [result]:
            metrics = getattr(r, "metrics", None)
            if isinstance(metrics, dict):
                metrics["attempts"] = task.attempt
                metrics["faults"] = list(task.faults)
    return result


def _failed(error: Exception, task: _Task) -> Exception:
    """The last error of a job that failed every attempt, carrying ``attempts`` and ``faults``."""
    try:
        error.attempts, error.faults = task.attempt, list(task.faults)
    except AttributeError:  # an exception type that takes no attributes
        wrapped = RuntimeError(f"{type(error).__name__}: {error}")
        wrapped.attempts, wrapped.faults = task.attempt, list(task.faults)
        return wrapped
    return error


def failure_metrics(error: BaseException) -> dict:
    """The metrics of an evaluation that failed every attempt: ``error`` ('Type: message'),
    ``attempts`` (int >= 1) and ``faults`` (one dict per failed attempt; see the module)."""
    return {"error": f"{type(error).__name__}: {error}", "attempts": int(getattr(error, "attempts", 1)),
            "faults": list(getattr(error, "faults", []))}


def is_cuda_error(error: BaseException) -> bool:
    """True for an error raised by CUDA (or cuDNN, cuBLAS, NCCL): its worker is replaced."""
    text = f"{type(error).__name__}: {error}"
    return any(s in text for s in ("CUDA", "cuDNN", "CUBLAS", "cuBLAS", "NCCL", "AcceleratorError"))


def _check_faults(faults, ray_workers: bool) -> None:
    if faults is None or faults.fail_rate <= 0:
        return
    if not ray_workers and set(faults.kinds) - {"raise"}:
        raise ValueError("faults.kinds 'exit' and 'hang' would end or block this process; they need Ray workers "
                         "(search.workers > 1); with one worker use faults.kinds=[raise]")


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
        _check_faults(faults, ray_workers=False)
        self.max_retries, self.faults = max_retries, faults

    def map(self, fn: Callable, jobs: Iterable[Job]) -> Iterator[tuple[int, object]]:
        jobs = list(jobs)
        if jobs:
            _build(fn)
        for i, job in enumerate(jobs):
            task = _Task(i, job)
            while True:
                task.attempt += 1
                planned = planned_fault(self.faults, task.token, task.attempt)
                try:
                    inject(planned)
                    result = fn(*job)
                except Exception as e:  # reported per evaluation by the caller
                    task.fault("cuda" if is_cuda_error(e) else "raise", e, planned)
                    if task.attempt > self.max_retries:
                        yield i, _failed(e, task)
                        break
                    continue
                yield i, _succeeded(result, task)
                break

    def describe(self) -> dict:
        """What manifest.json records about the evaluator (see ``RayEvaluator.describe``)."""
        return {"kind": "serial", "workers": 1, "max_retries": self.max_retries}

    def close(self) -> None:
        pass


# ---------------------------------------------------------------------- Ray
LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


@contextmanager
def _loopback_node_ip():
    """Within the block, Ray keeps ``_node_ip_address='127.0.0.1'`` as the node IP.

    Ray 2.60's ``ray.init`` passes the given node IP through
    ``services.resolve_ip_for_localhost``, which replaces 127.0.0.1 by the machine's
    routable address (``get_node_ip_address``) unless ``ray_constants.ENABLE_RAY_CLUSTER``
    is false; that constant is read from ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER`` when ray is
    imported (true on Linux). With the machine's address as node IP, gcs_server, raylet
    and every worker bind their gRPC servers to all interfaces ('::'); with 127.0.0.1
    they bind to 127.0.0.1 only (measured: tests/test_ray_network.py). The constant is
    set for the block (ray may be imported already) and the variable for the processes
    that ``ray.init`` starts; both are restored after it.
    """
    from ray._private import ray_constants

    had_const = hasattr(ray_constants, "ENABLE_RAY_CLUSTER")
    before_const = getattr(ray_constants, "ENABLE_RAY_CLUSTER", None)
    before_env = os.environ.get(LOOPBACK_ENV)
    os.environ[LOOPBACK_ENV] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        if had_const:
            ray_constants.ENABLE_RAY_CLUSTER = before_const
        if before_env is None:
            os.environ.pop(LOOPBACK_ENV, None)
        else:
            os.environ[LOOPBACK_ENV] = before_env


def init_local_ray(num_cpus: int, **kwargs) -> None:
    """Start a new local Ray instance for this process (``ray.init(address='local')``, so
    never one that some other job started on this machine), without a dashboard, whose
    processes listen on 127.0.0.1 only (``_loopback_node_ip``). Ray enables its token
    authentication by default for a new local instance (``ray_auth_mode()``).

    num_cpus: CPUs declared to Ray; kwargs: more ``ray.init`` arguments (e.g. ``num_gpus``).
    """
    import ray

    opts = dict(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False,
                _node_ip_address="127.0.0.1")
    opts.update(kwargs)
    with _loopback_node_ip():
        ray.init(**opts)


def ray_auth_mode() -> str:
    """Ray's authentication mode in this process after ``ray.init``: 'token' (every RPC
    carries the cluster's token, Ray's default for a new local instance), 'disabled',
    or 'unknown' (a Ray without ``get_authentication_mode``)."""
    try:
        from ray._raylet import AuthenticationMode, get_authentication_mode
    except ImportError:
        return "unknown"
    mode = get_authentication_mode()
    return "token" if mode == AuthenticationMode.TOKEN else str(getattr(mode, "name", mode)).lower()


def gpu_share(cluster_gpus: float, workers: int) -> float:
    """The GPU share of each of ``workers`` actors on a cluster with ``cluster_gpus`` GPUs
    (``ray.cluster_resources()['GPU']``, over all nodes, so a CPU-only head with GPU
    workers counts its workers' GPUs): 1.0 when every actor can have a GPU of its own,
    else 1/k with k = ceil(workers / GPUs) actors per GPU (a share that packs whole into
    a GPU, so no actor waits for a GPU that has too little left); 0.0 without GPUs."""
    gpus = int(cluster_gpus)
    if gpus < 1 or workers < 1:
        return 0.0
    return 1.0 / math.ceil(workers / gpus)


class RayEvaluator:
    """Evaluates on ``workers`` Ray actors, one job per actor at a time.

    address: None starts a local Ray (``init_local_ray``: loopback only, ``num_cpus =
    workers * cpus_per_worker``); otherwise an existing cluster (``ray.init(address=...)``,
    e.g. 'auto' or 'ray://host:10001'). An already initialised Ray is used as it is.
    gpus_per_worker: None = ``gpu_share`` of the cluster's GPUs. cpus_per_worker: CPUs
    reserved per actor, which is also its number of torch threads.
    max_retries, eval_timeout_s (seconds, 0 = none), faults (``FaultsConfig`` or None):
    see the module docstring. ``fn`` must be picklable; it is sent to every actor once
    (when it differs from the last one) and built there (``build()``, with the actor's
    device) before any job runs, so an error building it raises here.

    Attributes: ``actors`` (the live actors), ``replaced`` (actors replaced so far),
    ``auth`` (``ray_auth_mode()``; a warning is issued when it is not 'token').
    """

    def __init__(self, workers: int, address: str | None = None, gpus_per_worker: float | None = None, *,
                 cpus_per_worker: int = 1, max_retries: int = 2, eval_timeout_s: float = 0.0, faults=None,
                 fixed_threads: bool = False):
        import ray

        _check_faults(faults, ray_workers=True)
        self._ray = ray
        self._owns_ray = False
        if not ray.is_initialized():
            if address:
                ray.init(address=address, log_to_driver=False)
            else:
                init_local_ray(num_cpus=workers * cpus_per_worker)
            self._owns_ray = True
        self.auth = ray_auth_mode()
        if self.auth != "token":
            warnings.warn(f"Ray token authentication is {self.auth}: anyone who can reach the Ray ports can run code "
                          "in this run's workers; unset RAY_AUTH_MODE (or set RAY_AUTH_MODE=token)", stacklevel=2)
        if gpus_per_worker is None:
            gpus_per_worker = gpu_share(ray.cluster_resources().get("GPU", 0.0), workers)
        cpus = ray.cluster_resources().get("CPU", 0.0)
        if cpus < workers * cpus_per_worker:
            warnings.warn(f"the Ray cluster has {cpus:g} CPUs for {workers} workers of {cpus_per_worker} CPU(s): "
                          f"only {int(cpus // cpus_per_worker)} actors can run, the others wait for CPUs", stacklevel=2)
        self.gpus_per_worker, self.cpus_per_worker = gpus_per_worker, cpus_per_worker
        self.fixed_threads = fixed_threads
        self.max_retries, self.timeout_s, self.faults = max_retries, eval_timeout_s, faults
        self._actor_cls = ray.remote(_Actor)
        self.actors = [self._new_actor() for _ in range(workers)]
        self.workers = workers
        self.replaced = 0
        self._fn = None  # the function the actors hold
        self._fn_ref = None

    def _new_actor(self):
        return self._actor_cls.options(num_cpus=self.cpus_per_worker, num_gpus=self.gpus_per_worker,
                                       max_restarts=0).remote(self.cpus_per_worker, self.fixed_threads)

    def _replace(self, actor):
        """Kill ``actor`` (dead or not) and put a new one, holding the current ``fn``, in its place."""
        try:
            self._ray.kill(actor, no_restart=True)
        except Exception:  # already gone
            pass
        new = self._new_actor()
        if self._fn_ref is not None:
            self._ray.get(new.load.remote(self._fn_ref))
        self.actors[self.actors.index(actor)] = new
        self.replaced += 1
        return new

    def describe(self) -> dict:
        """What manifest.json records about the evaluator: workers, CPU and GPU share per
        actor, retries, timeout (s), Ray's node IP of this driver and its auth mode."""
        return {"kind": "ray", "workers": self.workers, "cpus_per_worker": self.cpus_per_worker,
                "gpus_per_worker": self.gpus_per_worker, "max_retries": self.max_retries,
                "eval_timeout_s": self.timeout_s, "node_ip": self._ray.util.get_node_ip_address(), "auth": self.auth}

    def actor_info(self) -> list[dict]:
        """Per actor: ``pid``, ``gpu_ids`` (``ray.get_gpu_ids()``), ``device`` (the torch
        device string it builds ``fn`` with), ``threads`` (torch threads), ``node_ip``,
        ``node_id`` and ``cuda_visible_devices``."""
        return self._ray.get([a.info.remote() for a in self.actors])

    def map(self, fn: Callable, jobs: Iterable[Job]) -> Iterator[tuple[int, object]]:
        ray = self._ray
        from ray.exceptions import RayError, RayTaskError

        pending = deque(_Task(i, job) for i, job in enumerate(jobs))
        if not pending:
            return
        if fn is not self._fn:
            self._fn_ref = ray.put(fn)
            refs = [(a, a.load.remote(self._fn_ref)) for a in list(self.actors)]
            for actor, ref in refs:
                try:
                    ray.get(ref)
                except RayTaskError:  # fn cannot be built (e.g. a bad config): stop here
                    raise
                except RayError:  # the actor died while idle: a fresh one (which loads fn)
                    self._replace(actor)
            self._fn = fn
        idle = list(self.actors)
        running: dict = {}  # ref -> (task, actor, planned fault, start time)

        def retry_or_fail(task, error):
            if task.attempt > self.max_retries:
                return task.index, _failed(error, task)
            pending.appendleft(task)  # a retry goes first: results keep coming in order
            return None

        while pending or running:
            while pending and idle:
                task, actor = pending.popleft(), idle.pop(0)
                task.attempt += 1
                planned = planned_fault(self.faults, task.token, task.attempt)
                ref = actor.evaluate.remote(task.index, planned, *task.job)
                running[ref] = (task, actor, planned, time.monotonic())
            wait_s = None
            if self.timeout_s > 0:
                first_end = min(t0 for *_, t0 in running.values()) + self.timeout_s
                wait_s = max(0.0, first_end - time.monotonic())
            ready, _ = ray.wait(list(running), num_returns=1, timeout=wait_s)
            if not ready:  # an attempt outlived eval_timeout_s
                now = time.monotonic()
                for ref, (task, actor, planned, t0) in list(running.items()):
                    if now - t0 >= self.timeout_s:
                        del running[ref]
                        error = EvaluationTimeout(f"evaluation {task.index} ran longer than eval_timeout_s="
                                                  f"{self.timeout_s:g} s; its worker was replaced")
                        task.fault("timeout", error, planned)
                        idle.append(self._replace(actor))
                        out = retry_or_fail(task, error)
                        if out is not None:
                            yield out
                continue
            ref = ready[0]
            task, actor, planned, _ = running.pop(ref)
            try:
                _, result = ray.get(ref)
            except RayTaskError as e:  # the actor method itself failed (e.g. an unpicklable error)
                task.fault("raise", e, planned)
                idle.append(actor)
                error = e
            except RayError as e:  # the worker died: replace it
                error = WorkerDied(f"the Ray worker of evaluation {task.index} died ({type(e).__name__}: "
                                   f"{str(e).splitlines()[0] if str(e) else ''}); retried on a new worker")
                task.fault("exit", error, planned)
                idle.append(self._replace(actor))
            else:
                if not isinstance(result, Exception):
                    idle.append(actor)
                    yield task.index, _succeeded(result, task)
                    continue
                error = result
                if is_cuda_error(result):  # a CUDA context cannot be trusted after an error
                    task.fault("cuda", result, planned)
                    idle.append(self._replace(actor))
                else:
                    task.fault("raise", result, planned)
                    idle.append(actor)
            out = retry_or_fail(task, error)
            if out is not None:
                yield out

    def close(self) -> None:
        for a in self.actors:
            try:
                self._ray.kill(a)
            except Exception:
                pass
        self.actors = []
        self._fn = self._fn_ref = None
        if self._owns_ray:
            self._ray.shutdown()


class _Actor:
    """Ray actor body: holds one function (one teacher and one copy of the data per worker).

    Its device is 'cuda:0' when Ray gave it a GPU (``ray.get_gpu_ids()`` non-empty; Ray
    sets CUDA_VISIBLE_DEVICES to the given GPU, so it is device 0 here), else 'cpu'.
    """

    def __init__(self, num_threads: int = 1, fixed_threads: bool = False):
        import ray

        # threads = the actor's CPU share, never an inherited OMP_NUM_THREADS: two actors
        # with 2 threads each on 2 cores oversubscribe them and run tiny nets ~17x slower
        # (measured here: 153 s instead of ~9 s for one N-MNIST generation). torch is not
        # imported here: torch reads OMP_NUM_THREADS when a function that needs it loads it,
        # and load() sets the count again; an actor whose function never uses torch starts
        # without paying for torch's import (about 2 s of CPU).
        self.num_threads = max(1, int(num_threads))
        self.fixed_threads = bool(fixed_threads)
        os.environ["OMP_NUM_THREADS"] = str(self.num_threads)
        set_torch_threads(self.num_threads)
        self.gpu_ids = [str(g) for g in ray.get_gpu_ids()]
        self.device = "cuda:0" if self.gpu_ids else "cpu"
        self.fn = None

    def info(self) -> dict:
        """pid, GPU ids, device, threads (torch's intra-op threads once torch is loaded in
        this worker, else the OMP_NUM_THREADS it will read), node and CUDA_VISIBLE_DEVICES."""
        import ray

        torch = sys.modules.get("torch")
        threads = torch.get_num_threads() if torch is not None else int(os.environ["OMP_NUM_THREADS"])
        return {"pid": os.getpid(), "gpu_ids": self.gpu_ids, "device": self.device, "threads": threads,
                "node_ip": ray.util.get_node_ip_address(), "node_id": ray.get_runtime_context().get_node_id(),
                "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}

    def load(self, fn: Callable) -> None:
        set_torch_threads(self.num_threads)  # torch is loaded now if unpickling fn needed it
        if sys.modules.get("torch") is not None:  # fitted to the free cores within the share (evo_snn.threads)
            configure(share=self.num_threads, requested=self.num_threads if self.fixed_threads else None)
        self.fn = fn
        _build(fn, self.device)

    def evaluate(self, index: int, fault: str | None, *job):
        try:
            inject(fault)  # evo_snn.evaluation.faults: None unless faults.fail_rate > 0
            return index, self.fn(*job)
        except Exception as e:
            return index, e


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


RECOVERED_OWNER = "recovered"  # StudentStore owner of the students a ReplayEvaluator still has to serve


class ReplayEvaluator:
    """Serves the jobs that finished before an interruption from their stored results, and
    passes the others to ``inner`` (``--resume``: no finished evaluation is trained again).

    finished: ``{(genome key, seed): metrics}`` of the evaluations of the unfinished
    generation that had finished (their evaluations.jsonl rows, ``rundir.row_metrics``);
    store: the run's ``StudentStore`` holding their students.

    A job ``(genome, seed, ...)`` whose (``genome.key``, seed) is in ``finished`` is yielded
    at once as ``FitnessResult(metrics, student)``, and a grouped job ``(member jobs, seed)``
    (``evo_snn.evaluation.grouped``) whose members all are, as the list of its members' results;
    before the jobs of ``inner`` (the order a serial run had: it finishes its jobs in
    order). The student is None when the store no longer has it: a kill after the end of
    the generation, whose students no owner needed any more were deleted (genomes out of
    the population and the archive, which the same results leave out again). Declares the
    students it still has to serve to the store (``need``, owner ``RECOVERED_OWNER``) and
    releases them once all are served. ``reused``: how many evaluations it served.
    A rung-0 result of a multi-fidelity search (metrics ``fidelity`` < 1) is served with
    its rung-0 student (``fidelity.row_student_key``), never the genome's full one.
    """

    def __init__(self, inner, finished: dict, store):
        from evo_snn.evaluation.fidelity import row_student_key

        self.inner, self.store = inner, store
        self.finished = {(k, int(s)): m for (k, s), m in finished.items()}
        self.reused = 0
        self._student_key = row_student_key
        store.need(RECOVERED_OWNER, {row_student_key(k, m) for (k, _), m in self.finished.items()})

    @property
    def workers(self) -> int:
        return self.inner.workers

    def map(self, fn: Callable, jobs: Iterable[Job]) -> Iterator[tuple[int, object]]:
        from evo_snn.evaluation.outcome import FitnessResult

        def key_of(job):
            try:
                return getattr(job[0], "key", None), int(job[1])
            except (IndexError, TypeError, ValueError):  # not a (genome, seed, ...) job
                return None

        def replay(key):
            self.reused += 1
            metrics = self.finished.pop(key)
            skey = self._student_key(key[0], metrics)
            return FitnessResult(dict(metrics), self.store.get(skey) if skey in self.store else None)

        jobs = list(jobs)
        rest = []
        for i, job in enumerate(jobs):
            key = key_of(job)
            members = job[0] if isinstance(job[0], tuple) and job[0] and isinstance(job[0][0], tuple) else None
            if key in self.finished:
                yield i, replay(key)
            elif members is not None and all(key_of(m) in self.finished for m in members):
                yield i, [replay(key_of(m)) for m in members]  # a grouped job (evo_snn.evaluation.grouped) whose members all finished
            else:
                rest.append(i)
        if not self.finished:
            self.store.release(RECOVERED_OWNER)
        if rest:
            for j, res in self.inner.map(fn, [jobs[i] for i in rest]):
                yield rest[j], res

    def close(self) -> None:
        self.inner.close()
