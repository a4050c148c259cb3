"""``python -m evo_snn.results DIR [DIR ...]``: mean ± std over seeds of ``comparison.json`` files.

Reads every ``comparison*.json`` (written by ``evo_snn.baselines``) under the given
directories and prints, per (data set, KD mode, final retraining), one row per method:
test hypervolume (reference (0, 0)) and best test accuracy at sparsity >= 0.5 / 0.7 /
0.8 / 0.9 / 0.95 as mean ± std (ddof=1) over seeds, with the evaluations and the
training samples processed (mean per seed). For ``global_matched`` (the search's members
paired with global magnitude pruning at the same sparsity and seed) a line under the table
gives the per-seed paired test-accuracy difference (search minus global) as mean ± std over
seeds, with the pairs the search won and lost in all. A search variant is named after its run
directory, ``<dataset>-s<seed>-<variant>`` (``benchmarks/search_vs_baselines.sh``
names them so); its baselines are listed once per variant that measured them.

``--markdown FILE`` writes the tables as Markdown (for RESULTS.md), atomically.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from .atomic import atomic_write_bytes
from .baselines import FIXED_SPARSITIES

_VARIANT = re.compile(r"-s\d+-(?P<variant>[^/]+)$")


def collect(dirs) -> pd.DataFrame:
    """One row per (comparison file, method): dataset, kd_mode, final_epochs, seed,
    variant, method, test_hv, val_hv, acc_ge_<s> per fixed sparsity, members,
    evaluations, compute_samples. raises ValueError when no file is found."""
    rows = []
    for d in dirs:
        for path in sorted(Path(d).rglob("comparison*.json")):
            doc = json.loads(path.read_text())
            m = _VARIANT.search(path.parent.name)
            variant = m.group("variant") if m else path.parent.name
            for method, s in doc["methods"].items():
                name = f"search ({variant})" if method == "search" else method
                other = doc.get("baseline_kd_mode", doc["kd_mode"])
                if method != "search" and other != doc["kd_mode"]:  # fine-tuned with evo_snn.baselines --kd
                    name = f"{method} (kd={other})"
                rows.append({"dataset": doc["dataset"], "model": doc.get("model"), "kd_mode": doc["kd_mode"],
                             "final_epochs": doc["final_epochs"], "seed": doc["seed"], "method": name,
                             "test_hv": s["test"]["hypervolume"], "val_hv": s["val"]["hypervolume"],
                             **{f"acc_ge_{k}": v for k, v in s["test"]["accuracy_at_sparsity"].items()},
                             "members": s["members"], "evaluations": s["evaluations"],
                             "compute_samples": s["compute_samples"], "test_samples": doc.get("test_samples"),
                             **{f"paired_{k}": s.get("paired", {}).get(k, np.nan) for k in ("mean", "n", "wins", "losses")}})
    if not rows:
        raise ValueError(f"no comparison*.json under {[str(d) for d in dirs]}; run python -m evo_snn.baselines RUN_DIR first")
    # a baseline measured for several variants of one seed is the same measurement: keep one
    return pd.DataFrame(rows).drop_duplicates(["dataset", "kd_mode", "final_epochs", "seed", "method"])


def summarise(rows: pd.DataFrame) -> pd.DataFrame:
    """Mean and std (ddof=1; NaN for one seed) over seeds per (dataset, kd_mode, final_epochs, method)."""
    metrics = ["test_hv"] + [f"acc_ge_{s:g}" for s in FIXED_SPARSITIES]
    keys = ["dataset", "kd_mode", "final_epochs", "method"]
    g = rows.groupby(keys, sort=False)
    out = g[metrics].agg(["mean", "std"])
    out.columns = [f"{a}_{b}" for a, b in out.columns]
    out["seeds"] = g["seed"].nunique()
    out["evaluations"] = g["evaluations"].mean()
    out["compute_samples"] = g["compute_samples"].mean()
    if "paired_mean" in rows:  # global_matched: the paired difference per seed, and the pairs in all
        out["paired_mean"], out["paired_std"] = g["paired_mean"].mean(), g["paired_mean"].std()
        for k in ("n", "wins", "losses"):
            out[f"paired_{k}"] = g[f"paired_{k}"].sum(min_count=1)
    return out.reset_index()


def _pm(mean: float, std: float) -> str:
    if mean is None or np.isnan(mean):
        return "–"
    return f"{mean:.3f}" if std is None or np.isnan(std) else f"{mean:.3f} ± {std:.3f}"


def markdown(summary: pd.DataFrame) -> str:
    """Markdown tables, one per (dataset, kd_mode, final_epochs)."""
    out = []
    for (ds, kd, fe), part in summary.groupby(["dataset", "kd_mode", "final_epochs"], sort=False):
        out.append(f"### {ds}, kd={kd}, final retraining {fe:g} epochs\n")
        head = ["method", "seeds", "test HV"] + [f"acc @ sparsity ≥ {s:g}" for s in FIXED_SPARSITIES] + ["evaluations", "training samples"]
        out.append("| " + " | ".join(head) + " |")
        out.append("|" + "---|" * len(head))
        for _, r in part.iterrows():
            cells = [r["method"], str(int(r["seeds"])), _pm(r["test_hv_mean"], r["test_hv_std"])]
            cells += [_pm(r[f"acc_ge_{s:g}_mean"], r[f"acc_ge_{s:g}_std"]) for s in FIXED_SPARSITIES]
            cells += [f"{r['evaluations']:.0f}", f"{r['compute_samples']:,.0f}"]
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
        for _, r in part.iterrows():
            if not np.isnan(r.get("paired_mean", np.nan)):
                out.append(f"Search minus `{r['method']}`, paired test accuracy at the same sparsity and seed: "
                           f"{_pm(r['paired_mean'], r['paired_std'])} (mean over seeds of each seed's mean); search ahead "
                           f"in {r['paired_wins']:.0f} and behind in {r['paired_losses']:.0f} of {r['paired_n']:.0f} pairs.\n")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m evo_snn.results", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dirs", nargs="+", metavar="DIR", help="run directories or folders holding them")
    p.add_argument("--markdown", default=None, metavar="FILE", help="also write the tables as Markdown to FILE")
    p.add_argument("--csv", default=None, metavar="FILE", help="also write the per-seed rows as CSV to FILE")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        rows = collect(args.dirs)
    except (ValueError, OSError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    text = markdown(summarise(rows))
    print(text)
    if args.markdown:
        atomic_write_bytes(Path(args.markdown), text.encode())
    if args.csv:
        atomic_write_bytes(Path(args.csv), rows.to_csv(index=False).encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
