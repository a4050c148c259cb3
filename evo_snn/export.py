"""Choosing Pareto members to export, and exporting them with their test accuracy.

The test split is used here only, once, at the end of a run, for exported members.
"""

from __future__ import annotations

import shutil

import numpy as np
import torch.nn as nn
from tqdm.auto import tqdm

from .data import FrameSet, Splits
from .fitness import FitnessContext, GenomeFitness, with_epochs
from .genome import Genome
from .models import build_model
from .pruning import sparse_copy, weight_sparsity
from .rundir import RunDir, save_state_dict
from .store import StudentStore
from .train import accuracy


def knee_index(points: np.ndarray) -> int:
    """Index of the knee of a 2-objective front (both maximised).

    points: [M, 2]. Objectives are min-max normalised over the front; the knee is the
    member with the largest *signed* distance from the line through the two extreme
    members, positive towards the ideal point (1, 1). A member in a concave dent
    (below that line) can therefore never be the knee. With fewer than three distinct
    members: the largest normalised sum. No library here offers a knee for a plain
    point set (pymoo is not a dependency), hence this small function.
    """
    pts = np.asarray(points, dtype=float)
    if len(pts) == 0:
        raise ValueError("empty front")
    span = pts.max(0) - pts.min(0)
    norm = (pts - pts.min(0)) / np.where(span > 0, span, 1.0)
    a, b = norm[np.argmax(norm[:, 0])], norm[np.argmax(norm[:, 1])]
    d = b - a
    if len(np.unique(norm, axis=0)) < 3 or not np.any(d):
        return int(np.argmax(norm.sum(1)))
    # cross product of (b - a) and (p - a): its sign says which side of the line p lies on
    cross = d[0] * (norm[:, 1] - a[1]) - d[1] * (norm[:, 0] - a[0])
    ideal = d[0] * (1.0 - a[1]) - d[1] * (1.0 - a[0])
    signed = cross * np.sign(ideal) / np.hypot(*d)
    return int(np.argmax(signed))


def choose_exports(front: list) -> dict[str, list[str]]:
    """{uid: roles} for the highest-accuracy member and the knee of ``front``
    (individuals with ``fitness.values = (accuracy, sparsity)`` and ``uid``)."""
    pts = np.array([ind.fitness.values for ind in front])
    best = max(range(len(front)), key=lambda i: (pts[i, 0], pts[i, 1]))
    roles: dict[str, list[str]] = {}
    roles.setdefault(front[best].uid, []).append("best_accuracy")
    roles.setdefault(front[knee_index(pts)].uid, []).append("knee")
    return roles


def export_member(run: RunDir, uid: str, roles: list[str], genome: Genome, metrics: dict, student_state: dict,
                  dense_teacher: nn.Module, model_args: tuple, test: FrameSet, layers) -> dict:
    """Write exported/<uid>/{teacher.pt, student.pt, genome.json, masks.npz, metrics.json}.

    teacher.pt is the sparse teacher (dense teacher with the genome's masks), student.pt
    the KD-trained student; both plain state_dicts. Returns the metrics written,
    with ``test_accuracy`` and ``teacher_test_accuracy`` (fractions in [0, 1]).
    """
    out = run.exported / uid
    out.mkdir(parents=True, exist_ok=True)
    sparse_teacher = sparse_copy(dense_teacher, genome.mask_dict())
    device = next(dense_teacher.parameters()).device
    student = build_model(*model_args).to(device)
    student.load_state_dict(student_state)
    student.eval()
    test_metrics = {
        "test_accuracy": accuracy(student, test),
        "teacher_test_accuracy": accuracy(sparse_teacher, test),
        "test_sparsity": weight_sparsity(student, layers)[0],
    }
    save_state_dict(out / "teacher.pt", sparse_teacher.state_dict())
    save_state_dict(out / "student.pt", student.state_dict())
    genome.save(out)
    record = {"uid": uid, "roles": roles, "genome_key": genome.key, **metrics, **test_metrics}
    run.write_json(f"exported/{uid}/metrics.json", record)
    return record


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
    exported = []
    for uid, r in roles.items():
        ind = by_uid[uid]
        metrics = dict(ind.metrics)
        if retrain is None:
            student_state = students.get(ind.genome.key)
        else:  # select on validation, retrain, test once
            res = retrain(ind.genome, ind.seed)
            student_state = res.student_state
            metrics.update(final_epochs=cfg.search.final_epochs, retrained_val_accuracy=res.metrics["accuracy"],
                           retrain_samples=res.metrics["train_samples"])
        rec = export_member(run, uid, r, ind.genome, metrics, student_state, dense_teacher, model_args, splits.test, ctx.layers)
        exported.append(rec)
        tqdm.write(f"exported {uid} ({', '.join(r)}): val acc {rec['accuracy']:.3f}, test acc {rec['test_accuracy']:.3f}, "
                   f"sparsity {rec['sparsity']:.3f} -> {run.exported / uid}")
    for old in run.exported.iterdir():  # a resumed run may choose other members than before
        if old.is_dir() and old.name not in roles:
            shutil.rmtree(old)
    teacher_metrics["test_accuracy"] = accuracy(dense_teacher, splits.test)
    run.write_json("teacher/metrics.json", teacher_metrics)
    tqdm.write(f"dense teacher: test accuracy {teacher_metrics['test_accuracy']:.3f}")
    return exported
