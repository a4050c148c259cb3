"""Export's helpers and wiring, tested without a search (issue 7, mutation testing: survivors of export.py)."""

import json
import pickle
from types import SimpleNamespace

import pytest
import torch

from evo_snn.deploy import command, export
from evo_snn.deploy.export import ExportError, build_parser, retrained_metrics


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
    from evo_snn.state.checkpoint import CheckpointError
    from evo_snn.deploy.export import export_run
    from evo_snn.state.rundir import RunDirError

    _run_folder(tmp_path)  # a run folder without checkpoints
    with pytest.raises(CheckpointError):  # no manifest.json: optional, the run fails later for want of a checkpoint
        export_run(tmp_path, "knee", out=tmp_path / "out")
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(RunDirError, match=r"manifest\.json: not readable JSON"):
        export_run(tmp_path, "knee", out=tmp_path / "out")


def test_export_run_passes_its_defaults_and_the_data_root_on(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(command, "_export_locked", lambda run, *args: calls.append((run.path, *args)) or {})
    run, out = _run_folder(tmp_path), tmp_path / "out"
    export.export_run(run, "knee", out=out)  # the Python API's defaults: no retraining, no NIR, the recorded data root
    export.export_run(run, "knee", out=out, data_root="/elsewhere/data")
    # (run, pick, retrain_epochs, out, nir, data_root, progress, argv)
    assert calls == [(run, "knee", 0.0, out, False, None, True, None),
                     (run, "knee", 0.0, out, False, "/elsewhere/data", True, None)]


def _last_checkpoint(monkeypatch, archive):
    """export_run reads ``archive`` (records as ``search.snapshot._record`` writes them) as the run's last checkpoint (generation 1)."""
    monkeypatch.setattr("evo_snn.state.checkpoint.load_checkpoint", lambda d, **kw: SimpleNamespace(state={"archive": archive}, gen=1))


def test_failed_archive_members_are_never_exported(tmp_path, monkeypatch, capsys):
    class Picked(Exception):
        pass

    def no_comparison(*args, **kwargs):  # the export stops right after the pick
        raise Picked

    ok = [{"uid": "00-0001", "status": "ok", "metrics": {"accuracy": 0.6, "sparsity": 0.5}},
          {"uid": "00-0002", "status": "ok", "metrics": {"accuracy": 0.5, "sparsity": 0.7}}]
    failed = {"uid": "00-0003", "status": "failed", "metrics": {"accuracy": 0.9, "sparsity": 0.9}}  # would win every pick
    _last_checkpoint(monkeypatch, [ok[0], failed, ok[1]])
    monkeypatch.setattr("evo_snn.analysis.baselines.Comparison", no_comparison)
    run = _run_folder(tmp_path)
    with pytest.raises(ExportError, match="uid=00-0003: not on the run's front; its members: 00-0001, 00-0002$"):
        export.export_run(run, "uid=00-0003", out=tmp_path / "out")
    with pytest.raises(Picked):
        export.export_run(run, "max-accuracy", out=tmp_path / "out")
    out = capsys.readouterr().out
    assert "picked 00-0001 (max-accuracy)" in out and "(generation 1 archive of 2)" in out


class _Comparison:
    """Stands in for ``baselines.Comparison`` (the run's data, teacher and students): ``members`` are its
    search members, or a KeyError when the running search moved on (a newer checkpoint in between)."""

    def __init__(self, members, cfg=None, splits=None):
        self.members, self.cfg, self.splits, self.teacher, self.layers = members, cfg, splits, None, ["features.0"]

    def search_members(self, uids=None):
        if isinstance(self.members, Exception):
            raise self.members
        return self.members

    def close(self):
        pass


def test_a_member_that_left_the_archive_is_a_clear_error(tmp_path, monkeypatch):
    _last_checkpoint(monkeypatch, [{"uid": "00-0001", "status": "ok", "metrics": {"accuracy": 0.6, "sparsity": 0.5}}])
    run = _run_folder(tmp_path)
    for moved_on in ([], KeyError("genome 1f3a")):  # not among the members, or their checkpoint replaced while read
        monkeypatch.setattr("evo_snn.analysis.baselines.Comparison", lambda *a, m=moved_on, **k: _Comparison(m))
        with pytest.raises(ExportError, match=r"00-0001 left the archive in .*checkpoints \(the running search moved on\)"):
            export.export_run(run, "knee", out=tmp_path / "out")


def test_the_export_records_the_dense_teachers_accuracies_and_the_search_command(tmp_path, monkeypatch, tiny_cfg,
                                                                                tiny_splits):
    member = SimpleNamespace(uid="00-0001", genome=None, seed=0, metrics={"accuracy": 0.6, "sparsity": 0.5},
                             student_state={})
    _last_checkpoint(monkeypatch, [{"uid": "00-0001", "status": "ok", "metrics": member.metrics}])
    monkeypatch.setattr("evo_snn.analysis.baselines.Comparison", lambda *a, **k: _Comparison([member], tiny_cfg, tiny_splits))
    written = []
    monkeypatch.setattr(command, "export_member", lambda *args, **kwargs: written.append(kwargs["context"]) or {})
    run = _run_folder(tmp_path)
    (run / "manifest.json").write_text(json.dumps({"argv": ["python", "-m", "evo_snn.search", "--seed", "5"]}))
    (run / "teacher").mkdir()
    (run / "teacher" / "metrics.json").write_text(json.dumps({"val_accuracy": 0.7, "test_accuracy": 0.65, "epochs": 10}))
    export.export_run(run, "knee", out=tmp_path / "out", argv=["python", "-m", "evo_snn.export"])
    [context] = written
    assert context["dense_teacher"] == {"val_accuracy": 0.7, "test_accuracy": 0.65}
    assert context["search_command"] == ["python", "-m", "evo_snn.search", "--seed", "5"]
    assert (context["export_command"], context["val_samples"]) == (["python", "-m", "evo_snn.export"], len(tiny_splits.val))


def test_the_model_card_shows_the_records_facts():
    from evo_snn.config import Config

    rec = {"uid": "04-0053", "roles": ["knee", "best_accuracy"],
           "config": {"dataset": "synthetic", "data": {"classes": ["a", "b", "c"]}},
           "model_args": {"model": {**Config().to_dict()["model"], "neuron": "plif", "tau": 3.0}, "frame_shape": [4, 2, 8, 8],
                          "num_classes": 3},
           "accuracy": 0.5, "test_accuracy": 0.45, "teacher_test_accuracy": 0.55, "test_samples": 18, "test_sparsity": 0.5,
           "exported_layer_sparsity": {"features.0": 0.25}, "layer_shapes": {"features.0": [4, 2, 3, 3]},
           "search_command": ["python", "-m", "evo_snn.search"], "export_git": {"sha": "abc123", "dirty": False},
           "search_versions": {"torch": "2.13.0"}, "export_versions": {"torch": "2.13.0", "numpy": "2.3.0"}}
    card = export.model_card(rec).splitlines()
    for line in ["| data set | synthetic, 3 classes (a, b, c) |",
                 "| time steps T | 4 |",
                 "| test (once, here) | 0.4500 | 0.5500 | - |",  # no dense teacher in the record: "-"
                 "| `features.0` | [4, 2, 3, 3] | 72 | 18 | 0.2500 |",
                 "- search command: `python -m evo_snn.search`",
                 "- export command: `?`",
                 "| numpy | - | 2.3.0 |"]:
        assert line in card
    text = "\n".join(card)
    assert "chosen by `knee, best_accuracy` on validation metrics" in text
    assert "| neuron | PLIF (tau 3.0), threshold 1.0" in text and "test samples: 18." in text
    assert "Overall: 0.5000 of the prunable weights are zero" in text and "export git abc123\n" in text


def _export_untrained(root, tiny_cfg, tiny_splits):
    """Export an untrained student at uniform sparsity 0.5 to ``root/00-0001`` (``export_member``, no search)."""
    from evo_snn.config import GenomeConfig
    from evo_snn.structure.genome import GenomeOps
    from evo_snn.models import build_model
    from evo_snn.structure.pruning import prunable_layers, sparse_copy, weight_magnitudes

    torch.manual_seed(0)
    teacher = build_model(tiny_cfg.model, tiny_splits.frame_shape, tiny_splits.num_classes)
    layers = prunable_layers(teacher)
    genome = GenomeOps(weight_magnitudes(teacher, layers), GenomeConfig()).uniform_magnitude(0.5)
    student = sparse_copy(teacher, genome.mask_dict())
    export.export_member(None, "00-0001", ["knee"], genome, {"accuracy": 0.5, "sparsity": genome.sparsity},
                         student.state_dict(), teacher, (tiny_cfg.model, tiny_splits.frame_shape, tiny_splits.num_classes),
                         tiny_splits.test, list(layers), out_root=root)
    return root / "00-0001"


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory, tiny_cfg, tiny_splits):
    """One export of an untrained student at uniform sparsity 0.5 (``export_member``, no search)."""
    return _export_untrained(tmp_path_factory.mktemp("exports"), tiny_cfg, tiny_splits)


def test_an_export_that_cannot_make_its_folder_raises_the_real_error(tmp_path, monkeypatch, tiny_cfg, tiny_splits):
    """The clean-up after a failed export must not hide the error when the temporary folder
    was never made (MUTATION.md: export_member#209)."""
    from pathlib import Path

    mkdir = Path.mkdir

    def full_disk(self, *args, **kwargs):
        if ".tmp-" in self.name:
            raise OSError(28, "No space left on device")
        return mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", full_disk)
    with pytest.raises(OSError, match="No space left on device"):
        _export_untrained(tmp_path, tiny_cfg, tiny_splits)
    assert list(tmp_path.iterdir()) == []  # nothing half-written


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


def test_the_sparse_teachers_validation_accuracy_is_measured_at_export_only_when_the_search_did_not(tiny_cfg, tiny_splits,
                                                                                                    monkeypatch):
    """Issue 26: with ``search.measure_teacher`` false (the default) the record gets the sparse
    teacher's validation accuracy from one pass at export; a measured one is kept as it is."""
    from evo_snn.config import GenomeConfig
    from evo_snn.deploy.writer import member_record
    from evo_snn.models import build_model
    from evo_snn.structure.genome import GenomeOps
    from evo_snn.structure.pruning import prunable_layers, sparse_copy, weight_magnitudes
    from evo_snn.training.train import accuracy

    torch.manual_seed(0)
    teacher = build_model(tiny_cfg.model, tiny_splits.frame_shape, tiny_splits.num_classes)
    layers = list(prunable_layers(teacher))
    genome = GenomeOps(weight_magnitudes(teacher, layers), GenomeConfig()).uniform_magnitude(0.5)
    sparse = sparse_copy(teacher, genome.mask_dict())
    args = (tiny_cfg.model, tiny_splits.frame_shape, tiny_splits.num_classes)

    def record(metrics, val):
        return member_record("00-0001", ["knee"], genome, metrics, sparse, sparse, args, tiny_splits.test, layers, None, val)

    base = {"accuracy": 0.5, "sparsity": genome.sparsity, "teacher_accuracy": None}
    seen = []
    monkeypatch.setattr("evo_snn.deploy.writer.accuracy", lambda net, fs, *a, **k: seen.append((net, fs)) or accuracy(net, fs))
    at_export = record(base, tiny_splits.val)
    assert at_export["teacher_accuracy"] == accuracy(sparse, tiny_splits.val)
    assert (sparse, tiny_splits.val) in seen and seen.count((sparse, tiny_splits.val)) == 1  # one pass, on validation
    assert at_export["teacher_accuracy_measured"] == "at export" and base["teacher_accuracy"] is None  # input untouched
    kept = record({**base, "teacher_accuracy": 0.25}, tiny_splits.val)
    assert kept["teacher_accuracy"] == 0.25 and "teacher_accuracy_measured" not in kept
    assert record(base, None)["teacher_accuracy"] is None  # no validation split given: nothing measured
