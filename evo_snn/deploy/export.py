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
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from tqdm.auto import tqdm

from evo_snn.atomic import DISK_ERRNOS, atomic_write_bytes, json_default
from evo_snn.state.checkpoint import SPARSE_SUFFIX, load_sparse_state, save_sparse_state
from evo_snn.cli import show_progress
from evo_snn.config import Config
from evo_snn.data import FrameSet, Splits
from evo_snn.evaluation.fitness import FitnessContext, GenomeFitness, with_epochs
from evo_snn.structure.genome import Genome
from evo_snn.models import build_model
from evo_snn.names import UnsafeNameError, plain_name
from evo_snn.analysis.pareto import ENERGY_LAYER_METRICS, ENERGY_METRICS
from evo_snn.structure.pruning import apply_masks, prunable_layers, sparse_copy, weight_sparsity
from evo_snn.state.rundir import RunDir, git_revision, now_iso, package_versions, save_state_dict
from evo_snn.state.store import StudentStore
from evo_snn.training.train import accuracy

EXIT_USAGE = 2
PICKS = ("knee", "max-accuracy", "min-energy", "sparsity>=X", "uid=UID")
ENERGY_UNITS = {"energy_pj": " pJ", "energy_fraction": " (of the bound with every synapse active at every step)", "effective_acs": " ACs",
                "effective_macs": " MACs", "synops": " dense SynOps", "spikes": " spikes", "firing_rate": " spikes/neuron/step"}
# the energy metric --pick min-energy minimises: the estimate in pJ per sample (evo_snn.evaluation.energy)
ENERGY_KEYS = ("energy_pj",)


class ExportError(RuntimeError):
    """An export cannot be made (bad pick, missing metric or file, unavailable format); the message says why and what to do."""


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
    (individuals with ``fitness`` and ``metrics``, and ``uid``), in (accuracy, sparsity)
    whatever ``search.objectives`` are (``nsga.objective_value``)."""
    from evo_snn.front import objective_value

    pts = np.array([[objective_value(ind, "accuracy"), objective_value(ind, "sparsity")] for ind in front])
    best = max(range(len(front)), key=lambda i: (pts[i, 0], pts[i, 1]))
    roles: dict[str, list[str]] = {}
    roles.setdefault(front[best].uid, []).append("best_accuracy")
    roles.setdefault(front[knee_index(pts)].uid, []).append("knee")
    return roles


def energy_key(metrics: dict) -> str | None:
    """The energy metric of an evaluation's metrics (the first of ``ENERGY_KEYS`` that is a
    number), or None when the fitness recorded none."""
    return next((k for k in ENERGY_KEYS if isinstance(metrics.get(k), (int, float))), None)


def parse_pick(text: str) -> tuple[str, float | str | None]:
    """``--pick`` text -> (kind, argument): ('knee', None), ('max-accuracy', None),
    ('min-energy', None), ('sparsity', 0.8) for ``sparsity>=0.8``, ('uid', '04-0053') for
    ``uid=04-0053``. raises ExportError naming the accepted forms."""
    t = text.strip()
    if t in ("knee", "max-accuracy", "min-energy"):
        return t, None
    m = re.fullmatch(r"sparsity\s*>=\s*([0-9]*\.?[0-9]+)", t)
    if m and 0.0 <= float(m.group(1)) <= 1.0:
        return "sparsity", float(m.group(1))
    if t.startswith("uid=") and len(t) > 4:
        return "uid", t[4:]
    expected = f"--pick {text!r}: expected one of {', '.join(PICKS)} (X a fraction in [0, 1])"
    if re.fullmatch(r"sparsity\s*", t):  # the shell took '>=0.8' of an unquoted sparsity>=0.8 as a redirection
        raise ExportError(f"{expected}. An unquoted --pick sparsity>=0.8 reaches the program as 'sparsity' (the shell "
                          "reads '>=0.8' as a redirection and writes a file named '=0.8'): quote it, "
                          "--pick 'sparsity>=0.8'")
    if re.fullmatch(r"sparsity\s*(>|=|=>|==)\s*[0-9.]*", t):
        raise ExportError(f"{expected}; write the threshold with '>=' and quote it, --pick 'sparsity>=0.8'")
    raise ExportError(expected)


def choose_member(records: list[dict], pick: str) -> dict:
    """The record chosen by ``pick`` among ``records`` (``pick_member`` without the note;
    a note, when there is one, goes to stderr)."""
    record, note = pick_member(records, pick)
    if note:
        print(f"note: {note}", file=sys.stderr)
    return record


def pick_member(records: list[dict], pick: str) -> tuple[dict, str | None]:
    """(record chosen by ``pick`` among ``records``, note or None). ``records``: archive
    records, ``uid`` and ``metrics`` with validation ``accuracy`` and ``sparsity`` fractions,
    optionally an energy metric. knee: ``knee_index`` of (accuracy, sparsity); max-accuracy:
    highest accuracy, ties to the sparser; min-energy: lowest energy, ties to the more
    accurate; sparsity>=X: highest accuracy among members at least X sparse, ties to the
    sparser; when no member is that sparse, the nearest one, the sparsest (ties to the more
    accurate), and the note says so; uid=U: that member. Test accuracy never enters.
    raises ExportError (empty front, no energy metric, unknown uid)."""
    kind, arg = parse_pick(pick)
    if not records:
        raise ExportError("the run's front is empty (no successful evaluation yet)")
    acc = [float(r["metrics"]["accuracy"]) for r in records]
    sp = [float(r["metrics"]["sparsity"]) for r in records]
    idx = range(len(records))
    if kind == "knee":
        return records[knee_index(np.column_stack([acc, sp]))], None
    if kind == "max-accuracy":
        return records[max(idx, key=lambda i: (acc[i], sp[i]))], None
    if kind == "min-energy":
        keys = {energy_key(r["metrics"]) for r in records}
        if None in keys:
            raise ExportError("--pick min-energy needs an energy metric, and this run's evaluations recorded none "
                              f"(looked for {', '.join(ENERGY_KEYS)}); run the search with energy counting, or pick "
                              "knee, max-accuracy, sparsity>=X or uid=UID")
        key = min(keys)
        return records[min(idx, key=lambda i: (float(records[i]["metrics"][key]), -acc[i]))], None
    if kind == "sparsity":
        ok = [i for i in idx if sp[i] >= arg - 1e-9]
        if not ok:  # the nearest member: the sparsest, ties to the more accurate
            i = max(idx, key=lambda i: (sp[i], acc[i]))
            return records[i], (f"--pick {pick}: no front member is that sparse; picked the nearest, the sparsest "
                                f"member {records[i]['uid']} (sparsity {sp[i]:.4f}, validation accuracy {acc[i]:.4f})")
        return records[max(ok, key=lambda i: (acc[i], sp[i]))], None
    for r in records:
        if r["uid"] == arg:
            return r, None
    raise ExportError(f"--pick uid={arg}: not on the run's front; its members: {', '.join(r['uid'] for r in records)}")


def export_member(run: RunDir, uid: str, roles: list[str], genome: Genome, metrics: dict, student_state: dict,
                  dense_teacher: nn.Module, model_args: tuple, test: FrameSet, layers, *, out_root: Path | None = None,
                  context: dict | None = None, nir: bool = False) -> dict:
    """Write ``<out_root or run.exported>/<uid>/`` (see the module docstring); returns the
    metrics written.

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
    ``evo_snn.nir`` is missing or cannot map a layer).
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
    ctx = dict(context or {})
    model_cfg, frame_shape, num_classes = model_args
    sparse_teacher = sparse_copy(dense_teacher, genome.mask_dict())
    device = next(dense_teacher.parameters()).device
    student = build_model(model_cfg, frame_shape, num_classes).to(device)
    student.load_state_dict(student_state)
    student.eval()
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
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        tmp.mkdir()
        save_state_dict(tmp / "teacher.pt", sparse_teacher.state_dict())
        save_state_dict(tmp / "student.pt", student.state_dict())
        masks = genome.mask_dict()
        save_sparse_state(tmp / f"student{SPARSE_SUFFIX}", student.state_dict(), masks)
        save_sparse_state(tmp / f"teacher{SPARSE_SUFFIX}", sparse_teacher.state_dict(), masks)
        genome.save(tmp)
        if nir:
            write_nir = _nir_writer()
            try:
                write_nir(student, tuple(frame_shape), tmp / "student.nir")
            except (ValueError, TypeError, NotImplementedError, KeyError) as e:
                raise ExportError(f"NIR export of {uid} failed: {e}") from e
        sizes = {p.name: p.stat().st_size for p in sorted(tmp.iterdir()) if p.is_file()}
        record["file_bytes"] = sizes
        atomic_write_bytes(tmp / "metrics.json", (json.dumps(record, indent=2, default=json_default) + "\n").encode())
        atomic_write_bytes(tmp / "MODEL_CARD.md", model_card(record).encode())
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


def _nir_writer():
    """``write_nir(student, frame_shape, path)`` of ``evo_snn.deploy.nir_export`` (the NIR graph
    writer); raises ExportError when it cannot be imported (module or the ``nir`` /
    ``nirtorch`` packages missing: ``pip install -e ".[deploy]"``)."""
    try:
        from evo_snn.deploy.nir_export import write_nir
    except ImportError as e:
        raise ExportError(f"NIR export not available: evo_snn.deploy.nir_export.write_nir cannot be imported ({e}); "
                          'install the nir and nirtorch packages (pip install -e ".[deploy]")') from e
    return write_nir


def _fmt(x, digits: int = 4) -> str:
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return "-" if x is None else str(x)


def model_card(rec: dict) -> str:
    """MODEL_CARD.md of an export record (``export_member``'s metrics.json): data set, T,
    neuron, surrogate, per-layer sparsity, validation and test accuracy, SynOps / energy
    ("not measured" when the fitness recorded none), retraining, command lines, versions."""
    cfg = rec.get("config") or {}
    model = rec["model_args"]["model"]
    frame = rec["model_args"]["frame_shape"]
    data, kd = cfg.get("data", {}), cfg.get("kd", {})
    neuron = model.get("neuron", "?").upper()
    if model.get("neuron") in ("lif", "plif"):
        neuron += f" (tau {model.get('tau')})"
    reset = "soft reset (subtract the threshold)" if model.get("v_reset") is None else f"hard reset to {model.get('v_reset')}"
    classes = data.get("classes") or []
    dt = rec.get("dense_teacher") or {}
    retrained = rec.get("final_epochs")
    lines = [f"# Model card: sparse SNN student `{rec['uid']}`", "",
             f"A sparse spiking student from an evo_snn NSGA-II structure search (run `{rec.get('run', '?')}`), "
             f"chosen by `{', '.join(rec.get('roles', []))}` on validation metrics; the test split was measured once, at export.", "",
             "## Model", "", "| | |", "| --- | --- |",
             f"| data set | {cfg.get('dataset', '?')}, {rec['model_args']['num_classes']} classes"
             + (f" ({', '.join(map(str, classes[:12]))}{', ...' if len(classes) > 12 else ''})" if classes else "") + " |",
             f"| input | `x_seq: [T, N, C, H, W]`, frames [T, C, H, W] = {frame}"
             + (f", events split by {data.get('split_by')}" if data.get("split_by") else "") + " |",
             f"| time steps T | {frame[0]} |",
             f"| architecture | `{model.get('name')}` (channels {model.get('channels')}, hidden {model.get('hidden')}, "
             f"width {model.get('width')}, dropout {model.get('dropout')}) |",
             f"| neuron | {neuron}, threshold {model.get('v_threshold')}, {reset}, detach_reset {model.get('detach_reset')} |",
             f"| surrogate gradient | {model.get('surrogate')} |",
             f"| knowledge distillation | mode `{kd.get('mode', rec.get('kd_mode'))}`, alpha {kd.get('alpha')}, "
             f"temperature {kd.get('temperature')}, {kd.get('epochs')} epochs per evaluation |",
             "| retraining | " + (f"{retrained:g} KD epochs from the genome (masks kept, seed of the member) before the test"
                                   if retrained else "none: the student trained during the search") + " |",
             "", "## Accuracy (fractions)", "",
             "| | student | sparse teacher | dense teacher |", "| --- | --- | --- | --- |",
             f"| validation, at selection | {_fmt(rec.get('accuracy'))} | {_fmt(rec.get('teacher_accuracy'))} | {_fmt(dt.get('val_accuracy'))} |"]
    if retrained:
        lines.append(f"| validation, after retraining | {_fmt(rec.get('retrained_val_accuracy'))} | | |")
    lines += [f"| test (once, here) | {_fmt(rec.get('test_accuracy'))} | {_fmt(rec.get('teacher_test_accuracy'))} | "
              f"{_fmt(dt.get('test_accuracy'))} |", "",
              f"Validation samples: {rec.get('val_samples', '?')}; test samples: {rec.get('test_samples', '?')}.", "",
              "## Sparsity", "", f"Overall: {_fmt(rec.get('test_sparsity'))} of the prunable weights are zero "
              f"(genome: {_fmt(rec.get('genome_sparsity'))}).", "",
              "| layer | weight shape | weights | zeros | sparsity |", "| --- | --- | --- | --- | --- |"]
    for name, s in (rec.get("exported_layer_sparsity") or {}).items():
        shape = rec.get("layer_shapes", {}).get(name, [])
        n = int(np.prod(shape)) if shape else 0
        lines.append(f"| `{name}` | {shape} | {n} | {round(s * n)} | {s:.4f} |")
    lines += ["", "## SynOps and energy", ""]
    energy = [k for k in ENERGY_METRICS if isinstance(rec.get(k), (int, float))]
    if energy:
        lines += [f"Per sample (one inference of T = {frame[0]} time steps), counted on the validation split "
                  f"({rec.get('energy_measured_on', 'the student trained in the search')}), NeuroBench definitions "
                  "(`evo_snn.evaluation.energy`); energy = E_AC x effective ACs + E_MAC x effective MACs.", "",
                  "| metric | value |", "| --- | --- |"]
        lines += [f"| {k} | {rec[k]:.6g}{ENERGY_UNITS.get(k, '')} |" for k in energy]
        for title, keys in (("connection layer", ("layer_synops", "layer_effective_ops")),
                            ("neuron layer", ("layer_spikes", "layer_firing_rate"))):
            cols = {k.removeprefix("layer_"): rec[k] for k in keys if isinstance(rec.get(k), dict) and rec[k]}
            if not cols:
                continue
            names = list(dict.fromkeys(n for d in cols.values() for n in d))
            lines += ["", f"| {title} | " + " | ".join(cols) + " |", "| --- |" + " --- |" * len(cols)]
            for n in names:
                lines.append(f"| `{n}` | " + " | ".join(f"{d[n]:.6g}" if isinstance(d.get(n), (int, float)) else "-"
                                                        for d in cols.values()) + " |")
    else:
        lines.append("**Not measured**: this run's fitness recorded no spike counts, SynOps or energy estimate "
                     "(runs made before `evo_snn.evaluation.energy`).")
    sizes = rec.get("file_bytes") or {}
    lines += ["", "## Files", "", "| file | bytes | content |", "| --- | --- | --- |"]
    for name, what in (("student.pt", "student, dense state_dict (`torch.load(..., weights_only=True)`)"),
                       (f"student{SPARSE_SUFFIX}", "student as packed masks + kept values (`evo_snn.state.checkpoint.load_sparse_state`)"),
                       ("teacher.pt", "sparse teacher, dense state_dict"),
                       (f"teacher{SPARSE_SUFFIX}", "sparse teacher as packed masks + kept values"),
                       ("student.nir", "student as a NIR graph (`nir.read`)"),
                       ("genome.json", "genome: layers, prune ratios, key"), ("masks.npz", "packed bool masks (True = kept)")):
        if name in sizes:
            lines.append(f"| `{name}` | {sizes[name]} | {what} |")
    lines.append("| `metrics.json` | | everything on this card, machine-readable |")
    lines += ["", "## Use", "", "```python", "from evo_snn import load_exported",
              "student, teacher, info = load_exported(\"PATH/TO/THIS/FOLDER\")  # masks attached: fine-tuning keeps zeros",
              "logits = student(x_seq)  # x_seq: [T, N, C, H, W]; call spikingjelly.activation_based.functional.reset_net(student) after each batch",
              "```", "", "## Provenance", "",
              f"- search command: `{' '.join(map(str, rec.get('search_command') or ['?']))}`",
              f"- export command: `{' '.join(map(str, rec.get('export_command') or ['?']))}`",
              f"- exported at {rec.get('exported_at')}; search git {(rec.get('search_git') or {}).get('sha')}, "
              f"export git {(rec.get('export_git') or {}).get('sha')}"
              + (" (dirty)" if (rec.get("export_git") or {}).get("dirty") else ""), "",
              "| package | search | export |", "| --- | --- | --- |"]
    sv, ev = rec.get("search_versions") or {}, rec.get("export_versions") or {}
    for k in sorted(set(sv) | set(ev)):
        lines.append(f"| {k} | {sv.get(k, '-')} | {ev.get(k, '-')} |")
    return "\n".join(lines) + "\n"


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
                            context=context)
        exported.append(rec)
        tqdm.write(f"exported {uid} ({', '.join(r)}): val acc {rec['accuracy']:.3f}, test acc {rec['test_accuracy']:.3f}, "
                   f"sparsity {rec['sparsity']:.3f} -> {run.exported / uid}")
    for old in run.exported.iterdir():  # a resumed run may choose other members than before
        if old.is_dir() and old.name not in roles:
            shutil.rmtree(old)
    run.write_json("teacher/metrics.json", teacher_metrics)
    tqdm.write(f"dense teacher: test accuracy {teacher_metrics['test_accuracy']:.3f}")
    return exported


def load_exported(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, nn.Module, dict]:
    """Rebuild an export (``exported/<uid>/``) as ready-to-run nets: (student, teacher, info).

    student: the model of ``metrics.json``'s ``model_args`` with ``student.pt`` (or, when
    absent, ``student.sparse.npz``) loaded and the genome's masks attached with
    ``torch.nn.utils.prune.custom_from_mask``: its ``weight`` is ``weight_orig *
    weight_mask``, so an optimizer step on a fine-tuned student keeps the pruned weights
    at exactly zero (``evo_snn.structure.pruning.make_permanent`` folds the masks back into plain
    weights). Eval mode, trainable. teacher: the sparse teacher, frozen
    (``requires_grad_(False)``), eval mode. Both take ``x_seq: [T, N, C, H, W]`` (float,
    T, C, H, W = ``info['model_args']['frame_shape']``) and return ``[N, num_classes]``
    logits; call ``spikingjelly.activation_based.functional.reset_net`` after every batch.
    info: the metrics.json record plus ``path``, ``genome`` (``Genome``) and ``masks``
    ({layer: bool array, True = kept}).

    raises FileNotFoundError naming a missing file; ValueError when metrics.json lacks
    ``model_args`` (an export of an older version: export it again with
    ``python -m evo_snn.export RUN_DIR --pick uid=<uid>``) or when a weight is non-zero
    where its mask prunes.
    """
    d = Path(path)
    meta_path = d / "metrics.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"{meta_path} not found; pass an exported/<uid>/ folder of evo_snn.deploy.export")
    info = json.loads(meta_path.read_text())
    if "model_args" not in info:
        raise ValueError(f"{meta_path} has no model_args (exported by an older evo_snn); export the member again with "
                         f"python -m evo_snn.export RUN_DIR --pick uid={info.get('uid', '<uid>')}")
    args = info["model_args"]
    model_cfg = Config.from_dict({"model": args["model"]}).model
    frame_shape, num_classes = tuple(int(s) for s in args["frame_shape"]), int(args["num_classes"])
    genome = Genome.load(d)
    masks = genome.mask_dict()

    def state_of(stem: str) -> dict:
        dense, sparse = d / f"{stem}.pt", d / f"{stem}{SPARSE_SUFFIX}"
        if dense.is_file():
            return torch.load(dense, map_location="cpu", weights_only=True)
        if sparse.is_file():
            return load_sparse_state(sparse)[0]
        raise FileNotFoundError(f"{dense} (or {sparse.name}) not found")

    nets = []
    for stem in ("student", "teacher"):
        net = build_model(model_cfg, frame_shape, num_classes)
        state = state_of(stem)
        net.load_state_dict(state)
        for name, m in masks.items():
            w = state[name + ".weight"].numpy()
            if np.any(w[~m] != 0):
                raise ValueError(f"{d / (stem + '.pt')}: {name}.weight is non-zero where the genome's mask prunes it")
        nets.append(net.to(device).eval())
    student, teacher = nets
    apply_masks(student, masks)
    teacher.requires_grad_(False)
    info.update(path=str(d), genome=genome, masks=masks)
    return student, teacher, info


# ---------------------------------------------------------------- CLI
CLI_DESCRIPTION = """\
Export one member of a search's Pareto front: choose it on validation metrics, retrain it
if asked, measure it once on the test split and write RUN_DIR/exported/<uid>/ (or
DIR/<uid>/ with --out). The folder is written under a temporary name and renamed into
place, so a failure leaves no half-written export. It holds:

  teacher.pt, student.pt     the sparse teacher and the student (plain state_dicts)
  *.sparse.npz               the same weights as packed masks + kept values
  genome.json, masks.npz     the genome (per-layer prune ratios and masks)
  metrics.json               validation and test metrics, model arguments, provenance
  MODEL_CARD.md              the same for people
  student.nir                with --nir: the student as a NIR graph

Quote the --pick expression, or the shell reads '>=' as a redirection:

  python -m evo_snn.export RUN_DIR --pick 'sparsity>=0.8' --retrain-epochs 5
  python -m evo_snn.export RUN_DIR --pick knee

Reload an export in Python with evo_snn.load_exported("RUN_DIR/exported/<uid>").
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m evo_snn.export", description=CLI_DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory of evo_snn.search.run (with checkpoints/)")
    p.add_argument("--pick", required=True, metavar="PICK",
                   help="which front member, chosen on validation metrics: knee | max-accuracy | min-energy | "
                   "'sparsity>=X' (the most accurate member at least X sparse; when none is, the sparsest, with a "
                   "note) | uid=UID")
    p.add_argument("--retrain-epochs", type=float, default=0.0, metavar="N",
                   help="retrain the chosen genome N KD epochs (masks kept, its own seed) before the single test "
                   "measurement, as search.final_epochs does (default 0: export the student trained in the search)")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="write DIR/<uid>/ instead of RUN_DIR/exported/<uid>/ (needed while the search is still running)")
    p.add_argument("--nir", action="store_true", help="also write the student as a NIR graph, student.nir")
    p.add_argument("--data-root", default=None, metavar="PATH", help="data root (default: the one recorded in manifest.json)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def export_run(run_dir: str | Path, pick: str, retrain_epochs: float = 0.0, out: str | Path | None = None,
               nir: bool = False, data_root: str | None = None, progress: bool = True,
               argv: list[str] | None = None) -> dict:
    """Choose a member of a run's front by ``pick`` (``choose_member``; validation metrics
    of the last checkpoint's archive), retrain it for ``retrain_epochs`` KD epochs when >
    0 (``baselines.Comparison.evaluate``: the final-retraining code path), export it with
    its single test measurement (``export_member``) and return the record.

    Without ``out`` the export goes into ``run_dir/exported/`` under the run's lock
    (``RunDir.lock``, held for the export); with ``out`` the run is only read.

    raises ExportError (bad pick, no energy metric, NIR unavailable, a running search
    without ``out``, retraining failed), and ConfigError, DatasetFormatError,
    RunDirError, CheckpointError, TeacherLoadError from loading the run.
    """
    from evo_snn.state.rundir import RunDirError

    parse_pick(pick)
    if retrain_epochs < 0:
        raise ExportError(f"--retrain-epochs {retrain_epochs:g}: must be >= 0")
    if nir:
        _nir_writer()  # fail before any work
    path = Path(run_dir)
    if not (path / "config.json").is_file():
        raise RunDirError(f"{path / 'config.json'} not found; RUN_DIR must be a run directory of evo_snn.search.run")
    run = RunDir(path)  # not RunDir.open: no folder is made in the run
    try:
        run.manifest = json.loads((path / "manifest.json").read_text()) if (path / "manifest.json").is_file() else {}
    except ValueError as e:
        raise RunDirError(f"{path / 'manifest.json'}: not readable JSON ({e})") from e
    if out is None:  # writing into the run: be its one writer (a running search or --resume holds run.lock)
        try:
            run.lock()
        except RunDirError as e:
            raise ExportError(f"{path} is still being searched ({e}); pass --out DIR to export from its last "
                              "checkpoint without writing into the run") from e
    try:
        return _export_locked(run, pick, retrain_epochs, out, nir, data_root, progress, argv)
    finally:
        run.unlock()


def _export_locked(run: RunDir, pick: str, retrain_epochs: float, out, nir: bool, data_root, progress: bool, argv) -> dict:
    # the run's fitness, reloaded as the baselines do (data, teacher, checkpoint)
    from evo_snn.analysis.baselines import Comparison
    from evo_snn.state.checkpoint import load_checkpoint

    ckpt = load_checkpoint(run.checkpoints, verify_students=False)  # only the exported member's student is read
    records = [r for r in ckpt.state["archive"] if r.get("status") != "failed"]
    chosen, note = pick_member(records, pick)
    if note:
        print(f"note: {note}", file=sys.stderr)
    uid = chosen["uid"]
    tqdm.write(f"picked {uid} ({pick}): validation accuracy {chosen['metrics']['accuracy']:.4f}, "
               f"sparsity {chosen['metrics']['sparsity']:.4f} (generation {ckpt.gen} archive of {len(records)})")
    cmp = Comparison(run, data_root=data_root, workers=1, progress=progress, verify_students=False)
    try:
        try:
            member = next((m for m in cmp.search_members(uids={uid}) if m.uid == uid), None)
        except KeyError:
            member = None
        if member is None:  # a running search wrote a newer checkpoint in between
            raise ExportError(f"{uid} left the archive in {run.checkpoints} (the running search moved on); try again")
        metrics, state = dict(member.metrics), member.student_state
        if retrain_epochs > 0:  # select on validation, retrain, test once
            res = cmp.evaluate([(member.genome, member.seed)], epochs=retrain_epochs, desc="retraining")[0]
            if isinstance(res, Exception):
                raise ExportError(f"retraining {uid} failed: {type(res).__name__}: {res}") from res
            state = res.student_state
            metrics = retrained_metrics(metrics, res.metrics, retrain_epochs)
        teacher_metrics = json.loads((run.teacher / "metrics.json").read_text()) if (run.teacher / "metrics.json").is_file() else {}
        context = run_context(run, cmp.cfg, cmp.splits, teacher_metrics, argv)
        model_args = (cmp.cfg.model, cmp.splits.frame_shape, cmp.splits.num_classes)
        roles = [pick if not note else f"{pick} (nearest)"]
        previous = (Path(out) if out is not None else run.exported) / uid / "metrics.json"
        if previous.is_file():  # exported before (e.g. as the run's knee): keep its roles
            try:
                roles = list(dict.fromkeys([*(json.loads(previous.read_text()).get("roles") or []), *roles]))
            except ValueError:
                pass
        rec = export_member(run, uid, roles, member.genome, metrics, state, cmp.teacher, model_args, cmp.splits.test,
                            cmp.layers, out_root=None if out is None else Path(out), context=context, nir=nir)
    finally:
        cmp.close()
    rec["export_dir"] = str((Path(out) if out is not None else run.exported) / uid)
    return rec


def main(argv: list[str] | None = None) -> int:
    from evo_snn.state.checkpoint import CheckpointError
    from evo_snn.config import ConfigError
    from evo_snn.data import DatasetFormatError
    from evo_snn.state.rundir import RunDirError, sigterm_as_interrupt
    from evo_snn.training.teacher import TeacherLoadError

    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    try:
        with sigterm_as_interrupt():
            rec = export_run(args.run_dir, args.pick, args.retrain_epochs, args.out, args.nir, args.data_root,
                             progress=show_progress(args), argv=["python", "-m", "evo_snn.export", *argv])
    except (ExportError, ConfigError, DatasetFormatError, RunDirError, CheckpointError, TeacherLoadError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as e:
        if e.errno not in DISK_ERRNOS:
            raise
        print(f"error: {e.strerror or e} while exporting{f' {e.filename}' if e.filename else ''}; nothing was "
              "exported (free some space and run the same command again)", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted (nothing exported)", file=sys.stderr)
        return 130
    val = rec["student_val_accuracy"]
    print(f"exported {rec['uid']} -> {rec['export_dir']}: validation accuracy {val:.4f}"
          + (f" (after {rec['final_epochs']:g} retraining epochs; {rec['accuracy']:.4f} at selection)" if rec.get("final_epochs") else "")
          + f", test accuracy {rec['test_accuracy']:.4f}, sparsity {rec['test_sparsity']:.4f}")
    return 0
