"""Export's pure helpers (issue 7, mutation testing: survivors of export.py)."""

import pytest

from evo_snn.export import build_parser, retrained_metrics


def test_retrained_metrics_take_the_retrained_students_energy_and_say_so():
    search = {"accuracy": 0.8, "sparsity": 0.6, "energy_pj": 10.0, "synops": 100.0, "layer_synops": {"a": 1.0}}
    retrained = {"accuracy": 0.85, "train_samples": 640, "energy_pj": 7.0, "synops": 70.0, "layer_synops": {"a": 0.5},
                 "loss": 0.1}
    out = retrained_metrics(search, retrained, 2.0)
    assert out == {"accuracy": 0.8, "sparsity": 0.6, "final_epochs": 2.0, "retrained_val_accuracy": 0.85,
                   "retrain_samples": 640, "energy_pj": 7.0, "synops": 70.0, "layer_synops": {"a": 0.5},
                   "energy_measured_on": "the retrained student"}
    # no energy metrics from the retraining: the search's stay, with no label
    assert retrained_metrics(search, {"accuracy": 0.85, "train_samples": 640}, 2.0) == \
        {**search, "final_epochs": 2.0, "retrained_val_accuracy": 0.85, "retrain_samples": 640}


def test_the_cli_requires_pick():
    with pytest.raises(SystemExit):
        build_parser().parse_args(["runs/x"])
    args = build_parser().parse_args(["runs/x", "--pick", "knee"])
    assert (args.pick, args.retrain_epochs, args.out, args.nir) == ("knee", 0.0, None, False)
