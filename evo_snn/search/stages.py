"""The stages of a search after its data set is loaded, each a function that
``evo_snn.search.run._execute`` calls in order: the teachers (``teacher_stage``), the
fitness context the workers get (``fitness_context``), the evaluator (``evaluator_stage``),
the ``StructureSearch`` with its run logger and checkpoint writer (``search_stage``;
``restore`` continues it from a checkpoint) and the plots (``plot_stage``). The export is
``evo_snn.deploy.export.finalize``; how a run ends is ``evo_snn.search.endings``.

Each stage records what it learns in manifest.json (``RunDir.note``): the CPU threads,
the neuron backend, the evaluator, the screening currency.
"""

from __future__ import annotations

import pandas as pd
import torch
from tqdm.auto import tqdm

from evo_snn import malloc, threads
from evo_snn.analysis.plots import plot_run
from evo_snn.config import Config
from evo_snn.evaluation.evaluator import genome_fitness, make_evaluator
from evo_snn.evaluation.fitness import FitnessContext
from evo_snn.models import select_backend
from evo_snn.search.nsga import StructureSearch
from evo_snn.state.checkpoint import Checkpoint, CheckpointError, CheckpointWriter, student_store
from evo_snn.state.rundir import RunDir, reclaim_sigterm
from evo_snn.state.runlog import RunLogger, pareto_frame
from evo_snn.structure.genome import GenomeOps
from evo_snn.structure.pruning import prunable_layers, weight_magnitudes
from evo_snn.training.kd import kd_mode
from evo_snn.training.teacher import prepare as prepare_teachers
from evo_snn.training.train import cpu_state


def report_data(cfg: Config, splits) -> None:
    """The line that opens the stages: the data set's split sizes, frame shape and classes."""
    tqdm.write(f"{cfg.dataset}: {len(splits.train)} train / {len(splits.val)} val / {len(splits.test)} test samples, "
               f"frames [T, C, H, W] = {list(splits.frame_shape)}, {splits.num_classes} classes")


def teacher_files(cfg: Config) -> list[str]:
    """The files of teacher/ that a complete teacher has (``RunDir.save_teachers``)."""
    return ["teacher.pt", "metrics.json"] + (["ann_teacher.pt", "ann_metrics.json"] if kd_mode(cfg.kd.mode).needs_ann else [])


def teacher_stage(run: RunDir, cfg: Config, splits, device: torch.device, args, resume: bool, progress: bool):
    """The teacher stage, with all usable CPUs for the driver alone: the dense teacher (and
    for kd.mode 'ann' the ANN teacher) trained, loaded from ``--teacher``, or with
    ``resume`` the run's own (``evo_snn.training.teacher.prepare``); a fresh one is saved to
    teacher/. Notes the threads, the malloc thresholds and the neuron backend in the
    manifest; returns the ``Teachers``. Raises TeacherLoadError."""
    gov = threads.configure(1, cfg.train.threads)  # all usable CPUs for the teacher (the driver alone)
    run.note(threads=gov.describe() if gov else {"torch_defaults": True, "threads": torch.get_num_threads()},
             malloc_thresholds=dict(malloc.APPLIED))  # evo_snn.malloc; {} = the C library's own
    teachers = prepare_teachers(cfg, splits, device, run_teacher_dir=run.teacher, resume=resume,
                                teacher_path=args.teacher, progress=progress)
    if teachers.fresh:
        run.save_teachers(teachers)
    run.note(backend=select_backend(teachers.dense, device, cfg.model.neuron_backend),
             neuron_backend_requested=cfg.model.neuron_backend)
    return teachers


def fitness_context(cfg: Config, splits, teachers) -> FitnessContext:
    """What every evaluation needs (shipped once per worker): the config, the train and
    validation frames, the dense teacher's CPU state and its prunable layers."""
    layers = tuple(prunable_layers(teachers.dense, cfg.genome.prunable))
    return FitnessContext(cfg, splits.train, splits.val, splits.frame_shape, splits.num_classes,
                          cpu_state(teachers.dense), layers, teachers.ann_state)


def evaluator_stage(run: RunDir, cfg: Config, args):
    """The evaluator (``make_evaluator``: serial, local Ray actors with ``search.workers`` > 1,
    or the cluster of ``--address``); with Ray the driver keeps its share of the CPUs and
    takes SIGTERM back from ``ray.init``. Notes it in the manifest; returns it."""
    evaluator = make_evaluator(cfg.search.workers, args.address, max_retries=cfg.search.max_retries,
                               eval_timeout_s=cfg.search.eval_timeout_s, faults=cfg.faults, threads=cfg.train.threads)
    if cfg.search.workers > 1 or args.address:  # the workers train; the driver keeps its share
        threads.configure(cfg.search.workers, cfg.train.threads)
        reclaim_sigterm()  # ray.init installed its own SIGTERM handler, which aborts the driver
    run.note(evaluator=evaluator.describe())  # e.g. Ray's node IP and auth mode ('token')
    return evaluator


def search_stage(run: RunDir, cfg: Config, ctx: FitnessContext, teachers, evaluator, args,
                 progress: bool) -> tuple[StructureSearch, RunLogger, CheckpointWriter]:
    """The ``StructureSearch`` over the teacher's prunable layers, its students in the run's
    store (``checkpoints/students/``), its callbacks the run logger and the checkpoint
    writer; returns (search, logger, checkpoint writer). With forward-only screening the
    screener's measured cost ratio goes to the manifest."""
    students = student_store(run.checkpoints)  # filled as results arrive; checkpoints reference it
    logger = RunLogger(run, progress=progress)
    checkpoints = CheckpointWriter(run.checkpoints, students, logbook=lambda: logger.generations)
    search = StructureSearch(GenomeOps(weight_magnitudes(teachers.dense, ctx.layers), cfg.genome),
                             genome_fitness(ctx, args.address), cfg.search, cfg.genome, evaluator=evaluator,
                             store=students, callbacks=[logger, checkpoints], progress=progress)
    if search.screener is not None:  # forward-only screening: its measured currency goes to the manifest
        run.note(forward_cost_ratio=search.screener.forward_cost_ratio,
                 screen={"mode": cfg.search.screen, "bn_batches": cfg.search.screen_bn_batches,
                         "samples": int(len(search.screener.val_index))})
    return search, logger, checkpoints


def restore(run: RunDir, search: StructureSearch, ckpt: Checkpoint, logger: RunLogger, checkpoints: CheckpointWriter,
            rows: list[dict] | None) -> None:
    """Continue ``search`` from ``ckpt``: its state, the driver's torch RNG, the logger's rows
    and logbook, and the run's generations.csv / pareto.csv as of the checkpoint. Raises
    CheckpointError when the checkpoint does not fit the run's config."""
    try:
        search.load_state_dict(ckpt.state)
    except ValueError as e:
        raise CheckpointError(f"checkpoint in {run.checkpoints} does not fit {run.path / 'config.json'}: {e}") from e
    if ckpt.torch_rng is not None:
        torch.set_rng_state(ckpt.torch_rng)
    checkpoints.adopt(ckpt)
    logger.rows = list(rows or [])
    logger.generations = list(ckpt.logbook)
    run.write_csv("generations.csv", pd.DataFrame(logger.generations))
    run.write_csv("pareto.csv", pareto_frame(search.archive))


def plot_stage(run: RunDir, logger: RunLogger, archive, teachers, exported: list[dict]) -> None:
    """plots/ (``evo_snn.analysis.plots.plot_run``): the successful evaluations, the front,
    the generations and the exported members against the teacher's validation accuracy."""
    evals = pd.DataFrame([r for r in logger.rows if r.get("status") == "ok"])
    plot_run(run.plots, evals, pareto_frame(archive), pd.DataFrame(logger.generations), teachers.metrics["val_accuracy"],
             exported)
