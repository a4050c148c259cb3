"""The attempts of an evaluation job and their faults, shared by the serial and the Ray
evaluator (``evo_snn.evaluation.evaluator``, ``evo_snn.evaluation.ray_evaluator``).

A job is ``(genome, seed)`` or ``(genome, seed, init_state)``; ``Task`` counts its
attempts and records one ``{attempt, kind, error, injected}`` per failed one (kind
'raise', 'exit', 'timeout' or 'cuda'). ``succeeded`` adds ``attempts`` and ``faults`` to
the metrics of a result that needed more than one attempt; ``failed`` marks the last
error of a job that failed every attempt, which ``failure_metrics`` turns into the
metrics of a failed evaluation.

Pure Python (no torch, no Ray).
"""

from __future__ import annotations

import numbers

Job = tuple  # (Genome, seed) or (Genome, seed, init_state: state_dict | None)


class EvaluationTimeout(TimeoutError):
    """An evaluation attempt outlived ``eval_timeout_s`` (its Ray actor was killed)."""


class WorkerDied(RuntimeError):
    """The Ray worker running an evaluation attempt died (e.g. SIGKILL, OOM, a lost node)."""


class Task:
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


def succeeded(result, task: Task):
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


def failed(error: Exception, task: Task) -> Exception:
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


def check_faults(faults, ray_workers: bool) -> None:
    """Raise ValueError for injected faults (``FaultsConfig``) whose kinds 'exit' or 'hang'
    would hit this process (``ray_workers`` False: the serial evaluator)."""
    if faults is None or faults.fail_rate <= 0:
        return
    if not ray_workers and set(faults.kinds) - {"raise"}:
        raise ValueError("faults.kinds 'exit' and 'hang' would end or block this process; they need Ray workers "
                         "(search.workers > 1); with one worker use faults.kinds=[raise]")
