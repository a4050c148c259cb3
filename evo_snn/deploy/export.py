"""Choosing Pareto members to export, exporting them, and loading an export back.

The test split is used here only, once per exported member: at the end of a run
(``finalize``) or when a member is exported by hand::

    python -m evo_snn.export RUN_DIR --pick knee|max-accuracy|min-energy|'sparsity>=0.8'|uid=<uid>
                             [--retrain-epochs N] [--out DIR] [--nir] [--data-root PATH]

writes ``exported/<uid>/`` (or ``DIR/<uid>/``), built in a hidden temporary folder and
renamed into place, so a failure leaves no half-written export:

  teacher.pt, student.pt     sparse teacher and student, plain state_dicts (``weights_only=True``)
  teacher.sparse.npz,        the same weights as packed masks + kept values
  student.sparse.npz         (``evo_snn.state.checkpoint.save_sparse_state``)
  genome.json, masks.npz     the genome (``Genome.save``)
  metrics.json               validation (selection) and test metrics, model arguments (model
                             config, frame shape, class count), run config, provenance
  MODEL_CARD.md              the same for people
  student.nir                with ``--nir``: the student as a NIR graph (``evo_snn.deploy.nir_export``)

Members are chosen on validation metrics only. With ``--retrain-epochs N`` the chosen
genome is retrained for N KD epochs (masks kept, the member's own seed) on the same
code path as the final retraining of the baselines (``Comparison.evaluate`` ->
``GenomeFitness(with_epochs(ctx, N))``), then tested once. ``load_exported`` rebuilds
the nets with the masks attached (``torch.nn.utils.prune``), so fine-tuning keeps the
pruned weights at zero.

The steps live in the modules beside this one, and every name of theirs used elsewhere is
importable from here too: ``evo_snn.deploy.picks`` (choosing members, ``--pick``,
``ExportError``), ``evo_snn.deploy.writer`` (writing an export), ``evo_snn.deploy.card``
(MODEL_CARD.md), ``evo_snn.deploy.loader`` (``load_exported``) and
``evo_snn.deploy.command`` (the command, ``main``).
"""

from __future__ import annotations

import shutil

import torch.nn as nn
from tqdm.auto import tqdm

from evo_snn.data import Splits
from evo_snn.deploy.card import ENERGY_UNITS, model_card  # noqa: F401 (re-exported)
from evo_snn.deploy.command import CLI_DESCRIPTION, EXIT_USAGE, build_parser, export_run, main  # noqa: F401 (re-exported)
from evo_snn.deploy.loader import load_exported  # noqa: F401 (re-exported: evo_snn.load_exported)
from evo_snn.deploy.picks import (  # noqa: F401 (re-exported)
    ENERGY_KEYS, PICKS, ExportError, choose_exports, choose_member, energy_key, knee_index, parse_pick, pick_member)
from evo_snn.deploy.writer import export_member, retrained_metrics, run_context
from evo_snn.evaluation.fitness import FitnessContext, GenomeFitness, with_epochs
from evo_snn.state.rundir import RunDir
from evo_snn.state.store import StudentStore
from evo_snn.training.train import accuracy


def finalize(run: RunDir, ctx: FitnessContext, archive, students: StudentStore, dense_teacher: nn.Module, splits: Splits,
             teacher_metrics: dict) -> list[dict]:
    """The end of a run, where the test split is used, once: choose the best-accuracy and
    knee members of ``archive`` (validation front), retrain them for
    ``search.final_epochs`` when > 0 (same KD settings, own seed), export them with
    their test accuracy, remove exports of members no longer chosen (a resumed run),
    and add the dense teacher's ``test_accuracy`` to ``teacher_metrics`` and
    teacher/metrics.json. students: the run's ``StudentStore``, holding the student of
    every archive member (read only when ``search.final_epochs`` is 0; KeyError when
    one is missing). Returns the exported records.
    """
    cfg = ctx.cfg
    front = [ind for ind in archive if ind.status != "failed"]
    roles = choose_exports(front)
    by_uid = {ind.uid: ind for ind in front}
    model_args = (cfg.model, splits.frame_shape, splits.num_classes)
    retrain = GenomeFitness(with_epochs(ctx, cfg.search.final_epochs)) if cfg.search.final_epochs > 0 else None
    teacher_metrics["test_accuracy"] = accuracy(dense_teacher, splits.test)
    context = run_context(run, cfg, splits, teacher_metrics, run.manifest.get("argv"))
    exported = []
    for uid, r in roles.items():
        ind = by_uid[uid]
        metrics = dict(ind.metrics)
        if retrain is None:
            student_state = students.get(ind.genome.key)
        else:  # select on validation, retrain, test once
            res = retrain(ind.genome, ind.seed)
            student_state = res.student_state
            metrics = retrained_metrics(metrics, res.metrics, cfg.search.final_epochs)
        rec = export_member(run, uid, r, ind.genome, metrics, student_state, dense_teacher, model_args, splits.test, ctx.layers,
                            context=context, val=splits.val)
        exported.append(rec)
        tqdm.write(f"exported {uid} ({', '.join(r)}): val acc {rec['accuracy']:.3f}, test acc {rec['test_accuracy']:.3f}, "
                   f"sparsity {rec['sparsity']:.3f} -> {run.exported / uid}")
    for old in run.exported.iterdir():  # a resumed run may choose other members than before
        if old.is_dir() and old.name not in roles:
            shutil.rmtree(old)
    run.write_json("teacher/metrics.json", teacher_metrics)
    tqdm.write(f"dense teacher: test accuracy {teacher_metrics['test_accuracy']:.3f}")
    return exported
