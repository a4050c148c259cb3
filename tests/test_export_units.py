"""Export's helpers and wiring, tested without a search (issue 7, mutation testing: survivors of export.py)."""

import pickle
from types import SimpleNamespace

import pytest
import torch

from evo_snn import export
from evo_snn.export import ExportError, build_parser, retrained_metrics


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


def _run_folder(path):
    """A run folder that export_run accepts up to its checkpoint (config.json only)."""
    (path / "config.json").write_text("{}")
    return path


def test_export_run_reads_the_runs_manifest_if_it_has_one(tmp_path):
    from evo_snn.checkpoint import CheckpointError
    from evo_snn.export import export_run
    from evo_snn.rundir import RunDirError

    _run_folder(tmp_path)  # a run folder without checkpoints
    with pytest.raises(CheckpointError):  # no manifest.json: optional, the run fails later for want of a checkpoint
        export_run(tmp_path, "knee", out=tmp_path / "out")
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(RunDirError, match=r"manifest\.json: not readable JSON"):
        export_run(tmp_path, "knee", out=tmp_path / "out")


def test_export_run_passes_its_defaults_and_the_data_root_on(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(export, "_export_locked", lambda run, *args: calls.append((run.path, *args)) or {})
    run, out = _run_folder(tmp_path), tmp_path / "out"
    export.export_run(run, "knee", out=out)  # the Python API's defaults: no retraining, no NIR, the recorded data root
    export.export_run(run, "knee", out=out, data_root="/elsewhere/data")
    # (run, pick, retrain_epochs, out, nir, data_root, progress, argv)
    assert calls == [(run, "knee", 0.0, out, False, None, True, None),
                     (run, "knee", 0.0, out, False, "/elsewhere/data", True, None)]


def test_failed_archive_members_are_never_exported(tmp_path, monkeypatch, capsys):
    class Picked(Exception):
        pass

    def no_comparison(*args, **kwargs):  # the export stops right after the pick
        raise Picked

    ok = [{"uid": "00-0001", "status": "ok", "metrics": {"accuracy": 0.6, "sparsity": 0.5}},
          {"uid": "00-0002", "status": "ok", "metrics": {"accuracy": 0.5, "sparsity": 0.7}}]
    failed = {"uid": "00-0003", "status": "failed", "metrics": {"accuracy": 0.9, "sparsity": 0.9}}  # would win every pick
    monkeypatch.setattr("evo_snn.checkpoint.load_checkpoint",
                        lambda d: SimpleNamespace(state={"archive": [ok[0], failed, ok[1]]}, gen=1))
    monkeypatch.setattr("evo_snn.baselines.Comparison", no_comparison)
    run = _run_folder(tmp_path)
    with pytest.raises(ExportError, match="uid=00-0003: not on the run's front; its members: 00-0001, 00-0002$"):
        export.export_run(run, "uid=00-0003", out=tmp_path / "out")
    with pytest.raises(Picked):
        export.export_run(run, "max-accuracy", out=tmp_path / "out")
    out = capsys.readouterr().out
    assert "picked 00-0001 (max-accuracy)" in out and "(generation 1 archive of 2)" in out


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory, tiny_cfg, tiny_splits):
    """One export of an untrained student at uniform sparsity 0.5 (``export_member``, no search)."""
    from evo_snn.config import GenomeConfig
    from evo_snn.genome import GenomeOps
    from evo_snn.models import build_model
    from evo_snn.pruning import prunable_layers, sparse_copy

    torch.manual_seed(0)
    teacher = build_model(tiny_cfg.model, tiny_splits.frame_shape, tiny_splits.num_classes)
    layers = prunable_layers(teacher)
    genome = GenomeOps({n: m.weight.detach().abs().numpy() for n, m in layers.items()}, GenomeConfig()).uniform_magnitude(0.5)
    student = sparse_copy(teacher, genome.mask_dict())
    root = tmp_path_factory.mktemp("exports")
    export.export_member(None, "00-0001", ["knee"], genome, {"accuracy": 0.5, "sparsity": genome.sparsity},
                         student.state_dict(), teacher, (tiny_cfg.model, tiny_splits.frame_shape, tiny_splits.num_classes),
                         tiny_splits.test, list(layers), out_root=root)
    return root / "00-0001"


def test_load_exported_says_where_it_loaded_from(export_dir):
    _, _, info = export.load_exported(export_dir)
    assert info["path"] == str(export_dir)
    assert info["uid"] == "00-0001" and info["genome"].sparsity == pytest.approx(0.5, abs=0.01)


class _NotAStateDict(dict):
    """A pickled object of a class of this module: ``torch.load(weights_only=True)`` must refuse it."""


def test_load_exported_refuses_a_weights_file_that_is_not_a_plain_state_dict(export_dir, tmp_path):
    import shutil

    d = tmp_path / "export"
    shutil.copytree(export_dir, d)
    state = torch.load(d / "student.pt", weights_only=True)
    torch.save(_NotAStateDict(state), d / "student.pt")  # the same weights, but unpickling it runs this module's code
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        export.load_exported(d)
