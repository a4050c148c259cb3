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


def test_export_run_reads_the_runs_manifest_if_it_has_one(tmp_path):
    from evo_snn.checkpoint import CheckpointError
    from evo_snn.export import export_run
    from evo_snn.rundir import RunDirError

    (tmp_path / "config.json").write_text("{}")  # a run folder without checkpoints
    with pytest.raises(CheckpointError):  # no manifest.json: optional, the run fails later for want of a checkpoint
        export_run(tmp_path, "knee", out=tmp_path / "out")
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(RunDirError, match=r"manifest\.json: not readable JSON"):
        export_run(tmp_path, "knee", out=tmp_path / "out")
