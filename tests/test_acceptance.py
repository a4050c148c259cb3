"""Acceptance runs on the real fixtures (slow: run with ``pytest -m slow``)."""

import json
import time
from pathlib import Path

import pandas as pd
import pytest

from evo_snn.search.run import main

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

pytestmark = pytest.mark.slow


@pytest.mark.skipif(not (SHARED_DATA / "nmnist_subset").is_dir(), reason=f"{SHARED_DATA}/nmnist_subset is absent")
def test_nmnist_search_meets_the_walking_skeleton_targets(tmp_path):
    t0 = time.perf_counter()
    out = tmp_path / "nmnist"
    assert main(["--dataset", "nmnist", "--data-root", str(SHARED_DATA / "nmnist_subset"), "--workers", "2",
                 "--out", str(out), "--no-progress"]) == 0
    assert time.perf_counter() - t0 <= 20 * 60
    teacher = json.loads((out / "teacher" / "metrics.json").read_text())
    assert teacher["test_accuracy"] >= 0.85
    front = pd.read_csv(out / "pareto.csv")
    assert len(front) >= 3
    close = front[(front.sparsity >= 0.5) & (front.accuracy >= teacher["val_accuracy"] - 0.03)]
    assert len(close) >= 1, front.to_string()


@pytest.mark.skipif(not (SHARED_DATA / "dvs_gesture_mini").is_dir(), reason=f"{SHARED_DATA}/dvs_gesture_mini is absent")
def test_dvs_gesture_search_runs_on_real_aedat(tmp_path):
    out = tmp_path / "dvs"
    assert main(["--dataset", "dvs_gesture", "--data-root", str(SHARED_DATA / "dvs_gesture_mini" / "DvsGesture"),
                 "--population", "4", "--generations", "1", "--set", "teacher.epochs=4", "--set", "data.val_fraction=0.2",
                 "--set", f"data.cache_dir={tmp_path / 'cache'}", "--out", str(out), "--no-progress"]) == 0
    assert json.loads((out / "manifest.json").read_text())["status"] == "completed"
    assert len(pd.read_csv(out / "pareto.csv")) >= 1
