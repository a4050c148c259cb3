"""``python -m evo_snn.search``: neuroevolutionary structure search for sparse SNNs.

CLI -> Config -> data set -> dense teacher -> NSGA-II over genomes (fitness: sparse
teacher -> KD-trained student -> validation accuracy and sparsity) -> Pareto front
-> run directory -> export of the best-accuracy and knee members (test accuracy
measured once, here, at the end) -> plots.

This module is the screen of stage calls: ``main`` parses the arguments, ``run_search``
prepares the run (``evo_snn.search.setup``: config, data, run directory; or
``evo_snn.search.resume`` for ``--resume RUN_DIR``, which continues an interrupted, or
completed with a larger ``--generations``, run from its last checkpoint with the run's
own config.json, data root and teacher), and ``_execute`` runs the stages in order
(``evo_snn.search.stages``), the export (``evo_snn.deploy.export.finalize``) and the
ending (``evo_snn.search.endings``: manifest status, message, exit code).
``supervised`` runs ``main`` in a forked child (``evo_snn.search.supervise``).

Each trained student goes to the run's ``StudentStore`` (``<run>/checkpoints/students/``,
``evo_snn.state.store``) as its result arrives; the run logger and the checkpoint writer are
search callbacks (``cb(search)``). After every generation the search state goes to
``<run>/checkpoints/`` (``evo_snn.state.checkpoint``).
"""

from __future__ import annotations

import sys
import time

from evo_snn import malloc, threads
from evo_snn.atomic import DISK_ERRNOS
from evo_snn.cli import show_progress
from evo_snn.config import Config
from evo_snn.deploy.export import finalize
from evo_snn.evaluation.evaluator import ReplayEvaluator
from evo_snn.search import endings
from evo_snn.search.options import build_parser
from evo_snn.search.resume import resume_search
from evo_snn.search.setup import new_search
from evo_snn.search.stages import (evaluator_stage, fitness_context, plot_stage, report_data, restore, search_stage,
                                   teacher_stage)
from evo_snn.search.supervise import supervise
from evo_snn.state.checkpoint import Checkpoint, CheckpointError
from evo_snn.state.rundir import RunDir, sigterm_as_interrupt
from evo_snn.state.runlog import SearchFailedError
from evo_snn.training.teacher import TeacherLoadError


def main(argv: list[str] | None = None) -> int:
    """``python -m evo_snn.search`` in this process: parse ``argv`` (default
    ``sys.argv[1:]``), run with SIGTERM as Ctrl-C; returns the exit code."""
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    try:  # before any output: a bad EVO_SNN_THREADS / EVO_SNN_MALLOC is one line, exit 2
        threads.env_mode()
        malloc.env_mode()
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    with sigterm_as_interrupt():
        return run_search(args, ["python", "-m", "evo_snn.search", *argv])


def supervised(argv: list[str] | None = None) -> int:
    """``python -m evo_snn.search``: ``main`` in a forked child, watched by this process,
    which marks a run the child left at 'running' as 'failed' (``supervise.supervise``)."""
    return supervise(main, argv)


def run_search(args, argv: list[str]) -> int:
    """A new run (``setup.new_search``) or, with ``args.resume``, the continuation of one
    (``resume.resume_search``), each handing the prepared run to ``_execute``; returns the
    exit code."""
    if args.resume is not None:
        return resume_search(args, argv, _execute)
    return new_search(args, argv, _execute)


def _execute(run: RunDir, cfg: Config, splits, device, args, ckpt: Checkpoint | None = None, rows: list[dict] | None = None,
             finished: dict | None = None, reuse_teacher: bool = False) -> int:
    """The stages in order: teachers -> search (fresh, or continued from ``ckpt``) ->
    export (the test split, once) -> plots; returns the exit code and records the final
    status in manifest.json (``endings``). finished: ``{(genome key, seed): metrics}`` of
    evaluations that finished after ``ckpt``, served from the store instead of trained again
    (``ReplayEvaluator``); reuse_teacher: load the run's own teacher without a checkpoint
    (``resume.restart_search``). ``run`` is locked; it is unlocked on every path."""
    progress = show_progress(args)
    report_data(cfg, splits)
    evaluator = None
    search = None
    resumed = ckpt is not None or reuse_teacher
    try:
        t0 = time.perf_counter()
        teachers = teacher_stage(run, cfg, splits, device, args, resumed, progress)
        ctx = fitness_context(cfg, splits, teachers)
        evaluator = evaluator_stage(run, cfg, args)
        search, logger, checkpoints = search_stage(run, cfg, ctx, teachers, evaluator, args, progress)
        if finished:  # before restore: adopting the checkpoint must not delete their students
            search.evaluator = evaluator = ReplayEvaluator(evaluator, finished, search.store)
        if ckpt is not None:
            restore(run, search, ckpt, logger, checkpoints, rows)
        archive = search.run()
        evaluator.close()
        evaluator = None
        threads.configure(1, cfg.train.threads)  # the export's retraining and test pass run here
        if not any(ind.status != "failed" for ind in archive):  # nothing to export, plot or test
            return endings.no_front(run, logger)
        exported = finalize(run, ctx, archive, search.store, teachers.dense, splits, teachers.metrics)
        plot_stage(run, logger, archive, teachers, exported)
        return endings.completed(run, logger, exported, t0)
    except SearchFailedError as e:  # search.max_failed_generations generations without a successful evaluation
        return endings.failed(run, e)
    except (TeacherLoadError, CheckpointError) as e:
        return endings.not_loaded(run, e, resumed)
    except KeyboardInterrupt:
        return endings.interrupted(run, cfg, search)
    except OSError as e:
        if e.errno in DISK_ERRNOS:
            return endings.disk_full(run, e)
        endings.crashed(run, e)
        raise
    except Exception as e:
        endings.crashed(run, e)
        raise
    finally:
        if evaluator is not None:
            evaluator.close()
        run.unlock()

