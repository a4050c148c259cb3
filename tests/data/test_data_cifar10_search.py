"""End to end on the shared real CIFAR-10 JPEG folder: a small search with the shipped space, reduced budgets."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from evo_snn.search.run import main


@pytest.mark.slow
def test_cifar10_jpeg_search_run_directory_is_complete(cifar10_jpeg_root, tmp_path):
    out = tmp_path / "run"
    rc = main(["--dataset", "cifar10", "--data-root", str(cifar10_jpeg_root), "--population", "4",
               "--generations", "1", "--workers", "1", "--out", str(out), "--no-progress",
               "--set", f"data.cache_dir={tmp_path / 'cache'}", "--set", "teacher.epochs=1",
               "--set", "kd.epochs=0.01", "--set", "data.frames=1"])
    assert rc == 0
    for rel in ["config.json", "manifest.json", "evaluations.jsonl", "generations.csv", "pareto.csv",
                "teacher/teacher.pt", "teacher/metrics.json", "plots/pareto.png", "plots/hypervolume.png",
                "plots/layer_sparsity.png", "checkpoints/state.json"]:
        assert (out / rel).is_file(), rel
    assert not list(out.rglob("*.tmp-*"))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "completed" and manifest["data_root"] == str(cifar10_jpeg_root.resolve())
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model"]["name"] == "resnet18_tiny"
    assert cfg["data"]["classes"][:3] == ["airplane", "automobile", "bird"] and len(cfg["data"]["classes"]) == 10
    teacher = json.loads((out / "teacher" / "metrics.json").read_text())
    assert 0.1 < teacher["test_accuracy"] <= 1  # one epoch at T=1 already beats chance (0.1)
    rows = [json.loads(line) for line in (out / "evaluations.jsonl").read_text().splitlines()]
    # the shipped space screens every child forward-only (search.screen: bn_accuracy) and KD-trains
    # search.screen_promote = 2 of them: generation 0's 4 evaluations, then screening rows and 2 evaluations
    screened = [r for r in rows if r.get("rung") == "screen"]
    evaluated = [r for r in rows if r.get("rung") != "screen"]
    assert [r["gen"] for r in evaluated] == [0, 0, 0, 0, 1, 1] and all(r["status"] == "ok" for r in evaluated)
    assert screened and all(r["gen"] == 1 and r["status"] == "screened" for r in screened)
    assert len(pd.read_csv(out / "pareto.csv")) >= 1
    exported = list((out / "exported").iterdir())
    assert exported
    for d in exported:
        for f in ("teacher.pt", "student.pt", "genome.json", "masks.npz", "metrics.json"):
            assert (d / f).is_file(), (d.name, f)
        assert 0 <= json.loads((d / "metrics.json").read_text())["test_accuracy"] <= 1
