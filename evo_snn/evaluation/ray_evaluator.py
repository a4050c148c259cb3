"""``RayEvaluator``: evaluates on Ray actors, one job per actor at a time, with retries,
timeouts and replaced workers (the faults of the module docstring of
``evo_snn.evaluation.evaluator``); ``_Actor``: the body of each actor.

Ray actors are created once per evaluator (and again only to replace a dead one); each
receives every new ``fn`` once (through the object store) and keeps it, so each holds
the data set and the teacher once. GPUs come from the cluster, not from the driver:
the per-actor GPU share is computed from ``ray.cluster_resources()`` (``gpu_share``),
an actor picks its device from ``ray.get_gpu_ids()`` and passes it to the factory, and
its torch threads equal its CPU share. Ray (and torch) are imported inside functions only.
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from collections import deque
from typing import Callable, Iterable, Iterator

from evo_snn.evaluation.attempts import (EvaluationTimeout, Job, Task, WorkerDied, check_faults, failed,
                                         is_cuda_error, succeeded)
from evo_snn.evaluation.faults import inject, planned_fault
from evo_snn.evaluation.ray_setup import gpu_share, init_local_ray, ray_auth_mode
from evo_snn.evaluation.workers import build
from evo_snn.threads import configure, set_torch_threads


class RayEvaluator:
    """Evaluates on ``workers`` Ray actors, one job per actor at a time.

    address: None starts a local Ray (``init_local_ray``: loopback only, ``num_cpus =
    workers * cpus_per_worker``); otherwise an existing cluster (``ray.init(address=...)``,
    e.g. 'auto' or 'ray://host:10001'). An already initialised Ray is used as it is.
    gpus_per_worker: None = ``gpu_share`` of the cluster's GPUs. cpus_per_worker: CPUs
    reserved per actor, which is also its number of torch threads.
    max_retries, eval_timeout_s (seconds, 0 = none), faults (``FaultsConfig`` or None):
    see ``evo_snn.evaluation.evaluator``. ``fn`` must be picklable; it is sent to every actor once
    (when it differs from the last one) and built there (``build()``, with the actor's
    device) before any job runs, so an error building it raises here.

    Attributes: ``actors`` (the live actors), ``replaced`` (actors replaced so far),
    ``auth`` (``ray_auth_mode()``; a warning is issued when it is not 'token').
    """

    def __init__(self, workers: int, address: str | None = None, gpus_per_worker: float | None = None, *,
                 cpus_per_worker: int = 1, max_retries: int = 2, eval_timeout_s: float = 0.0, faults=None,
                 fixed_threads: bool = False):
        import ray

        check_faults(faults, ray_workers=True)
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
        """``(index, result | Exception)`` of every job, in completion order: each attempt is
        submitted to an idle actor (``_submit``), a finished one collected (``_collect``)
        or an expired one ended (``_expire``), and a failed one run again until
        ``max_retries`` (``_retry_or_fail``); see ``evo_snn.evaluation.evaluator``."""
        pending = deque(Task(i, job) for i, job in enumerate(jobs))
        if not pending:
            return
        self._load(fn)
        idle = list(self.actors)
        running: dict = {}  # ref -> (task, actor, planned fault, start time)
        while pending or running:
            self._submit(pending, idle, running)
            ready, _ = self._ray.wait(list(running), num_returns=1, timeout=self._wait_s(running))
            if not ready:  # an attempt outlived eval_timeout_s
                yield from self._expire(pending, idle, running)
                continue
            ref = ready[0]
            task, actor, planned, _ = running.pop(ref)
            result, error = self._collect(ref, task, actor, planned, idle)
            if error is None:
                yield task.index, succeeded(result, task)
                continue
            out = self._retry_or_fail(task, error, pending)
            if out is not None:
                yield out

    def _load(self, fn: Callable) -> None:
        """Send ``fn`` to every actor (once, when it differs from the one they hold) and build
        it there; raises the error of an ``fn`` that cannot be built (e.g. a bad config), and
        replaces an actor that died while idle (the fresh one loads ``fn``)."""
        from ray.exceptions import RayError, RayTaskError

        if fn is self._fn:
            return
        ray = self._ray
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

    def _submit(self, pending: deque, idle: list, running: dict) -> None:
        """Start the next attempt of the first pending jobs on the idle actors, with the
        fault planned for it (``faults.planned_fault``)."""
        while pending and idle:
            task, actor = pending.popleft(), idle.pop(0)
            task.attempt += 1
            planned = planned_fault(self.faults, task.token, task.attempt)
            ref = actor.evaluate.remote(task.index, planned, *task.job)
            running[ref] = (task, actor, planned, time.monotonic())

    def _wait_s(self, running: dict) -> float | None:
        """Seconds until the oldest running attempt outlives ``eval_timeout_s`` (None: no timeout)."""
        if self.timeout_s <= 0:
            return None
        first_end = min(t0 for *_, t0 in running.values()) + self.timeout_s
        return max(0.0, first_end - time.monotonic())

    def _expire(self, pending: deque, idle: list, running: dict) -> Iterator[tuple[int, Exception]]:
        """End every attempt that outlived ``eval_timeout_s``: its actor is killed and
        replaced, the job retried; yields ``(index, error)`` of the jobs out of attempts."""
        now = time.monotonic()
        for ref, (task, actor, planned, t0) in list(running.items()):
            if now - t0 >= self.timeout_s:
                del running[ref]
                error = EvaluationTimeout(f"evaluation {task.index} ran longer than eval_timeout_s="
                                          f"{self.timeout_s:g} s; its worker was replaced")
                task.fault("timeout", error, planned)
                idle.append(self._replace(actor))
                out = self._retry_or_fail(task, error, pending)
                if out is not None:
                    yield out

    def _collect(self, ref, task: Task, actor, planned: str | None, idle: list) -> tuple[object, Exception | None]:
        """``(result, None)`` of a finished attempt, or ``(None, error)`` with its fault
        recorded; the actor goes back to ``idle``, replaced when it died or hit a CUDA
        error (a CUDA context cannot be trusted after one)."""
        from ray.exceptions import RayError, RayTaskError

        try:
            _, result = self._ray.get(ref)
        except RayTaskError as e:  # the actor method itself failed (e.g. an unpicklable error)
            task.fault("raise", e, planned)
            idle.append(actor)
            return None, e
        except RayError as e:  # the worker died: replace it
            error = WorkerDied(f"the Ray worker of evaluation {task.index} died ({type(e).__name__}: "
                               f"{str(e).splitlines()[0] if str(e) else ''}); retried on a new worker")
            task.fault("exit", error, planned)
            idle.append(self._replace(actor))
            return None, error
        if not isinstance(result, Exception):
            idle.append(actor)
            return result, None
        if is_cuda_error(result):
            task.fault("cuda", result, planned)
            idle.append(self._replace(actor))
        else:
            task.fault("raise", result, planned)
            idle.append(actor)
        return None, result

    def _retry_or_fail(self, task: Task, error: Exception, pending: deque) -> tuple[int, Exception] | None:
        """``(index, error)`` of a job that failed its last attempt; else None, the job
        queued first again (a retry goes first: results keep coming in order)."""
        if task.attempt > self.max_retries:
            return task.index, failed(error, task)
        pending.appendleft(task)
        return None

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
        build(fn, self.device)

    def evaluate(self, index: int, fault: str | None, *job):
        try:
            inject(fault)  # evo_snn.evaluation.faults: None unless faults.fail_rate > 0
            return index, self.fn(*job)
        except Exception as e:
            return index, e
