"""``python -m evo_snn.results DIR [DIR ...]``: mean ± std over seeds of ``comparison.json`` files.

Reads every ``comparison*.json`` (written by ``evo_snn.analysis.baselines``) under the given
directories and prints, per (data set, KD mode, final retraining), one row per method:
test hypervolume (reference (0, 0)) and best test accuracy at sparsity >= 0.5 / 0.7 /
0.8 / 0.9 / 0.95 as mean ± std (ddof=1) over seeds, with the evaluations and the
training samples processed (mean per seed). For ``global_matched`` (the search's members
paired with global magnitude pruning at the same sparsity and seed) a line under the table
gives the per-seed paired test-accuracy difference (search minus global) as mean ± std over
seeds, with the pairs the search won and lost in all. ``search_finetuned`` (the search's
validation-chosen members fine-tuned once with the ``_long`` recipe, ``search.finetune_share``
> 0) is a search side like ``search``, named ``search_finetuned (<variant>)``; both are paired
against the best equal-compute baseline. A search variant is named after its run
directory, ``<dataset>-s<seed>-<variant>`` (``benchmarks/search_vs_baselines.sh``
names them so); its baselines are listed once per variant that measured them.

Two fronts (``evo_snn.analysis.baselines``): the table gives the test hypervolume on (accuracy,
sparsity) (``test HV``) and on (accuracy, 1 - energy fraction) (``test HV energy``; the
energy fraction counted on the test pass, reference from the run's
``search.hv_reference['energy']``). Under each table, per search variant and front, the
paired difference in test HV against the best equal-compute baseline of the same seed
(the best of ``global_long``, ``lamp_long``, ``erk_long``, ``energy_aware_long`` among
those measured for that seed, over all of its comparison files with the same final
retraining), as mean ± std (ddof=1) over seeds, with the seeds the search won; the front
``energy_dense_ref`` is the energy front with the dense teacher's validation energy
fraction as the reference (``hypervolume_dense_ref``).

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

from evo_snn.atomic import atomic_write_bytes
from evo_snn.analysis.fronts import FIXED_ENERGY_FRACTIONS, FIXED_SPARSITIES
from evo_snn.analysis.methods import LONG

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
                name = f"{method} ({variant})" if method in ("search", "search_finetuned") else method
                other = doc.get("baseline_kd_mode", doc["kd_mode"])
                if method != "search" and other != doc["kd_mode"]:  # fine-tuned with evo_snn.analysis.baselines --kd
                    name = f"{method} (kd={other})"
                rows.append({"dataset": doc["dataset"], "model": doc.get("model"), "kd_mode": doc["kd_mode"],
                             "final_epochs": doc["final_epochs"], "seed": doc["seed"], "method": name,
                             "test_hv": s["test"]["hypervolume"], "val_hv": s["val"]["hypervolume"],
                             **{f"acc_ge_{k}": v for k, v in s["test"]["accuracy_at_sparsity"].items()},
                             "test_energy_hv": s.get("test_energy", {}).get("hypervolume", np.nan),
                             "val_energy_hv": s.get("val_energy", {}).get("hypervolume", np.nan),
                             "test_energy_hv_dense_ref": s.get("test_energy", {}).get("hypervolume_dense_ref", np.nan),
                             **{f"acc_le_e{k}": s.get("test_energy", {}).get("accuracy_at_energy", {}).get(k, np.nan)
                                for k in (f"{e:g}" for e in FIXED_ENERGY_FRACTIONS)},
                             "energy_members": s.get("energy_members", np.nan),
                             "finetune_share": doc.get("finetune_share", 0.0),
                             "members": s["members"], "evaluations": s["evaluations"],
                             "compute_samples": s["compute_samples"], "test_samples": doc.get("test_samples"),
                             **{f"paired_{k}": s.get("paired", {}).get(k, np.nan) for k in ("mean", "n", "wins", "losses")}})
    if not rows:
        raise ValueError(f"no comparison*.json under {[str(d) for d in dirs]}; run python -m evo_snn.baselines RUN_DIR first")
    # a baseline measured for several variants of one seed is the same measurement: keep one
    return pd.DataFrame(rows).drop_duplicates(["dataset", "kd_mode", "final_epochs", "seed", "method"])


FRONTS = {"sparsity": "test_hv", "energy": "test_energy_hv", "energy_dense_ref": "test_energy_hv_dense_ref"}
"""Front name -> the column of its test hypervolume."""
SEED_KEYS = ["dataset", "kd_mode", "final_epochs", "seed"]


def paired_vs_best(rows: pd.DataFrame) -> pd.DataFrame:
    """Per (dataset, kd_mode, final_epochs, seed, search variant, front): the search's test HV
    minus the best test HV of the equal-compute baselines (``baselines.LONG``, fine-tuned with
    the run's KD mode) measured for the same seed and final retraining: columns front, method
    (the search variant), best (the baseline), search_hv, best_hv, delta. A front without a
    measured baseline (or without energy counts) is left out."""
    out = []
    for key, part in rows.groupby(SEED_KEYS, sort=False):
        base = part[part["method"].isin(LONG)]
        for _, r in part[part["method"].str.startswith("search")].iterrows():
            for front, col in FRONTS.items():
                b = base[base[col].notna()]
                if b.empty or pd.isna(r[col]):
                    continue
                best = b.loc[b[col].idxmax()]
                out.append({**dict(zip(SEED_KEYS, key)), "method": r["method"], "front": front, "best": best["method"],
                            "search_hv": r[col], "best_hv": best[col], "delta": r[col] - best[col]})
    return pd.DataFrame(out, columns=[*SEED_KEYS, "method", "front", "best", "search_hv", "best_hv", "delta"])


def summarise_paired(rows: pd.DataFrame) -> pd.DataFrame:
    """``paired_vs_best`` over seeds, per (dataset, kd_mode, final_epochs, search variant,
    front): delta_mean, delta_std (ddof=1; NaN for one seed), seeds, wins (delta > 0),
    best (the baselines that were best, with how many seeds each)."""
    pairs = paired_vs_best(rows)
    keys = ["dataset", "kd_mode", "final_epochs", "method", "front"]
    if pairs.empty:
        return pd.DataFrame(columns=[*keys, "delta_mean", "delta_std", "seeds", "wins", "best"])
    g = pairs.groupby(keys, sort=False)
    out = g["delta"].agg(delta_mean="mean", delta_std="std", seeds="count")
    out["wins"] = g["delta"].apply(lambda d: int((d > 0).sum()))
    out["best"] = g["best"].apply(lambda b: ", ".join(f"{m} ×{n}" for m, n in b.value_counts().items()))
    return out.reset_index()


def summarise(rows: pd.DataFrame) -> pd.DataFrame:
    """Mean and std (ddof=1; NaN for one seed) over seeds per (dataset, kd_mode, final_epochs, method)."""
    metrics = ["test_hv"] + [f"acc_ge_{s:g}" for s in FIXED_SPARSITIES]
    metrics += [c for c in ["test_energy_hv", "test_energy_hv_dense_ref"] + [f"acc_le_e{e:g}" for e in FIXED_ENERGY_FRACTIONS]
                if c in rows]
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


def markdown(summary: pd.DataFrame, paired: pd.DataFrame | None = None) -> str:
    """Markdown tables, one per (dataset, kd_mode, final_epochs); under each, the lines of
    ``paired`` (``summarise_paired``) of that group."""
    out = []
    energy = "test_energy_hv_mean" in summary
    for (ds, kd, fe), part in summary.groupby(["dataset", "kd_mode", "final_epochs"], sort=False):
        out.append(f"### {ds}, kd={kd}, final retraining {fe:g} epochs\n")
        head = ["method", "seeds", "test HV"] + [f"acc @ sparsity ≥ {s:g}" for s in FIXED_SPARSITIES]
        head += ["test HV energy", "test HV energy (dense-teacher ref)"] if energy else []
        head += ["evaluations", "training samples"]
        out.append("| " + " | ".join(head) + " |")
        out.append("|" + "---|" * len(head))
        for _, r in part.iterrows():
            cells = [r["method"], str(int(r["seeds"])), _pm(r["test_hv_mean"], r["test_hv_std"])]
            cells += [_pm(r[f"acc_ge_{s:g}_mean"], r[f"acc_ge_{s:g}_std"]) for s in FIXED_SPARSITIES]
            cells += [_pm(r[f"{c}_mean"], r[f"{c}_std"]) for c in ("test_energy_hv", "test_energy_hv_dense_ref")] if energy else []
            cells += [f"{r['evaluations']:.0f}", f"{r['compute_samples']:,.0f}"]
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
        if paired is not None and not paired.empty:
            mine = paired[(paired["dataset"] == ds) & (paired["kd_mode"] == kd) & (paired["final_epochs"] == fe)]
            for _, r in mine.iterrows():
                out.append(f"`{r['method']}` minus the best equal-compute baseline of each seed, paired test HV on the "
                           f"{r['front']} front: {_pm(r['delta_mean'], r['delta_std'])} over {int(r['seeds'])} seed(s), "
                           f"search ahead in {int(r['wins'])} (best baseline: {r['best']}).\n")
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
    text = markdown(summarise(rows), summarise_paired(rows))
    print(text)
    if args.markdown:
        atomic_write_bytes(Path(args.markdown), text.encode())
    if args.csv:
        atomic_write_bytes(Path(args.csv), rows.to_csv(index=False).encode())
    return 0
