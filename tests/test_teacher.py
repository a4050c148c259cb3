"""evo_snn.training.teacher: the split fingerprint and its check, loading errors, and ``prepare``
(train, reload on resume, load a ``--teacher``, the ANN twin) on a tiny synthetic config."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from evo_snn.data import load_splits
from evo_snn.state.rundir import RunDir, save_state_dict
from evo_snn.training.teacher import (
    SPLIT_FILE,
    TeacherLoadError,
    Teachers,
    check_split,
    load_teacher,
    prepare,
    read_state_dict,
    split_fingerprint,
)
from evo_snn.training.train import accuracy

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CPU = torch.device("cpu")


def _setup(cfg, **overrides):
    """``cfg`` with a 1-epoch teacher and ``section.field=value`` overrides, and its splits."""
    overrides = {"teacher.epochs": 1, **overrides}
    for key, value in overrides.items():
        section, field = key.split(".")
        cfg = replace(cfg, **{section: replace(getattr(cfg, section), **{field: value})})
    return cfg, load_splits("synthetic", None, cfg.data, seed=cfg.split_seed())


@pytest.fixture(scope="module")
def base(tiny_cfg):
    return _setup(tiny_cfg)


@pytest.fixture(scope="module")
def saved_run(base, tmp_path_factory):
    """A run directory holding a freshly prepared teacher, as ``search`` saves it."""
    cfg, splits = base
    run = RunDir.create(tmp_path_factory.mktemp("teacher") / "run", "synthetic", "t")
    teachers = prepare(cfg, splits, CPU, run_teacher_dir=run.teacher, resume=False, progress=False)
    assert list(run.teacher.iterdir()) == []  # prepare writes no files
    run.save_teachers(teachers)
    return run, teachers


def _state_equal(a, b):
    return list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------------- split fingerprint / check
def test_split_fingerprint_records_the_split(base):
    cfg, splits = base
    fp = split_fingerprint(cfg, splits)
    assert fp["dataset"] == "synthetic" and fp["split_seed"] == cfg.search.seed == 0
    assert fp["val_fraction"] == 0.25 and (fp["train_size"], fp["val_size"]) == (36, 12)  # 3 classes x 16, a quarter held out
    assert len(fp["val_sha1"]) == 40 and fp == split_fingerprint(cfg, splits)  # deterministic


def test_check_split_passes_the_same_split_and_refuses_another(base, tmp_path):
    cfg, splits = base
    teacher_pt = tmp_path / "teacher.pt"
    assert check_split(teacher_pt, split_fingerprint(cfg, splits)) == f"{tmp_path / SPLIT_FILE} not found: cannot check " \
        "that the teacher was trained on this run's train/validation split"
    (tmp_path / SPLIT_FILE).write_text(json.dumps(split_fingerprint(cfg, splits)))
    assert check_split(teacher_pt, split_fingerprint(cfg, splits)) is None

    cfg1, splits1 = _setup(cfg, **{"search.seed": 1})
    with pytest.raises(TeacherLoadError, match=r"split_seed: 0 there, 1 here; validation samples differ"):
        check_split(teacher_pt, split_fingerprint(cfg1, splits1))
    cfg5, splits5 = _setup(cfg, **{"data.val_fraction": 0.5})
    with pytest.raises(TeacherLoadError, match=r"val_fraction: 0.25 there, 0.5 here.*train_size: 36 there, 24 here"):
        check_split(teacher_pt, split_fingerprint(cfg5, splits5))

    # data.split_seed: another search seed on the teacher's split (one shared teacher over search seeds)
    cfg_shared, splits_shared = _setup(cfg, **{"search.seed": 1, "data.split_seed": 0})
    assert cfg_shared.split_seed() == 0 and cfg1.split_seed() == 1
    assert torch.equal(splits_shared.val.labels, splits.val.labels)
    assert check_split(teacher_pt, split_fingerprint(cfg_shared, splits_shared)) is None
    cfg_other, splits_other = _setup(cfg, **{"search.seed": 0, "data.split_seed": 1})
    with pytest.raises(TeacherLoadError, match=r"split_seed: 0 there, 1 here"):
        check_split(teacher_pt, split_fingerprint(cfg_other, splits_other))


def test_split_seed_must_be_null_or_a_seed(tiny_cfg):
    from evo_snn.config import ConfigError, load_config
    assert tiny_cfg.split_seed() == tiny_cfg.search.seed  # null: the search seed
    assert load_config("synthetic", None, ["data.split_seed=3", "search.seed=7"]).split_seed() == 3
    for bad in ("-1", "1.5", "'0'", "true", str(2**32)):
        with pytest.raises(ConfigError, match=r"data.split_seed must be null \(= search.seed\) or an integer in \[0, 2\*\*32\)"):
            load_config("synthetic", None, [f"data.split_seed={bad}"])


# ---------------------------------------------------------------------- loading errors
def test_loading_errors_name_the_file(base, saved_run, tmp_path):
    cfg, splits = base
    with pytest.raises(TeacherLoadError, match="missing.pt not found; pass it"):
        read_state_dict(tmp_path / "missing.pt", "pass it")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(TeacherLoadError, match="junk.pt: not a torch state_dict"):
        read_state_dict(tmp_path / "junk.pt", "")
    run, _ = saved_run
    wide, _ = _setup(cfg, **{"model.channels": (8,)})
    with pytest.raises(TeacherLoadError, match="does not fit model 'tiny_conv'"):
        load_teacher(run.teacher / "teacher.pt", wide, splits, CPU)


# ---------------------------------------------------------------------- prepare
def test_prepare_trains_a_seeded_teacher_and_vouches_for_its_split(base, saved_run, tmp_path):
    cfg, splits = base
    _, teachers = saved_run
    assert teachers.fresh and teachers.ann_state is None  # kd.mode 'sparse' needs no ANN twin
    assert teachers.split == split_fingerprint(cfg, splits)
    assert teachers.metrics["source"] == "trained" and teachers.metrics["epochs"] == 1
    assert not teachers.dense.training
    assert teachers.metrics["val_accuracy"] == pytest.approx(accuracy(teachers.dense, splits.val))
    again = prepare(cfg, splits, CPU, run_teacher_dir=tmp_path, resume=False, progress=False)  # the root seed decides
    assert _state_equal(again.dense.state_dict(), teachers.dense.state_dict())


def test_prepare_on_resume_reloads_the_runs_teacher(base, saved_run, capsys):
    cfg, splits = base
    run, trained = saved_run
    back = prepare(cfg, splits, CPU, run_teacher_dir=run.teacher, resume=True, progress=False)
    assert not back.fresh and back.split is None
    assert _state_equal(back.dense.state_dict(), trained.dense.state_dict())
    assert back.metrics == json.loads((run.teacher / "metrics.json").read_text())
    assert "has the data set changed" not in capsys.readouterr().out
    changed = run.path / "teacher_changed"  # recorded accuracy 0.5 off what the reloaded teacher measures
    save_state_dict(changed / "teacher.pt", trained.dense.state_dict())
    run.write_json("teacher_changed/metrics.json", dict(back.metrics, val_accuracy=back.metrics["val_accuracy"] + 0.5))
    prepare(cfg, splits, CPU, run_teacher_dir=changed, resume=True, progress=False)
    assert "has the data set changed?" in capsys.readouterr().out


def test_prepare_loads_a_teacher_only_from_the_same_split(base, saved_run, capsys, tmp_path):
    cfg, splits = base
    run, trained = saved_run
    path = run.teacher / "teacher.pt"
    loaded = prepare(cfg, splits, CPU, run_teacher_dir=tmp_path, resume=False, teacher_path=str(path), progress=False)
    assert loaded.fresh and loaded.split == trained.split and loaded.metrics["source"] == str(path)
    assert loaded.metrics["val_accuracy"] == pytest.approx(trained.metrics["val_accuracy"])
    assert _state_equal(loaded.dense.state_dict(), trained.dense.state_dict())

    cfg1, splits1 = _setup(cfg, **{"search.seed": 1})
    with pytest.raises(TeacherLoadError, match="another train/validation split"):
        prepare(cfg1, splits1, CPU, run_teacher_dir=tmp_path, resume=False, teacher_path=str(path), progress=False)

    old = tmp_path / "old" / "teacher.pt"  # a teacher of an older run: no split.json beside it
    save_state_dict(old, trained.dense.state_dict())
    capsys.readouterr()
    unchecked = prepare(cfg, splits, CPU, run_teacher_dir=tmp_path, resume=False, teacher_path=str(old), progress=False)
    assert unchecked.split is None  # not vouched for: not stored in the new run
    assert "split.json not found" in capsys.readouterr().out


def test_prepare_trains_and_reloads_the_ann_twin(tiny_cfg, tmp_path):
    cfg, splits = _setup(tiny_cfg, **{"kd.mode": "ann"})
    run = RunDir.create(tmp_path / "run", "synthetic", "ann")
    teachers = prepare(cfg, splits, CPU, run_teacher_dir=run.teacher, resume=False, progress=False)
    assert teachers.ann_state is not None and teachers.ann_metrics["source"] == "trained"
    dense = teachers.dense.state_dict()
    assert list(teachers.ann_state) == list(dense)  # same layers: IF nodes hold no parameters
    assert all(v.device.type == "cpu" and not v.requires_grad for v in teachers.ann_state.values())
    assert not torch.equal(teachers.ann_state["classifier.1.weight"], dense["classifier.1.weight"])  # trained apart
    run.save_teachers(Teachers(teachers.dense, teachers.metrics, teachers.split))  # without the twin
    with pytest.raises(TeacherLoadError, match="needs its ANN teacher to resume"):
        prepare(cfg, splits, CPU, run_teacher_dir=run.teacher, resume=True, progress=False)
    run.save_teachers(teachers)
    assert json.loads((run.teacher / "ann_metrics.json").read_text()) == teachers.ann_metrics
    back = prepare(cfg, splits, CPU, run_teacher_dir=run.teacher, resume=True, progress=False)
    assert _state_equal(back.ann_state, teachers.ann_state)
