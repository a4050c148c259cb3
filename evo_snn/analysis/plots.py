"""Run plots (matplotlib, Agg backend): Pareto front, hypervolume, per-layer sparsity,
overlaid fronts of several runs (``evo_snn.analysis.pareto``) and the reproduction figure."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.colors import BoundaryNorm  # noqa: E402
from matplotlib.ticker import EngFormatter, FormatStrFormatter, LogLocator, MaxNLocator, NullFormatter, NullLocator  # noqa: E402

from evo_snn.evaluation.fidelity import full_rows  # noqa: E402
from evo_snn.state.rundir import atomic_write_bytes  # noqa: E402

METHOD_COLOURS = {"search": "crimson", "global": "tab:blue", "uniform": "tab:green", "random": "tab:orange",
                  "global_long": "tab:purple", "lamp": "tab:olive", "lamp_long": "tab:brown", "erk": "tab:cyan",
                  "erk_long": "teal", "energy_aware": "gold", "energy_aware_long": "darkgoldenrod"}


def _save(fig, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def _generation_colours(gens: pd.Series):
    """A discrete viridis colour per generation and a norm whose colorbar ticks are the
    integer generations (at most ~10 ticks for long runs)."""
    lo, hi = int(gens.min()), int(gens.max())
    n = hi - lo + 1
    cmap = plt.get_cmap("viridis", n)
    norm = BoundaryNorm(np.arange(lo - 0.5, hi + 1.5), n)
    step = max(1, int(np.ceil(n / 10)))
    return cmap, norm, list(range(lo, hi + 1, step))


def _label_exported(ax, exported: list[dict]) -> None:
    """A black-edged star and ``uid (roles)`` beside each exported member (its recorded
    validation accuracy and sparsity)."""
    for i, rec in enumerate(exported):
        if rec.get("accuracy") is None or rec.get("sparsity") is None:
            continue
        x, y = float(rec["sparsity"]), float(rec["accuracy"])
        ax.scatter([x], [y], marker="*", s=160, color="gold", edgecolors="black", zorder=5)
        roles = ", ".join(rec.get("roles") or [])
        ax.annotate(f"{rec['uid']}" + (f" ({roles})" if roles else ""), (x, y), xytext=(-8, 10 + 12 * (i % 2)),
                    textcoords="offset points", ha="right", fontsize=8,
                    bbox=dict(boxstyle="round,pad=0.2", fc="white", ec="0.6", alpha=0.85),
                    arrowprops=dict(arrowstyle="-", color="0.4", lw=0.8))


def pareto_figure(evaluations: pd.DataFrame, pareto: pd.DataFrame, dense_teacher_accuracy: float | None,
                  exported: list[dict], baselines: pd.DataFrame | None = None):
    """The figure of pareto.png (returned open; ``plot_run`` saves and closes it).

    Every evaluated genome coloured by its generation (a discrete colour bar with
    integer ticks), the validation front (crimson), each baseline's validation front,
    the dense teacher's validation accuracy, and the exported members as gold stars
    labelled ``uid (roles)``. Columns as in ``plot_run``.
    """
    fig, ax = plt.subplots(figsize=(7, 5))
    evaluations = full_rows(evaluations)
    if len(evaluations):
        cmap, norm, ticks = _generation_colours(evaluations["gen"])
        sc = ax.scatter(evaluations["sparsity"], evaluations["accuracy"], c=evaluations["gen"], cmap=cmap, norm=norm,
                        s=18, alpha=0.7, label="evaluated")
        cb = fig.colorbar(sc, ax=ax, label="generation", ticks=ticks)
        cb.ax.yaxis.set_major_formatter(FormatStrFormatter("%d"))
    front = pareto.sort_values("sparsity")
    if len(front):  # with energy as an objective the archive is a 3-D front: its (accuracy, sparsity) front is the line
        from evo_snn.front import nondominated

        flat = front.iloc[nondominated(front[["accuracy", "sparsity"]].to_numpy())]
        others = front.drop(index=flat.index)
        if len(others):
            ax.scatter(others["sparsity"], others["accuracy"], s=50, facecolors="none", edgecolors="crimson",
                       label=f"archive, non-dominated with energy ({len(others)})")
        front = flat
    ax.plot(front["sparsity"], front["accuracy"], "o-", color="crimson", label=f"Pareto front ({len(front)})")
    if baselines is not None:
        for method, part in baselines[baselines["method"] != "search"].groupby("method", sort=False):
            sel = part[part["selected"].astype(bool) & part["val_accuracy"].notna()].sort_values("sparsity")
            ax.plot(sel["sparsity"], sel["val_accuracy"], "s--", ms=4, color=METHOD_COLOURS.get(method), label=f"{method} baseline")
    if dense_teacher_accuracy is not None:
        ax.axhline(dense_teacher_accuracy, ls="--", color="gray", label=f"dense teacher ({dense_teacher_accuracy:.3f})")
    _label_exported(ax, exported)
    ax.set_xlabel("student sparsity (fraction of zero weights)")
    ax.set_ylabel("student validation accuracy")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    return fig


def _readable_log_ticks(axis, lo: float, hi: float) -> None:
    """Labels on a log axis that do not overlap: major ticks at the decades, minor ones at
    2 and 5 times them, all in engineering notation (2k, 5k, 10k, 20k); only the decades
    are labelled once the axis spans more than two of them, and a span under half a decade
    gets a few evenly spaced round values (matplotlib's default labels the minor ticks as
    2x10^3, 3x10^3, ..., which overlap on a short axis)."""
    decades = float(np.log10(hi / lo)) if lo > 0 and hi > lo else 0.0  # the data's span, lo..hi
    if decades < 0.5:  # too short for 1-2-5 ticks to land on it: a few evenly spaced round values
        axis.set_major_locator(MaxNLocator(nbins=4))
        axis.set_major_formatter(EngFormatter(sep=""))
        axis.set_minor_locator(NullLocator())
        return
    axis.set_major_locator(LogLocator(base=10))
    axis.set_major_formatter(EngFormatter(sep=""))
    axis.set_minor_locator(LogLocator(base=10, subs=(2.0, 5.0) if decades <= 2 else tuple(range(2, 10))))
    axis.set_minor_formatter(EngFormatter(sep="") if decades <= 2 else NullFormatter())


def energy_figure(evaluations: pd.DataFrame, pareto: pd.DataFrame, exported: list[dict]):
    """The figure of energy.png (returned open): validation accuracy against the effective
    ACs per sample (``evo_snn.evaluation.energy``, NeuroBench definitions; log scale) of every
    evaluated genome, coloured by its sparsity, with the archive's members (crimson rings)
    and the exported members (gold stars). Columns: accuracy, sparsity, effective_acs."""
    fig, ax = plt.subplots(figsize=(7, 5))
    ok = evaluations[evaluations["effective_acs"].notna()]
    sc = ax.scatter(ok["effective_acs"], ok["accuracy"], c=ok["sparsity"], cmap="viridis", vmin=0, vmax=1, s=18,
                    alpha=0.7, label="evaluated")
    fig.colorbar(sc, ax=ax, label="sparsity")
    if "effective_acs" in pareto.columns:
        ax.scatter(pareto["effective_acs"], pareto["accuracy"], s=60, facecolors="none", edgecolors="crimson",
                   label=f"Pareto archive ({len(pareto)})")
    for rec in exported:
        if rec.get("effective_acs") is not None:
            ax.scatter([rec["effective_acs"]], [rec["accuracy"]], marker="*", s=160, color="gold", edgecolors="black", zorder=5)
            ax.annotate(rec["uid"], (rec["effective_acs"], rec["accuracy"]), xytext=(-6, 8), textcoords="offset points",
                        ha="right", fontsize=8)
    if (ok["effective_acs"] > 0).all() and len(ok):
        ax.set_xscale("log")
        _readable_log_ticks(ax.xaxis, float(ok["effective_acs"].min()), float(ok["effective_acs"].max()))
    ax.set_xlabel("effective ACs per sample (validation)")
    ax.set_ylabel("student validation accuracy")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return fig


def plot_run(plots_dir: Path, evaluations: pd.DataFrame, pareto: pd.DataFrame, generations: pd.DataFrame,
             dense_teacher_accuracy: float, exported: list[dict], baselines: pd.DataFrame | None = None) -> None:
    """Write pareto.png, hypervolume.png, (if any member was exported) layer_sparsity.png and
    (when evaluations has an ``effective_acs`` column: the fitness counted energy) energy.png.

    evaluations: columns gen, accuracy, sparsity (status 'ok' rows); pareto: uid,
    accuracy, sparsity; generations: gen, hypervolume; accuracies/sparsities are fractions.
    exported: the exported members' metrics.json records (uid, roles, accuracy,
    sparsity, layer_sparsity): labelled on pareto.png. baselines: ``evo_snn.analysis.baselines``'
    table (method, selected, sparsity, val_accuracy): each baseline's validation front
    is drawn on pareto.png in its own colour. Rows of a multi-fidelity search's rung 0
    (``fidelity`` < 1) are left out of every figure (``fidelity.full_rows``).
    """
    evaluations = full_rows(evaluations)
    _save(pareto_figure(evaluations, pareto, dense_teacher_accuracy, exported, baselines), plots_dir / "pareto.png")
    if "effective_acs" in evaluations.columns and evaluations["effective_acs"].notna().any():
        _save(energy_figure(evaluations, pareto, exported), plots_dir / "energy.png")

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(generations["gen"], generations["hypervolume"], "o-")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("generation")
    ax.set_ylabel("hypervolume (ref.: search.hv_reference)")
    ax.grid(alpha=0.3)
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


def plot_fronts(path: Path, fronts: dict[str, pd.DataFrame], teacher_accuracy: dict[str, float | None] | None = None) -> None:
    """Overlaid validation fronts of several runs (``python -m evo_snn.pareto --plot``).

    fronts: {label: frame with columns accuracy, sparsity (fractions) and optionally
    uid and exported (roles, '' when not exported)}; each run gets its own colour, its
    front drawn sparse to dense, its exported members starred. teacher_accuracy:
    {label: dense teacher validation accuracy} drawn as a dashed line of the run's
    colour. Written atomically.
    """
    fig, ax = plt.subplots(figsize=(7, 5))
    colours = plt.get_cmap("tab10")
    for i, (label, front) in enumerate(fronts.items()):
        colour = colours(i % 10)
        f = front.sort_values("sparsity")
        ax.plot(f["sparsity"], f["accuracy"], "o-", ms=4, color=colour, label=f"{label} ({len(f)})")
        if "exported" in f.columns:
            ex = f[f["exported"].fillna("").astype(str) != ""]
            ax.scatter(ex["sparsity"], ex["accuracy"], marker="*", s=140, color=colour, edgecolors="black", zorder=5)
            if len(fronts) == 1:
                _label_exported(ax, [{"uid": r.uid, "accuracy": r.accuracy, "sparsity": r.sparsity,
                                      "roles": [r.exported]} for r in ex.itertuples()])
        acc = (teacher_accuracy or {}).get(label)
        if acc is not None and np.isfinite(acc):
            ax.axhline(acc, ls="--", lw=1, color=colour, alpha=0.7)
    ax.set_xlabel("student sparsity (fraction of zero weights)")
    ax.set_ylabel("student validation accuracy")
    ax.set_xlim(0, 1)
    ax.grid(alpha=0.3)
    ax.set_title("validation fronts (dashed: dense teacher; stars: exported)", fontsize=9)
    ax.legend(loc="lower left", fontsize=8)
    _save(fig, Path(path))


def plot_reproduction(summary: pd.DataFrame, path: Path) -> None:
    """reproduce.png: student test accuracy per KD variant vs teacher prune ratio, and the
    pruned teacher's, mean ± std over seeds (``evo_snn.analysis.reproduce.summarise`` columns)."""
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


def plot_comparison(path: Path, table: pd.DataFrame, dense_teacher_accuracy: float | None, val: bool,
                    dense_teacher_energy: float | None = None) -> None:
    """Fronts of the search and each baseline (``evo_snn.analysis.baselines``): accuracy against
    sparsity of each method's selected members, as a staircase from sparse to dense; and,
    when the table has energy columns, a second panel: accuracy against the energy fraction
    (estimated energy per sample over the dense bound) of each method's energy-front members.

    table: baselines.csv columns method, selected, sparsity, val_accuracy, test_accuracy
    (fractions); for the second panel also selected_energy and test_energy_fraction /
    val_energy_fraction. val: plot validation accuracy (all evaluated points faint, the front
    bold) instead of test accuracy (selected members only). dense_teacher_energy: the dense
    teacher's energy fraction (a star on the second panel with its accuracy).
    """
    col = "val_accuracy" if val else "test_accuracy"
    ecol = "val_energy_fraction" if val else "test_energy_fraction"
    energy = ecol in table and "selected_energy" in table and table[ecol].notna().any()
    fig, axes = plt.subplots(1, 2 if energy else 1, figsize=(12, 4.5) if energy else (6.5, 4.5), squeeze=False)
    ax = axes[0, 0]
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
    if energy:
        ax = axes[0, 1]
        for method, part in table.groupby("method", sort=False):
            colour = METHOD_COLOURS.get(method)
            if val:
                ok = part[part[col].notna() & part[ecol].notna()]
                ax.scatter(ok[ecol], ok[col], s=10, alpha=0.25, color=colour)
            sel = part[part["selected_energy"].fillna(False).astype(bool) & part[col].notna() & part[ecol].notna()]
            sel = sel.sort_values(ecol)
            ax.plot(sel[ecol], sel[col], "o-", ms=4, color=colour, label=f"{method} ({len(sel)})")
        if dense_teacher_accuracy is not None and dense_teacher_energy is not None:
            ax.plot([dense_teacher_energy], [dense_teacher_accuracy], "*", ms=10, color="gray", label="dense teacher")
        ax.set_xlabel("energy fraction (estimated energy per sample / dense bound)")
        ax.set_ylabel(f"student {'validation' if val else 'test'} accuracy")
        # spiking nets spend a few % of the dense bound: the axis ends just past the largest value drawn
        drawn = [*table.loc[table[col].notna(), ecol].dropna(), *([dense_teacher_energy] if dense_teacher_energy else [])]
        ax.set_xlim(0, min(1.0, 1.15 * max(drawn)) if drawn and max(drawn) > 0 else 1.0)
        ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    _save(fig, path)
