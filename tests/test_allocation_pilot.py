"""benchmarks/allocation_pilot.py end to end on the synthetic data set, tiny settings (seconds)."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "allocation_pilot.py"
TINY = ["data.synthetic_classes=3", "data.synthetic_train_per_class=16", "data.synthetic_test_per_class=6",
        "data.synthetic_size=8", "data.frames=4", "data.val_fraction=0.25", "model.channels=[4,8]", "teacher.epochs=2"]


def load_script():
    spec = importlib.util.spec_from_file_location("allocation_pilot", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_random_move_keeps_the_total_exact():
    pilot = load_script()
    rng = np.random.default_rng(0)
    sizes = np.array([10, 200, 3000, 50])
    base = np.array([5, 150, 2500, 0])
    cap = np.maximum(np.floor(0.95 * sizes), base)
    for _ in range(50):
        z, f = pilot.random_move(base, sizes, rng)
        assert z.sum() == base.sum() and (z >= 0).all() and (z <= sizes).all()
        assert (z <= cap).all()  # no receiving layer is filled past ratio_max: no layer emptied
        assert 0.05 <= f <= 0.30 and not np.array_equal(z, base)


def test_pilot_on_synthetic(tmp_path, capsys):
    pilot = load_script()
    out = tmp_path / "pilot.json"
    argv = ["--dataset", "synthetic", "--sparsities", "0.5,0.8", "--random-moves", "2", "--seeds", "2",
            "--finetune-steps", "2", "--val-images", "8", "--bn-batches", "2", "--bn-batch-size", "8",
            "--out", str(out), "--quiet"] + [a for s in TINY for a in ("--set", s)]
    doc = pilot.main(argv)
    assert json.loads(out.read_text())["rows"] == json.loads(json.dumps(doc["rows"]))  # written, atomically complete
    assert not list(tmp_path.glob("*.tmp"))
    table = capsys.readouterr().out
    methods = {"global", "uniform", "lamp", "erk", "energy_aware", "random0", "random1"}
    for s in (0.5, 0.8):
        rows = [r for r in doc["rows"] if r["sparsity"] == s]
        assert {r["method"] for r in rows} == methods
        target = rows[0]["target"]
        assert target == round(s * doc["settings"]["prunable_weights"])
        for r in rows:
            assert r["pruned"] == target, r["method"]
            assert f"| {s} | {r['method']} | {target} (=) |" in table
            for p in pilot.PROXIES:
                assert math.isfinite(r[p]), (r["method"], p)
            assert len(r["test"]) == 2 and all(0.0 <= v <= 1.0 for v in r["test"])
            assert 0.0 < r["synops_kept"] <= 1.0
        summ = doc["summary"][str(s)]
        assert set(summ["spearman"]) == set(pilot.PROXIES)
        assert set(summ["minus_global"]) == {"erk", "lamp", "energy_aware", "uniform"}
    assert "Spearman with truth: NLL after BN recalibration" in table
    assert doc["settings"]["finetune_steps"] == 2
    # --reuse: the same allocations at the same settings are taken from the earlier JSON
    again = pilot.main([str(tmp_path / "again.json") if a == str(out) else a for a in argv] + ["--reuse", str(out)])
    assert again["reused"] == len(doc["rows"])
    assert [r["test"] for r in again["rows"]] == [r["test"] for r in doc["rows"]]


def test_bn_recalibration_leaves_the_net_alone():
    pilot = load_script()
    net = torch.nn.Sequential(torch.nn.BatchNorm1d(3))
    net[0].running_mean.fill_(5.0)
    net.eval()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    recal = pilot.bn_recalibrated(net, [torch.randn(16, 3) + 1.0, torch.randn(16, 3) + 1.0])
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert not recal.training and recal[0].momentum is None
    assert abs(float(recal[0].running_mean.mean()) - 1.0) < 0.5
