"""Issue 27's fault table, one row at a time (the rows fixed so far)."""

from __future__ import annotations

import json

import pandas as pd

from evo_snn.search import main

from test_search import TINY


def test_d5_generations_without_a_successful_evaluation(tmp_path, capsys):
    """D5: every evaluation fails (raise, no retries). The search goes through its
    generations (each logged as having no successful evaluation), then stops with status
    'failed', exit 1 and one line naming the errors, instead of an IndexError traceback."""
    out = tmp_path / "r"
    rc = main(["--dataset", "synthetic", "--population", "4", "--generations", "1", "--no-progress", *TINY,
               "--set", "faults.fail_rate=0.999", "--set", "faults.kinds=[raise]", "--set", "search.max_retries=0",
               "--out", str(out)])
    captured = capsys.readouterr()
    assert rc == 1
    err = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and "every one of the 8 evaluations failed" in err[0] and "InjectedFault" in err[0]
    assert "Traceback" not in captured.err
    assert captured.out.count("no successful evaluation yet (4 of 4 failed") == 2
    m = json.loads((out / "manifest.json").read_text())
    assert m["status"] == "failed" and "evaluations failed" in m["error"]
    assert list(pd.read_csv(out / "generations.csv")["gen"]) == [0, 1]
    assert not (out / "exported").exists() or not any((out / "exported").iterdir())
