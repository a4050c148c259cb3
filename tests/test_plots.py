"""evo_snn.analysis.plots: each figure is a valid PNG, written atomically, with the methods' colours drawn."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_rgb
from PIL import Image

from evo_snn import atomic


from evo_snn.analysis import plots
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _frames():
    evaluations = pd.DataFrame({"gen": [0, 0, 1, 1], "accuracy": [0.6, 0.8, 0.7, 0.9], "sparsity": [0.9, 0.5, 0.8, 0.3]})
    pareto = pd.DataFrame({"uid": ["a", "b", "c"], "accuracy": [0.9, 0.7, 0.6], "sparsity": [0.3, 0.8, 0.9]})
    generations = pd.DataFrame({"gen": [0, 1], "hypervolume": [0.4, 0.55]})
    exported = [{"uid": "a", "roles": ["best_accuracy"], "layer_sparsity": {"features.0": 0.2, "classifier.1": 0.4}},
                {"uid": "c", "roles": ["sparsest", "knee"], "layer_sparsity": {"features.0": 0.85, "classifier.1": 0.95}}]
    return evaluations, pareto, generations, exported


def _baselines():
    return pd.DataFrame({
        "method": ["search", "search", "global", "global", "global"],
        "selected": [True, True, True, True, False],
        "sparsity": [0.3, 0.8, 0.5, 0.9, 0.7],
        "val_accuracy": [0.9, 0.7, 0.75, 0.5, 0.4],
        "test_accuracy": [0.88, 0.69, 0.7, 0.45, np.nan],
    })


def _image(path) -> np.ndarray:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    with Image.open(path) as im:
        im.verify()  # a complete, uncorrupted PNG
    with Image.open(path) as im:
        assert im.format == "PNG"
        return np.asarray(im.convert("RGB"))


def _has_colour(img: np.ndarray, colour: str, tol: int = 3) -> bool:
    rgb = np.array([round(255 * c) for c in to_rgb(colour)])
    return bool((np.abs(img.astype(int) - rgb).max(axis=-1) <= tol).any())


def _record_writes(monkeypatch):
    """Route plots' atomic writer through a recorder (and still write)."""
    written = []

    def record(path, data):
        written.append(path.name)
        atomic.atomic_write_bytes(path, data)

    monkeypatch.setattr(plots, "atomic_write_bytes", record)
    return written


def test_plot_run_writes_three_valid_pngs_atomically(tmp_path, monkeypatch):
    written = _record_writes(monkeypatch)
    evaluations, pareto, generations, exported = _frames()
    plt.close("all")
    plots.plot_run(tmp_path, evaluations, pareto, generations, 0.95, exported, baselines=_baselines())
    assert written == ["pareto.png", "hypervolume.png", "layer_sparsity.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hypervolume.png", "layer_sparsity.png", "pareto.png"]
    assert plt.get_fignums() == []  # every figure closed
    front = _image(tmp_path / "pareto.png")
    assert front.shape[0] > 200 and front.shape[1] > 300
    assert _has_colour(front, "crimson") and _has_colour(front, plots.METHOD_COLOURS["global"])  # search and baseline fronts
    assert not _has_colour(front, plots.METHOD_COLOURS["uniform"])  # no uniform baseline in the table
    assert _has_colour(_image(tmp_path / "hypervolume.png"), "tab:blue")
    _image(tmp_path / "layer_sparsity.png")


def test_plot_run_without_exports_or_baselines_and_replacing_old_plots(tmp_path):
    evaluations, pareto, generations, _ = _frames()
    (tmp_path / "pareto.png").write_bytes(b"old")
    plots.plot_run(tmp_path, evaluations, pareto, generations, 0.95, [])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hypervolume.png", "pareto.png"]  # no tmp files left
    front = _image(tmp_path / "pareto.png")
    assert _has_colour(front, "crimson") and not _has_colour(front, plots.METHOD_COLOURS["global"])


@pytest.mark.parametrize("val", [True, False])
def test_plot_comparison_draws_each_method_and_writes_atomically(tmp_path, monkeypatch, val):
    written = _record_writes(monkeypatch)
    out = tmp_path / "plots" / "comparison.png"  # the folder is made
    plots.plot_comparison(out, _baselines(), 0.95 if val else None, val=val)
    assert written == ["comparison.png"]
    assert [p.name for p in out.parent.iterdir()] == ["comparison.png"]
    img = _image(out)
    assert _has_colour(img, plots.METHOD_COLOURS["search"]) and _has_colour(img, plots.METHOD_COLOURS["global"])
    assert not _has_colour(img, plots.METHOD_COLOURS["random"])


def test_a_failed_replace_keeps_the_previous_png(tmp_path, monkeypatch):
    out = tmp_path / "comparison.png"
    plots.plot_comparison(out, _baselines(), 0.95, val=False)
    before = out.read_bytes()

    def failing_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(atomic.os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        plots.plot_comparison(out, _baselines(), 0.95, val=True)
    assert out.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["comparison.png"]  # no tmp file left behind
    assert plt.get_fignums() == []  # the figure was closed before the write


def test_pareto_figure_has_integer_generation_ticks_and_labels_the_exported_members():
    evaluations, pareto, _, exported = _frames()
    evaluations = pd.concat([evaluations, pd.DataFrame({"gen": [5], "accuracy": [0.5], "sparsity": [0.95]})])
    exported = [{**exported[0], "accuracy": 0.9, "sparsity": 0.3}, {**exported[1], "accuracy": 0.6, "sparsity": 0.9}]
    fig = plots.pareto_figure(evaluations, pareto, 0.95, exported)
    try:
        ax, cbar = fig.axes
        ticks = cbar.get_yticks()
        assert list(ticks) == [0, 1, 2, 3, 4, 5]  # one tick per generation, none between
        assert [t.get_text() for t in cbar.get_yticklabels()] == ["0", "1", "2", "3", "4", "5"]
        labels = sorted(t.get_text() for t in ax.texts)
        assert labels == ["a (best_accuracy)", "c (sparsest, knee)"]
        positions = sorted(tuple(t.xy) for t in ax.texts)
        assert positions == [(0.3, 0.9), (0.9, 0.6)]  # each label points at its member
    finally:
        plt.close(fig)


def test_plot_fronts_overlays_runs_in_their_own_colours(tmp_path):
    a = pd.DataFrame({"uid": ["x", "y"], "accuracy": [0.9, 0.6], "sparsity": [0.3, 0.8], "exported": ["knee", ""]})
    b = pd.DataFrame({"uid": ["z"], "accuracy": [0.7], "sparsity": [0.5]})
    plots.plot_fronts(tmp_path / "f.png", {"a": a, "b": b}, {"a": 0.95, "b": None})
    img = _image(tmp_path / "f.png")
    assert _has_colour(img, "tab:blue") and _has_colour(img, "tab:orange") and not _has_colour(img, "tab:green")
    assert [p.name for p in tmp_path.iterdir()] == ["f.png"]


@pytest.mark.parametrize("lo,hi", [(2.1e3, 2.9e4), (2.1e4, 2.9e4), (1.9e4, 1.9e7), (5e3, 4e5)])
def test_energy_axis_labels_do_not_overlap(lo, hi):
    # matplotlib's default labels the minor ticks of a short log axis 2x10^3, 3x10^3, ...: they overlapped
    rng = np.random.default_rng(0)
    acs = np.geomspace(lo, hi, 30)
    ev = pd.DataFrame({"effective_acs": acs, "accuracy": rng.uniform(0.4, 0.9, 30), "sparsity": rng.uniform(0, 1, 30)})
    fig = plots.energy_figure(ev, ev.iloc[:5], [])
    fig.canvas.draw()
    ax = fig.axes[0]
    renderer = fig.canvas.get_renderer()
    shown = [t for t in [*ax.xaxis.get_majorticklabels(), *ax.xaxis.get_minorticklabels()]
             if t.get_visible() and t.get_text() and lo <= t.get_position()[0] * (1 + 1e-9) and t.get_position()[0] <= hi * 1.3]
    boxes = sorted((t.get_window_extent(renderer) for t in shown), key=lambda b: b.x0)
    plt.close(fig)
    assert len(boxes) >= 2
    assert all(a.x1 <= b.x0 for a, b in zip(boxes, boxes[1:]))
    assert all("$" not in t.get_text() for t in shown)  # no mathtext 2x10^3 labels
