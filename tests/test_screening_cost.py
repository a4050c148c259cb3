"""benchmarks/screening_cost.py on the synthetic space: one run prints the screened candidate's
counted cost next to a KD evaluation's, with a finite positive ratio."""

import importlib.util
import math
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "screening_cost.py"
TINY = ["data.synthetic_classes=3", "data.synthetic_train_per_class=16", "data.synthetic_test_per_class=6",
        "data.synthetic_size=8", "data.frames=4", "data.val_fraction=0.25", "model.channels=[4]", "kd.epochs=0.5",
        "search.screen_bn_batches=2", "search.screen_samples=8"]


def _load():
    spec = importlib.util.spec_from_file_location("screening_cost", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_screening_cost_runs_on_synthetic(tmp_path, capsys, one_torch_thread):
    mod = _load()
    argv = ["--dataset", "synthetic", "--candidates", "4", "--kd-evals", "1", "--out", str(tmp_path / "c.json")]
    for s in TINY:
        argv += ["--set", s]
    doc = mod.main(argv)
    out = capsys.readouterr().out
    assert "KD / screened" in out and "forward_cost_ratio" in out
    for v in (doc["cheaper"]["counted"], doc["cheaper"]["seconds"], doc["forward_cost_ratio"]):
        assert math.isfinite(v) and v > 0
    sel, bs = doc["selection"], doc["batch_size"]
    # multi-step: every candidate BN batches + the first step, the kept ones the rest too
    assert sel["bn_forwards"] == 2 * bs and sel["first_step"] == 2 and sel["keep"] == 2
    fwd = sorted(sel["forward_samples"])
    assert fwd == [2 * bs + 2] * 2 + [2 * bs + 8] * 2
    assert doc["screened"]["counted_samples"] == sum(fwd) / 4 * doc["forward_cost_ratio"]
    # the KD evaluation counts kd.epochs x the training split, as the search does
    assert doc["kd_evaluation"]["counted_samples"] == doc["kd_evaluation"]["expected_samples"]
    assert (tmp_path / "c.json").is_file()
