"""Run plots (matplotlib, Agg backend): Pareto front, hypervolume, per-layer sparsity,
and the reproduction figure."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from .rundir import atomic_write_bytes  # noqa: E402

METHOD_COLOURS = {"search": "crimson", "global": "tab:blue", "uniform": "tab:green", "random": "tab:orange",
                  "global_long": "tab:purple"}


def _save(fig, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def plot_run(plots_dir: Path, evaluations: pd.DataFrame, pareto: pd.DataFrame, generations: pd.DataFrame,
             dense_teacher_accuracy: float, exported: list[dict], baselines: pd.DataFrame | None = None) -> None:
    """Write pareto.png, hypervolume.png and (if any member was exported) layer_sparsity.png.

    evaluations: columns gen, accuracy, sparsity (status 'ok' rows); pareto: uid,
    accuracy, sparsity; generations: gen, hypervolume; accuracies/sparsities are fractions.
    baselines: ``evo_snn.baselines``' table (method, selected, sparsity, val_accuracy):
    each baseline's validation front is drawn on pareto.png in its own colour.
    """
    fig, ax = plt.subplots(figsize=(6, 4.5))
    sc = ax.scatter(evaluations["sparsity"], evaluations["accuracy"], c=evaluations["gen"], cmap="viridis", s=18, alpha=0.7, label="evaluated")
    fig.colorbar(sc, ax=ax, label="generation")
    front = pareto.sort_values("sparsity")
    ax.plot(front["sparsity"], front["accuracy"], "o-", color="crimson", label="Pareto front")
    if baselines is not None:
        for method, part in baselines[baselines["method"] != "search"].groupby("method", sort=False):
            sel = part[part["selected"].astype(bool) & part["val_accuracy"].notna()].sort_values("sparsity")
            ax.plot(sel["sparsity"], sel["val_accuracy"], "s--", ms=4, color=METHOD_COLOURS.get(method), label=f"{method} baseline")
    ax.axhline(dense_teacher_accuracy, ls="--", color="gray", label="dense teacher")
    ax.set_xlabel("student sparsity (fraction of zero weights)")
    ax.set_ylabel("student validation accuracy")
    ax.legend(loc="lower left", fontsize=8)
    _save(fig, plots_dir / "pareto.png")

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(generations["gen"], generations["hypervolume"], "o-")
    ax.set_xlabel("generation")
    ax.set_ylabel("hypervolume (ref. point (0, 0))")
    _save(fig, plots_dir / "hypervolume.png")

    if exported:
        fig, ax = plt.subplots(figsize=(7, 3.5))
        for rec in exported:
            layers = list(rec["layer_sparsity"])
            ax.plot(range(len(layers)), [rec["layer_sparsity"][n] for n in layers], "o-", label=f"{rec['uid']} ({', '.join(rec['roles'])})")
        ax.set_xticks(range(len(layers)), layers, rotation=45, ha="right")
        ax.set_ylabel("sparsity")
        ax.set_ylim(0, 1)
        ax.legend()
        _save(fig, plots_dir / "layer_sparsity.png")


def plot_reproduction(summary: pd.DataFrame, path: Path) -> None:
    """reproduce.png: student test accuracy per KD variant vs teacher prune ratio, and the
    pruned teacher's, mean ± std over seeds (``evo_snn.reproduce.summarise`` columns)."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for kd, part in summary.groupby("kd", sort=False):
        part = part.sort_values("teacher_ratio")
        ax.errorbar(part["teacher_ratio"], part["student_accuracy_mean"], yerr=part["student_accuracy_std"].fillna(0),
                    marker="o", capsize=3, label=f"student, {kd}")
    t = summary.drop_duplicates("teacher_ratio").sort_values("teacher_ratio")
    ax.errorbar(t["teacher_ratio"], t["teacher_accuracy_mean"], yerr=t["teacher_accuracy_std"].fillna(0),
                ls="--", color="gray", marker="s", capsize=3, label="pruned teacher")
    ax.set_xlabel("teacher prune ratio")
    ax.set_ylabel("test accuracy (mean ± std over seeds)")
    ax.legend(fontsize=8)
    _save(fig, path)


def plot_comparison(path: Path, table: pd.DataFrame, dense_teacher_accuracy: float | None, val: bool) -> None:
    """Fronts of the search and each baseline (``evo_snn.baselines``): accuracy against
    sparsity of each method's selected members, as a staircase from sparse to dense.

    table: baselines.csv columns method, selected, sparsity, val_accuracy, test_accuracy
    (fractions). val: plot validation accuracy (all evaluated points faint, the front
    bold) instead of test accuracy (selected members only).
    """
    col = "val_accuracy" if val else "test_accuracy"
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for method, part in table.groupby("method", sort=False):
        colour = METHOD_COLOURS.get(method)
        if val:
            ok = part[part[col].notna()]
            ax.scatter(ok["sparsity"], ok[col], s=10, alpha=0.25, color=colour)
        sel = part[part["selected"].astype(bool) & part[col].notna()].sort_values("sparsity")
        ax.plot(sel["sparsity"], sel[col], "o-", ms=4, color=colour, label=f"{method} ({len(sel)})")
    if dense_teacher_accuracy is not None:
        ax.axhline(dense_teacher_accuracy, ls="--", color="gray", label="dense teacher")
    ax.set_xlabel("student sparsity (fraction of zero weights)")
    ax.set_ylabel(f"student {'validation' if val else 'test'} accuracy")
    ax.set_xlim(0, 1)
    ax.legend(loc="lower left", fontsize=8)
    _save(fig, path)
