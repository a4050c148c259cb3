"""How the search's masks differ from global magnitude pruning at the same sparsity.

    python benchmarks/matched_masks.py RUN_DIR [RUN_DIR ...] [--csv baselines-matched-fe0.36.csv]

Reads a run's ``global_matched`` comparison (``python -m evo_snn.baselines RUN_DIR
--methods global_matched --final-epochs E --suffix matched``), the run's checkpoint (the
search members' genomes) and its teacher (``teacher/teacher.pt``), and prints one line per
pair, sorted by sparsity:

- ``jaccard``: |pruned by both| / |pruned by either|, over all prunable weights (1 = the same mask);
- ``d_ratio``: mean over layers of |search member's layer ratio - global's layer ratio|
  (global's ratios follow from its one threshold): how differently the pruning is spread
  over the layers;
- ``within``: the fraction of the member's pruned weights that a per-layer magnitude mask at
  the member's own layer ratios would also prune (1 = within each layer the member prunes
  by |W|, so it differs from global only in its layer ratios);
- ``d_test`` / ``d_val``: the pair's test / retrained validation accuracy difference (search - global).

Then, per sparsity band, the mean of each column. Not a test; reads files only (no training).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from evo_snn.state.checkpoint import load_checkpoint
from evo_snn.config import GenomeConfig
from evo_snn.structure.genome import GenomeOps, zeros_for


def pair_rows(run: Path, csv: str) -> pd.DataFrame:
    """One row per (search member, global_matched partner) of ``run``; see the module docstring."""
    table = pd.read_csv(run / csv)
    search = table[table.method == "search"].set_index("uid")
    matched = table[table.method == "global_matched"]
    if matched.empty:
        raise SystemExit(f"{run / csv}: no global_matched rows; run python -m evo_snn.baselines {run} "
                         "--methods global_matched --final-epochs E --suffix matched first")
    genomes = load_checkpoint(run / "checkpoints").state["genomes"]
    teacher = torch.load(run / "teacher" / "teacher.pt", map_location="cpu", weights_only=True)
    rows = []
    for _, r in matched.iterrows():
        partner = search.loc[r.partner]
        g = genomes[partner.genome_key]
        w_abs = {n: teacher[f"{n}.weight"].abs().numpy() for n in g.layers}
        glob = GenomeOps(w_abs, GenomeConfig()).global_magnitude(g.sparsity)
        pruned_s = np.concatenate([~m.ravel() for m in g.masks])
        pruned_g = np.concatenate([~m.ravel() for m in glob.masks])
        within = []
        for n, m in zip(g.layers, g.masks):
            k = int((~m).sum())
            if k:  # the k smallest |W| of the layer, ties broken by position as magnitude_mask does
                small = np.zeros(m.size, dtype=bool)
                small[np.argsort(w_abs[n].ravel(), kind="stable")[:zeros_for(k / m.size, m.size)]] = True
                within.append(float((~m.ravel() & small).sum()) / k)
        rows.append({"run": run.name, "sparsity": g.sparsity,
                     "jaccard": float((pruned_s & pruned_g).sum()) / max(int((pruned_s | pruned_g).sum()), 1),
                     "d_ratio": float(np.abs(np.array(g.ratios) - np.array(glob.ratios)).mean()),
                     "within": float(np.mean(within)) if within else 1.0,
                     "d_test": partner.test_accuracy - r.test_accuracy,
                     "d_val": partner.retrained_val_accuracy - r.retrained_val_accuracy})
    return pd.DataFrame(rows).sort_values("sparsity")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR")
    p.add_argument("--csv", default="baselines-matched-fe0.36.csv", help="the comparison table inside each run")
    args = p.parse_args(argv)
    rows = pd.concat([pair_rows(r, args.csv) for r in args.runs], ignore_index=True)
    cols = ["jaccard", "d_ratio", "within", "d_test", "d_val"]
    with pd.option_context("display.width", 160, "display.max_rows", 500):
        print(rows.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        bands = pd.cut(rows.sparsity, [0, 0.5, 0.8, 1.0], right=False)
        by_band = rows.groupby(bands, observed=True)
        print(by_band[cols].mean().assign(pairs=by_band.size()).to_string(float_format=lambda v: f"{v:.3f}"))
        print(f"Spearman(d_ratio, d_test), sparsity >= 0.8: "
              f"{rows[rows.sparsity >= 0.8][['d_ratio', 'd_test']].corr(method='spearman').iloc[0, 1]:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
