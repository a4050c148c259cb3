"""Writing one export, ``<out_root or run.exported>/<uid>/`` (the files are listed in
``evo_snn.deploy.export``'s docstring).

``export_member``: measures the student and the sparse teacher once on the test split,
builds the metrics.json record (``member_record``), writes every file into a hidden
temporary folder (``write_files``) and renames it into place. ``retrained_metrics`` and
``run_context``: the retraining fields and the run facts that the record carries.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch.nn as nn

from evo_snn.analysis.pareto import ENERGY_LAYER_METRICS, ENERGY_METRICS
from evo_snn.atomic import atomic_write_bytes, json_default
from evo_snn.config import Config
from evo_snn.data import FrameSet, Splits
from evo_snn.deploy.card import model_card
from evo_snn.deploy.picks import ExportError
from evo_snn.models import build_model
from evo_snn.names import UnsafeNameError, plain_name
from evo_snn.state.checkpoint import SPARSE_SUFFIX, save_sparse_state
from evo_snn.state.rundir import RunDir, git_revision, now_iso, package_versions, save_state_dict
from evo_snn.structure.genome import Genome
from evo_snn.structure.pruning import prunable_layers, sparse_copy, weight_sparsity
from evo_snn.training.train import accuracy


def export_member(run: RunDir, uid: str, roles: list[str], genome: Genome, metrics: dict, student_state: dict,
                  dense_teacher: nn.Module, model_args: tuple, test: FrameSet, layers, *, out_root: Path | None = None,
                  context: dict | None = None, nir: bool = False, val: FrameSet | None = None) -> dict:
    """Write ``<out_root or run.exported>/<uid>/`` (see ``evo_snn.deploy.export``); returns
    the metrics written.

    teacher.pt is the sparse teacher (dense teacher with the genome's masks), student.pt
    the student; both plain state_dicts. metrics: the member's validation metrics (plus
    retraining fields); the record adds ``test_accuracy``, ``teacher_test_accuracy``
    (fractions in [0, 1]), ``test_sparsity``, ``student_val_accuracy`` (the exported
    student's validation accuracy: ``retrained_val_accuracy`` after retraining, else
    ``accuracy``), ``model_args`` (model, frame_shape, num_classes), ``layers`` and the
    file sizes. context: run facts for the model card (``config`` dict, ``run``,
    ``search_command``, ``search_versions``, ``search_git``, ``export_command``,
    ``dense_teacher``, ``val_samples``). The folder is built under a hidden temporary
    name and renamed into place (an older export of ``uid`` is replaced); on any error
    nothing is left. nir: also write ``student.nir`` (raises ExportError when
    ``evo_snn.nir`` is missing or cannot map a layer). val: the validation split; where
    ``metrics`` has no ``teacher_accuracy`` (``search.measure_teacher`` false, the
    default), the sparse teacher's validation accuracy is measured on it here, once, and
    recorded as ``teacher_accuracy`` with ``teacher_accuracy_measured: "at export"``.
    """
    root = Path(out_root) if out_root is not None else run.exported
    try:  # read from the run directory: never a path out of it
        uid = plain_name(uid, "uid", run.path / "pareto.csv" if run is not None else None)
    except UnsafeNameError as e:
        raise ExportError(str(e)) from e
    made_root = not root.exists()  # removed again, if still empty, when this export fails (D7 of issue 27)
    root.mkdir(parents=True, exist_ok=True)
    dest = root / uid
    tmp = root / f".{uid}.tmp-{os.getpid()}"
    model_cfg, frame_shape, num_classes = model_args
    sparse_teacher = sparse_copy(dense_teacher, genome.mask_dict())
    device = next(dense_teacher.parameters()).device
    student = build_model(model_cfg, frame_shape, num_classes).to(device)
    student.load_state_dict(student_state)
    student.eval()
    record = member_record(uid, roles, genome, metrics, student, sparse_teacher, model_args, test, layers, context, val)
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        tmp.mkdir()
        write_files(tmp, record, student, sparse_teacher, genome, tuple(frame_shape) if nir else None)
        old = root / f".{uid}.old-{os.getpid()}"
        if dest.exists():
            os.replace(dest, old)
        os.replace(tmp, dest)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if made_root:
            try:
                root.rmdir()  # only when empty: another member's export stays
            except OSError:
                pass
        raise
    return record


def member_record(uid: str, roles: list[str], genome: Genome, metrics: dict, student: nn.Module,
                  sparse_teacher: nn.Module, model_args: tuple, test: FrameSet, layers, context: dict | None,
                  val: FrameSet | None = None) -> dict:
    """The metrics.json record of an export (``export_member``'s arguments, with the
    student and the sparse teacher built), its one test measurement included; without
    ``file_bytes``, which ``write_files`` adds."""
    ctx = dict(context or {})
    if metrics.get("teacher_accuracy") is None and val is not None:  # not measured during the search
        metrics = {**metrics, "teacher_accuracy": accuracy(sparse_teacher, val), "teacher_accuracy_measured": "at export"}
    model_cfg, frame_shape, num_classes = model_args
    sparsity, per_layer = weight_sparsity(student, layers)
    test_metrics = {
        "test_accuracy": accuracy(student, test),
        "teacher_test_accuracy": accuracy(sparse_teacher, test),
        "test_sparsity": sparsity,
        "test_samples": len(test),
    }
    shapes = {n: list(m.weight.shape) for n, m in prunable_layers(student, list(layers)).items()}
    record = {"uid": uid, "roles": list(roles), "genome_key": genome.key, **metrics, **test_metrics,
              "student_val_accuracy": metrics.get("retrained_val_accuracy", metrics.get("accuracy")),
              "exported_layer_sparsity": per_layer, "layer_shapes": shapes,
              "model_args": {"model": Config(model=model_cfg).to_dict()["model"], "frame_shape": [int(s) for s in frame_shape],
                             "num_classes": int(num_classes)},
              "layers": list(layers), "exported_at": now_iso(), **{k: v for k, v in ctx.items() if k != "config"}}
    if "config" in ctx:
        record["config"] = ctx["config"]
    return record


def write_files(folder: Path, record: dict, student: nn.Module, sparse_teacher: nn.Module, genome: Genome,
                nir_frame_shape: tuple | None) -> None:
    """Write an export's files into ``folder`` (existing, empty): the state_dicts, their
    packed forms, the genome, ``student.nir`` when ``nir_frame_shape`` (the student's
    input frame, (T, C, H, W)) is given, then metrics.json (``record`` plus
    ``file_bytes``, set here) and MODEL_CARD.md. raises ExportError when the NIR export
    fails, OSError from the writes."""
    save_state_dict(folder / "teacher.pt", sparse_teacher.state_dict())
    save_state_dict(folder / "student.pt", student.state_dict())
    masks = genome.mask_dict()
    save_sparse_state(folder / f"student{SPARSE_SUFFIX}", student.state_dict(), masks)
    save_sparse_state(folder / f"teacher{SPARSE_SUFFIX}", sparse_teacher.state_dict(), masks)
    genome.save(folder)
    if nir_frame_shape is not None:
        write_nir = nir_writer()
        try:
            write_nir(student, nir_frame_shape, folder / "student.nir")
        except (ValueError, TypeError, NotImplementedError, KeyError) as e:
            raise ExportError(f"NIR export of {record['uid']} failed: {e}") from e
    sizes = {p.name: p.stat().st_size for p in sorted(folder.iterdir()) if p.is_file()}
    record["file_bytes"] = sizes
    atomic_write_bytes(folder / "metrics.json", (json.dumps(record, indent=2, default=json_default) + "\n").encode())
    atomic_write_bytes(folder / "MODEL_CARD.md", model_card(record).encode())


def nir_writer():
    """``write_nir(student, frame_shape, path)`` of ``evo_snn.deploy.nir_export`` (the NIR graph
    writer); raises ExportError when it cannot be imported (module or the ``nir`` /
    ``nirtorch`` packages missing: ``pip install -e ".[deploy]"``)."""
    try:
        from evo_snn.deploy.nir_export import write_nir
    except ImportError as e:
        raise ExportError(f"NIR export not available: evo_snn.deploy.nir_export.write_nir cannot be imported ({e}); "
                          'install the nir and nirtorch packages (pip install -e ".[deploy]")') from e
    return write_nir


def retrained_metrics(metrics: dict, retrained: dict, epochs: float) -> dict:
    """A member's search metrics plus its retraining: ``final_epochs``, ``retrained_val_accuracy``,
    ``retrain_samples``; the energy metrics become the retrained student's (the one exported;
    ``energy_measured_on`` says so). Selection metrics (``accuracy``, ``sparsity``) stay."""
    out = {**metrics, "final_epochs": epochs, "retrained_val_accuracy": retrained["accuracy"],
           "retrain_samples": retrained["train_samples"]}
    energy = {k: retrained[k] for k in (*ENERGY_METRICS, *ENERGY_LAYER_METRICS) if k in retrained}
    if energy:
        out.update(energy, energy_measured_on="the retrained student")
    return out


def run_context(run: RunDir, cfg: Config, splits: Splits, dense_teacher_metrics: dict | None, argv: list[str] | None) -> dict:
    """The facts about a run and this export that ``export_member`` records and the model card shows."""
    return {"config": cfg.to_dict(), "run": str(run.path), "search_command": run.manifest.get("argv"),
            "search_versions": run.manifest.get("versions"), "search_git": run.manifest.get("git"),
            "export_command": argv, "export_versions": package_versions(), "export_git": git_revision(),
            "dense_teacher": {k: v for k, v in (dense_teacher_metrics or {}).items() if k in ("val_accuracy", "test_accuracy")},
            "val_samples": len(splits.val)}
