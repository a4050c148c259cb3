"""MODEL_CARD.md of an export: the metrics.json record of ``evo_snn.deploy.writer.export_member``
as Markdown for people.

``model_card`` joins the sections (model, accuracy, sparsity, SynOps and energy, files,
use, provenance), one function each; each returns its lines, the blank line before its
heading included.
"""

from __future__ import annotations

import numpy as np

from evo_snn.analysis.pareto import ENERGY_METRICS
from evo_snn.state.checkpoint import SPARSE_SUFFIX

ENERGY_UNITS = {"energy_pj": " pJ", "energy_fraction": " (of the bound with every synapse active at every step)", "effective_acs": " ACs",
                "effective_macs": " MACs", "synops": " dense SynOps", "spikes": " spikes", "firing_rate": " spikes/neuron/step"}
# the files of an export the card lists, when written, in this order
CARD_FILES = (("student.pt", "student, dense state_dict (`torch.load(..., weights_only=True)`)"),
              (f"student{SPARSE_SUFFIX}", "student as packed masks + kept values (`evo_snn.state.checkpoint.load_sparse_state`)"),
              ("teacher.pt", "sparse teacher, dense state_dict"),
              (f"teacher{SPARSE_SUFFIX}", "sparse teacher as packed masks + kept values"),
              ("student.nir", "student as a NIR graph (`nir.read`)"),
              ("genome.json", "genome: layers, prune ratios, key"), ("masks.npz", "packed bool masks (True = kept)"))


def _fmt(x, digits: int = 4) -> str:
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return "-" if x is None else str(x)


def model_card(rec: dict) -> str:
    """MODEL_CARD.md of an export record (``export_member``'s metrics.json): data set, T,
    neuron, surrogate, per-layer sparsity, validation and test accuracy, SynOps / energy
    ("not measured" when the fitness recorded none), retraining, command lines, versions."""
    lines = [*_model_section(rec), *_accuracy_section(rec), *_sparsity_section(rec), *_energy_section(rec),
             *_files_section(rec), *_use_section(), *_provenance_section(rec)]
    return "\n".join(lines) + "\n"


def _model_section(rec: dict) -> list[str]:
    """The title, the summary line and the model table (data, input, T, architecture,
    neuron, surrogate, KD, retraining)."""
    cfg = rec.get("config") or {}
    model = rec["model_args"]["model"]
    frame = rec["model_args"]["frame_shape"]
    data, kd = cfg.get("data", {}), cfg.get("kd", {})
    neuron = model.get("neuron", "?").upper()
    if model.get("neuron") in ("lif", "plif"):
        neuron += f" (tau {model.get('tau')})"
    reset = "soft reset (subtract the threshold)" if model.get("v_reset") is None else f"hard reset to {model.get('v_reset')}"
    classes = data.get("classes") or []
    retrained = rec.get("final_epochs")
    return [f"# Model card: sparse SNN student `{rec['uid']}`", "",
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
                                  if retrained else "none: the student trained during the search") + " |"]


def _accuracy_section(rec: dict) -> list[str]:
    """Validation (at selection, after retraining) and test accuracy of the student, the
    sparse and the dense teacher; the sample counts."""
    dt = rec.get("dense_teacher") or {}
    lines = ["", "## Accuracy (fractions)", "",
             "| | student | sparse teacher | dense teacher |", "| --- | --- | --- | --- |",
             f"| validation, at selection | {_fmt(rec.get('accuracy'))} | {_fmt(rec.get('teacher_accuracy'))} | {_fmt(dt.get('val_accuracy'))} |"]
    if rec.get("final_epochs"):
        lines.append(f"| validation, after retraining | {_fmt(rec.get('retrained_val_accuracy'))} | | |")
    return lines + [f"| test (once, here) | {_fmt(rec.get('test_accuracy'))} | {_fmt(rec.get('teacher_test_accuracy'))} | "
                    f"{_fmt(dt.get('test_accuracy'))} |", "",
                    f"Validation samples: {rec.get('val_samples', '?')}; test samples: {rec.get('test_samples', '?')}."
                    + (" The sparse teacher's validation accuracy was measured at export (`search.measure_teacher` "
                       "false); the genome fixes that net, so the search would have recorded the same number."
                       if rec.get("teacher_accuracy_measured") == "at export" else "")]


def _sparsity_section(rec: dict) -> list[str]:
    """Overall sparsity and the per-layer table (shape, weights, zeros, sparsity)."""
    lines = ["", "## Sparsity", "", f"Overall: {_fmt(rec.get('test_sparsity'))} of the prunable weights are zero "
             f"(genome: {_fmt(rec.get('genome_sparsity'))}).", "",
             "| layer | weight shape | weights | zeros | sparsity |", "| --- | --- | --- | --- | --- |"]
    for name, s in (rec.get("exported_layer_sparsity") or {}).items():
        shape = rec.get("layer_shapes", {}).get(name, [])
        n = int(np.prod(shape)) if shape else 0
        lines.append(f"| `{name}` | {shape} | {n} | {round(s * n)} | {s:.4f} |")
    return lines


def _energy_section(rec: dict) -> list[str]:
    """The per-sample energy metrics and per-layer tables, or "Not measured" when the
    record has none of ``ENERGY_METRICS``."""
    lines = ["", "## SynOps and energy", ""]
    energy = [k for k in ENERGY_METRICS if isinstance(rec.get(k), (int, float))]
    if not energy:
        return lines + ["**Not measured**: this run's fitness recorded no spike counts, SynOps or energy estimate "
                        "(runs made before `evo_snn.evaluation.energy`)."]
    lines += [f"Per sample (one inference of T = {rec['model_args']['frame_shape'][0]} time steps), counted on the "
              f"validation split ({rec.get('energy_measured_on', 'the student trained in the search')}), NeuroBench "
              "definitions (`evo_snn.evaluation.energy`); energy = E_AC x effective ACs + E_MAC x effective MACs.", "",
              "| metric | value |", "| --- | --- |"]
    lines += [f"| {k} | {rec[k]:.6g}{ENERGY_UNITS.get(k, '')} |" for k in energy]
    for title, keys in (("connection layer", ("layer_synops", "layer_effective_ops")),
                        ("neuron layer", ("layer_spikes", "layer_firing_rate"))):
        lines += _layer_table(title, {k.removeprefix("layer_"): rec[k] for k in keys
                                      if isinstance(rec.get(k), dict) and rec[k]})
    return lines


def _layer_table(title: str, cols: dict[str, dict]) -> list[str]:
    """A table of per-layer metrics, one row per layer (in first-seen order), one column
    per metric of ``cols`` ({metric: {layer: value}}; "-" where a layer has none); no
    lines when ``cols`` is empty."""
    if not cols:
        return []
    names = list(dict.fromkeys(n for d in cols.values() for n in d))
    lines = ["", f"| {title} | " + " | ".join(cols) + " |", "| --- |" + " --- |" * len(cols)]
    for n in names:
        lines.append(f"| `{n}` | " + " | ".join(f"{d[n]:.6g}" if isinstance(d.get(n), (int, float)) else "-"
                                                for d in cols.values()) + " |")
    return lines


def _files_section(rec: dict) -> list[str]:
    """The files written (``CARD_FILES`` found in ``file_bytes``) with their sizes."""
    sizes = rec.get("file_bytes") or {}
    lines = ["", "## Files", "", "| file | bytes | content |", "| --- | --- | --- |"]
    lines += [f"| `{name}` | {sizes[name]} | {what} |" for name, what in CARD_FILES if name in sizes]
    lines.append("| `metrics.json` | | everything on this card, machine-readable |")
    return lines


def _use_section() -> list[str]:
    """How to load the export back in Python (``evo_snn.load_exported``)."""
    return ["", "## Use", "", "```python", "from evo_snn import load_exported",
            "student, teacher, info = load_exported(\"PATH/TO/THIS/FOLDER\")  # masks attached: fine-tuning keeps zeros",
            "logits = student(x_seq)  # x_seq: [T, N, C, H, W]; call spikingjelly.activation_based.functional.reset_net(student) after each batch",
            "```"]


def _provenance_section(rec: dict) -> list[str]:
    """Search and export command lines, time, git revisions, package versions."""
    lines = ["", "## Provenance", "",
             f"- search command: `{' '.join(map(str, rec.get('search_command') or ['?']))}`",
             f"- export command: `{' '.join(map(str, rec.get('export_command') or ['?']))}`",
             f"- exported at {rec.get('exported_at')}; search git {(rec.get('search_git') or {}).get('sha')}, "
             f"export git {(rec.get('export_git') or {}).get('sha')}"
             + (" (dirty)" if (rec.get("export_git") or {}).get("dirty") else ""), "",
             "| package | search | export |", "| --- | --- | --- |"]
    sv, ev = rec.get("search_versions") or {}, rec.get("export_versions") or {}
    for k in sorted(set(sv) | set(ev)):
        lines.append(f"| {k} | {sv.get(k, '-')} | {ev.get(k, '-')} |")
    return lines
