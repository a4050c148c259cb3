"""``python -m evo_snn.pareto RUN_DIR [RUN_DIR ...]``: inspect and compare the fronts of runs.

Read-only: reads a run's ``config.json``, ``manifest.json``, ``pareto.csv``,
``evaluations.jsonl``, ``generations.csv``, ``teacher/metrics.json`` and
``exported/*/metrics.json``; writes nothing into a run and takes no lock, so it can
look at a search that is still running (the front is the archive as of the last
completed generation, ``pareto.csv``; evaluations of the generation in progress are
counted as ``pending``; a line cut short by the running writer is skipped).

One run: its front, one row per member (uid, generation, validation accuracy,
sparsity, the sparse teacher's validation accuracy, energy metrics when the fitness
recorded any, and the roles of exported members), with the dense teacher's accuracy
for reference. Several runs: one row per run (data set, KD mode, seed, status,
generation, evaluations, hypervolume of the (accuracy, sparsity) front with reference
(0, 0), best validation accuracy at sparsity >= 0.5 / 0.8 / 0.9). ``--plot OUT.png``
draws the fronts overlaid. Only validation accuracy is shown for members: the test
split is measured once, at export, and never used to compare members.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from evo_snn.atomic import read_jsonl
from evo_snn.evaluation.fidelity import full_rows

EXIT_USAGE = 2
SUMMARY_SPARSITIES = (0.5, 0.8, 0.9)
# scalar metrics of the energy counters (``evo_snn.evaluation.energy.EnergyReport.metrics``, per sample,
# measured on validation during fitness), and their per-layer dicts
ENERGY_METRICS = ("energy_pj", "energy_fraction", "effective_acs", "effective_macs", "synops", "spikes", "firing_rate",
                  "activation_sparsity")
ENERGY_LAYER_METRICS = ("layer_synops", "layer_effective_ops", "layer_spikes", "layer_firing_rate")
FRONT_ENERGY_COLUMNS = ("energy_pj", "effective_acs", "synops", "firing_rate")  # shown in the front table


class RunReadError(RuntimeError):
    """A path is not a readable run directory; the message names the file."""


@dataclass
class RunView:
    """What a run directory says about its search, read without writing anything.

    front: one row per front member (uid, gen, accuracy, sparsity, teacher_accuracy,
    energy columns, ``exported``: roles joined by '+', '' when not exported);
    evaluations: every parsed line of evaluations.jsonl; generations: generations.csv
    (empty before generation 0 completes); pending: evaluations of the generation in
    progress; skipped_lines: lines of evaluations.jsonl that were not JSON (a line
    being written).
    """

    path: Path
    config: dict
    manifest: dict
    front: pd.DataFrame
    evaluations: pd.DataFrame
    generations: pd.DataFrame
    teacher: dict
    exported: dict[str, dict] = field(default_factory=dict)
    pending: int = 0
    skipped_lines: int = 0

    @property
    def label(self) -> str:
        return self.path.name

    @property
    def dataset(self) -> str | None:
        return self.config.get("dataset")

    @property
    def kd_mode(self) -> str | None:
        return (self.config.get("kd") or {}).get("mode")

    @property
    def seed(self):
        return (self.config.get("search") or {}).get("seed")

    @property
    def last_gen(self) -> int | None:
        return int(self.generations["gen"].max()) if len(self.generations) else None

    @property
    def energy_columns(self) -> list[str]:
        return [c for c in FRONT_ENERGY_COLUMNS if c in self.front.columns]


def _read_json(path: Path, required: bool) -> dict:
    if not path.is_file():
        if required:
            raise RunReadError(f"{path} not found; RUN_DIR must be a run directory of evo_snn.search.run")
        return {}
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError) as e:  # UnicodeDecodeError is a ValueError
        raise RunReadError(f"{path}: not readable JSON ({e})") from e
    if not isinstance(value, dict):
        raise RunReadError(f"{path}: a JSON {type(value).__name__}, expected an object (the file has been altered)")
    return value


def _read_csv(path: Path) -> pd.DataFrame:
    if not path.is_file() or path.stat().st_size == 0:
        return pd.DataFrame()
    try:
        return pd.read_csv(path)
    except (OSError, ValueError) as e:
        raise RunReadError(f"{path}: not a readable CSV ({e})") from e


def _nondominated_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Rows of ``df`` not dominated in (accuracy, sparsity), both maximised (``nsga.nondominated``)."""
    from evo_snn.front import nondominated

    if df.empty:
        return df
    return df.iloc[nondominated(df[["accuracy", "sparsity"]].to_numpy(float))]


def read_run(path: str | Path) -> RunView:
    """Read a run directory (finished or in progress) without writing into it.

    raises RunReadError when ``path`` is not a directory, has no config.json, or a file
    is not readable JSON / CSV.
    """
    path = Path(path)
    if not path.is_dir():
        raise RunReadError(f"run directory {path} not found")
    config = _read_json(path / "config.json", required=True)
    manifest = _read_json(path / "manifest.json", required=False)
    teacher = _read_json(path / "teacher" / "metrics.json", required=False)
    values, skipped = read_jsonl(path / "evaluations.jsonl")
    rows = [row for row in values if isinstance(row, dict)]
    evaluations = pd.DataFrame(rows)
    generations = _read_csv(path / "generations.csv")
    front = _read_csv(path / "pareto.csv")
    ok = evaluations[evaluations["status"] == "ok"] if "status" in evaluations else evaluations
    ok = full_rows(ok)  # a multi-fidelity search's rung-0 rows never describe a front member
    if front.empty and not ok.empty:  # generation 0 not complete yet: the front of what was evaluated
        front = _nondominated_rows(ok)[["uid", "accuracy", "sparsity", "teacher_accuracy", "gen"]].reset_index(drop=True)
    last = int(generations["gen"].max()) if len(generations) else -1
    pending = int((evaluations["gen"] > last).sum()) if "gen" in evaluations else 0
    exported = {}
    for m in sorted((path / "exported").glob("*/metrics.json")):
        try:
            exported[m.parent.name] = json.loads(m.read_text())
        except (OSError, ValueError):
            continue  # an export being written
    if not front.empty:
        energy = [c for c in FRONT_ENERGY_COLUMNS if c in ok.columns and c not in front.columns]
        if energy:
            front = front.merge(ok.drop_duplicates("uid")[["uid", *energy]], on="uid", how="left")
        front["exported"] = ["+".join(exported[u].get("roles") or ["exported"]) if u in exported else "" for u in front["uid"]]
        front = front.sort_values("sparsity", ignore_index=True)
    return RunView(path, config, manifest, front, evaluations, generations, teacher, exported, pending, skipped)


def run_summary(view: RunView) -> dict:
    """One row of the comparison table: data set, KD mode, seed, objectives, status, last
    completed generation, evaluations (ok + failed lines), front size, ``hypervolume`` of the
    front in (accuracy, sparsity) with reference (0, 0) (comparable across runs whatever
    their objectives), ``search_hypervolume`` (generations.csv: the run's own objectives and
    reference point), best validation accuracy at sparsity >= 0.5 / 0.8 / 0.9 (NaN when no
    member is that sparse), dense teacher validation accuracy."""
    from evo_snn.analysis.fronts import accuracy_at_sparsity
    from evo_snn.front import points_hypervolume

    pts = view.front[["accuracy", "sparsity"]].to_numpy(float) if len(view.front) else np.zeros((0, 2))
    ev = view.evaluations
    n_evals = int(ev["status"].isin(["ok", "failed"]).sum()) if "status" in ev else 0
    objectives = (view.config.get("search") or {}).get("objectives") or ["accuracy", "sparsity"]
    gens = view.generations
    row = {"run": view.label, "dataset": view.dataset, "kd_mode": view.kd_mode, "seed": view.seed,
           "objectives": ",".join(objectives), "status": view.manifest.get("status", "unknown"),
           "generation": view.last_gen, "evaluations": n_evals, "pending": view.pending, "front": len(view.front),
           "hypervolume": points_hypervolume(pts),
           "search_hypervolume": float(gens["hypervolume"].iloc[-1]) if "hypervolume" in gens and len(gens) else None}
    for s in SUMMARY_SPARSITIES:
        row[f"acc@sparsity>={s:g}"] = accuracy_at_sparsity(pts, s)
    row["teacher_val_accuracy"] = view.teacher.get("val_accuracy")
    return row


def front_table(view: RunView) -> pd.DataFrame:
    """The front of one run as printed: uid, gen, accuracy (validation), sparsity, the sparse
    teacher's validation accuracy, energy columns, exported roles; sorted by sparsity. The
    sparse teacher's accuracy is the search's, or for an exported member that the search did
    not measure (``search.measure_teacher`` false) its export's (metrics.json)."""
    cols = ["uid", "gen", "accuracy", "sparsity", "teacher_accuracy", *view.energy_columns, "exported"]
    front = view.front[[c for c in cols if c in view.front.columns]].copy()
    if "teacher_accuracy" in front:
        at_export = pd.to_numeric(front["uid"].map(lambda u: (view.exported.get(u) or {}).get("teacher_accuracy")))
        front["teacher_accuracy"] = pd.to_numeric(front["teacher_accuracy"]).fillna(at_export)
    return front.rename(columns={"accuracy": "val_accuracy", "teacher_accuracy": "sparse_teacher_val_accuracy"})


def describe(view: RunView) -> str:
    """The header line of one run: data set, KD mode, seed, status, progress, dense teacher."""
    t = view.teacher
    teacher = "dense teacher: " + ", ".join(f"{k.split('_')[0]} accuracy {t[k]:.4f}" for k in ("val_accuracy", "test_accuracy")
                                           if isinstance(t.get(k), (int, float)))
    gen = view.last_gen
    progress = "no generation completed yet" if gen is None else f"generation {gen} completed"
    if view.pending:
        progress += f", {view.pending} evaluations of the next one so far"
    model = (view.config.get("model") or {}).get("name")
    return (f"{view.path}: {view.dataset}, model {model}, kd {view.kd_mode}, seed {view.seed}, status "
            f"{view.manifest.get('status', 'unknown')}; {progress}; front {len(view.front)} members; "
            + (teacher if t else "dense teacher: not measured yet"))


def _to_json(obj) -> str:
    return json.dumps(obj, indent=2, default=lambda x: x.item() if hasattr(x, "item") else str(x), allow_nan=True)


def render(views: list[RunView], fmt: str) -> str:
    """The text ``main`` prints: for one run its front, for several one row per run;
    ``fmt``: 'table' (pandas, with a header line per run), 'csv' or 'json'."""
    if len(views) == 1:
        v = views[0]
        table = front_table(v)
        if fmt == "csv":
            return table.to_csv(index=False)
        if fmt == "json":
            return _to_json({"run": str(v.path), "summary": run_summary(v), "teacher": v.teacher,
                             "front": table.to_dict(orient="records")})
        if "sparse_teacher_val_accuracy" in table and table["sparse_teacher_val_accuracy"].isna().all():
            table = table.drop(columns="sparse_teacher_val_accuracy")  # not measured (search.measure_teacher false)
        with pd.option_context("display.width", 200, "display.max_columns", 30, "display.max_rows", 500):
            body = table.to_string(index=False, float_format=lambda x: f"{x:.4f}") if len(table) else "(empty front)"
        return describe(v) + "\n" + body + "\n"
    rows = [run_summary(v) for v in views]
    if fmt == "csv":
        return _integer_columns(pd.DataFrame(rows)).to_csv(index=False)
    if fmt == "json":
        return _to_json(rows)
    return summary_table(rows)


CLI_DESCRIPTION = """\
Inspect and compare the Pareto fronts of search runs.

Read-only: it reads a run's config.json, manifest.json, pareto.csv, evaluations.jsonl,
generations.csv, teacher/metrics.json and exported/*/metrics.json, writes nothing into
the run and takes no lock, so it can also look at a search that is still running (the
front as of the last completed generation; evaluations of the generation in progress
are counted as pending).

One run: its front, one row per member (uid, generation, validation accuracy, sparsity,
the sparse teacher's validation accuracy, energy metrics when the search counted them,
the roles of exported members), below a line with the dense teacher's accuracy.
Several runs: one row per run (data set, KD mode, seed, status, last generation,
evaluations, front size, hypervolume of the (accuracy, sparsity) front with reference
(0, 0), best validation accuracy at sparsity >= 0.5 / 0.8 / 0.9, dense teacher);
--format csv or json gives every column. Only validation accuracy is shown: the test
split is measured once, at export.

  python -m evo_snn.pareto RUN_DIR
  python -m evo_snn.pareto RUN_A RUN_B RUN_C --plot fronts.png
"""

# the multi-run table as printed: (column of run_summary, printed name); csv / json keep every column
TABLE_COLUMNS = (("run", "run"), ("dataset", "dataset"), ("kd_mode", "kd"), ("seed", "seed"), ("status", "status"),
                 ("generation", "gen"), ("evaluations", "evals"), ("front", "front"), ("hypervolume", "hypervolume"),
                 *((f"acc@sparsity>={s:g}", f"acc@{s:g}") for s in SUMMARY_SPARSITIES),
                 ("teacher_val_accuracy", "teacher"))
TABLE_WIDTH = 120  # the multi-run table's widest line; the run column is shortened to fit
INTEGER_COLUMNS = ("seed", "generation", "evaluations", "pending", "front")


def _integer_columns(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with its ``INTEGER_COLUMNS`` as nullable integers (a run without a completed
    generation would otherwise turn the column into floats: 3.0)."""
    table = table.copy()
    for c in INTEGER_COLUMNS:
        if c in table:
            table[c] = pd.array([None if v is None or (isinstance(v, float) and np.isnan(v)) else int(v)
                                 for v in table[c]], dtype="Int64")
    return table


def _shorten(text: str, width: int) -> str:
    """``text`` cut to ``width`` characters in the middle ('...'), keeping its start and end."""
    if len(text) <= width:
        return text
    head = (width - 3) // 2
    return text[:head] + "..." + text[len(text) - (width - 3 - head):]


def _cell(value) -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)):
        return "-"
    if isinstance(value, (float, np.floating)):
        return f"{value:.4f}"
    return str(value)


def summary_table(rows: list[dict], width: int = TABLE_WIDTH) -> str:
    """The multi-run table as printed: the columns of ``TABLE_COLUMNS`` (plus ``pending`` when
    a run has some, ``objectives`` when a run's differ from accuracy,sparsity), integer
    generations and counts, fractions to 4 decimals, '-' for none; one space between columns,
    the run names left-aligned and shortened in the middle ('...', at least 12 characters kept)
    so that no line is wider than ``width``."""
    table = _integer_columns(pd.DataFrame(rows))
    cols = [c for c, _ in TABLE_COLUMNS]
    if "pending" in table and table["pending"].fillna(0).gt(0).any():
        cols.insert(cols.index("front"), "pending")
    if "objectives" in table and table["objectives"].ne("accuracy,sparsity").any():
        cols.insert(cols.index("status"), "objectives")
    cols = [c for c in cols if c in table]
    names = dict(TABLE_COLUMNS)
    header = [names.get(c, c) for c in cols]
    body = [[_cell(v) for v in row] for row in table[cols].itertuples(index=False)]
    widths = [max(len(h), *(len(r[i]) for r in body)) for i, h in enumerate(header)]
    if cols and cols[0] == "run":
        over = sum(widths) + len(widths) - 1 - width
        if over > 0:
            widths[0] = max(12, len(header[0]), widths[0] - over)
            for r in body:
                r[0] = _shorten(r[0], widths[0])

    def line(cells):
        return " ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return "\n".join([line(header), *(line(r) for r in body)]) + "\n"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m evo_snn.pareto", description=CLI_DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories of evo_snn.search.run (finished or running)")
    p.add_argument("--format", choices=("table", "csv", "json"), default="table",
                   help="output: a table with a header line (default), or CSV or JSON with every column")
    p.add_argument("--plot", metavar="OUT.png", default=None,
                   help="also draw the fronts (overlaid for several runs) into this PNG (written atomically)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    if args.plot is not None and not str(args.plot).lower().endswith(".png"):
        print(f"error: --plot {args.plot}: give a .png file name", file=sys.stderr)
        return EXIT_USAGE
    try:
        views = [read_run(p) for p in args.run_dirs]
    except RunReadError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    labels = [v.label for v in views]
    if len(set(labels)) < len(labels):  # same folder names in different places: use the paths
        labels = [str(v.path) for v in views]
    sys.stdout.write(render(views, args.format))
    for v in views:
        if v.skipped_lines:
            print(f"note: {v.path / 'evaluations.jsonl'}: {v.skipped_lines} line(s) not JSON (being written?), skipped",
                  file=sys.stderr)
    if args.plot:
        from evo_snn.analysis.plots import plot_fronts

        fronts = {lab: v.front for lab, v in zip(labels, views) if len(v.front)}
        teacher = {lab: v.teacher.get("val_accuracy") for lab, v in zip(labels, views)}
        try:
            plot_fronts(Path(args.plot), fronts, teacher)
        except OSError as e:
            print(f"error: cannot write {args.plot}: {e}", file=sys.stderr)
            return EXIT_USAGE
        print(f"wrote {args.plot}", file=sys.stderr)
    return 0
