"""``ReplayEvaluator``: a resumed run's evaluator (``--resume``), which serves the
evaluations that finished before an interruption from their stored results and
passes the others on to the run's serial or Ray evaluator
(``evo_snn.evaluation.evaluator``), so no finished evaluation is trained again.
"""

from __future__ import annotations

from typing import Callable, Iterable, Iterator

from evo_snn.evaluation.attempts import Job

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
