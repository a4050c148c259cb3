"""Regenerate tests/golden/synthetic_tiny.json: ``python tests/golden/make_golden.py``.

The golden file pins what a tiny synthetic search produces (pareto.csv, every
evaluation's metrics, the exported members' test accuracy) so that a change meant
to restructure code, not results, is shown to keep them. Regenerate it only for a
change that is meant to alter results, and say so in the commit message.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ARGS = ["--dataset", "synthetic", "--population", "8", "--generations", "2", "--seed", "7", "--no-progress",
        "--set", "data.synthetic_classes=3", "--set", "data.synthetic_train_per_class=16",
        "--set", "data.synthetic_test_per_class=6", "--set", "data.synthetic_size=8", "--set", "data.frames=4",
        "--set", "data.val_fraction=0.25", "--set", "model.channels=[4]", "--set", "teacher.epochs=2",
        "--set", "kd.epochs=0.5", "--set", "search.measure_teacher=true"]  # pinned: the golden file records it
PARETO_KEYS = ("uid", "accuracy", "sparsity", "teacher_accuracy", "genome_sparsity", "gen", "genome_key", "parents")
EVAL_KEYS = ("gen", "uid", "parents", "genome_key", "status", "seed", "accuracy", "sparsity", "teacher_accuracy",
             "genome_sparsity", "train_loss")


def summarize(run: Path) -> dict:
    """The result-bearing parts of a run directory, as JSON-able data."""
    import pandas as pd

    rows = [json.loads(line) for line in (run / "evaluations.jsonl").read_text().splitlines()]
    exported = {d.name: json.loads((d / "metrics.json").read_text()) for d in sorted((run / "exported").iterdir())}
    return {
        "pareto": pd.read_csv(run / "pareto.csv", keep_default_na=False)[list(PARETO_KEYS)].to_dict(orient="records"),
        "evaluations": [{k: r.get(k) for k in EVAL_KEYS} for r in rows],
        "exported": {uid: {k: m[k] for k in ("roles", "test_accuracy", "teacher_test_accuracy", "accuracy", "sparsity")}
                     for uid, m in exported.items()},
        "teacher": {k: json.loads((run / "teacher" / "metrics.json").read_text())[k] for k in ("val_accuracy", "test_accuracy")},
    }


def run_tiny(out: Path) -> dict:
    import torch

    from evo_snn.search.run import main

    torch.set_num_threads(1)
    assert main([*ARGS, "--out", str(out)]) == 0
    return summarize(out)


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        doc = run_tiny(Path(tmp) / "run")
    (HERE / "synthetic_tiny.json").write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    print(f"wrote {HERE / 'synthetic_tiny.json'}", file=sys.stderr)
