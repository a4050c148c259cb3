"""Teacher training checkpointed each epoch: an interrupted teacher resumes from its last
epoch and ends as the uninterrupted one; messages on Ctrl-C and on --resume of a complete run."""

from __future__ import annotations

import json

import pytest
import torch

import evo_snn.training.teacher as teacher_mod
from evo_snn.config import ModelConfig
from evo_snn.data import FrameSet
from evo_snn.models import build_model
from evo_snn.search.run import main
from evo_snn.training.train import ce_loss, train_steps

from test_search import TINY

BASE = ["--dataset", "synthetic", "--population", "4", "--generations", "0", "--seed", "5", "--no-progress", *TINY,
        "--set", "teacher.epochs=3"]


def _net():
    torch.manual_seed(0)
    return build_model(ModelConfig(name="tiny_conv", channels=(4,)), (4, 2, 8, 8), 3)


def _data():
    g = torch.Generator().manual_seed(1)
    return FrameSet(torch.randint(0, 3, (40, 4, 2, 8, 8), generator=g).to(torch.uint8), torch.randint(0, 3, (40,), generator=g))


def test_train_steps_resumed_from_a_snapshot_ends_as_the_straight_run():
    fs = _data()
    straight = _net()
    loss = train_steps(straight, fs, epochs=3, batch_size=16, lr=1e-2, loss_fn=ce_loss, seed=7)
    snaps = []
    first = _net()
    train_steps(first, fs, epochs=3, batch_size=16, lr=1e-2, loss_fn=ce_loss, seed=7, snapshot=snaps.append)
    assert [s["epoch"] for s in snaps] == [1, 2]  # every epoch but the last
    resumed = _net()  # fresh weights: everything comes from the snapshot
    loss2 = train_steps(resumed, fs, epochs=3, batch_size=16, lr=1e-2, loss_fn=ce_loss, seed=7, resume_from=snaps[0])
    assert loss2 == loss
    for (k, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k
    # a snapshot taken where nothing is left returns the last epoch's loss
    at_end = dict(snaps[1], step=snaps[1]["step"] + 100)
    assert train_steps(_net(), fs, epochs=3, batch_size=16, lr=1e-2, loss_fn=ce_loss, seed=7, resume_from=at_end) == snaps[1]["loss"]


@pytest.fixture(scope="module")
def straight_teacher(tmp_path_factory):
    out = tmp_path_factory.mktemp("teacher") / "r"
    assert main([*BASE, "--out", str(out)]) == 0
    return torch.load(out / "teacher" / "teacher.pt", weights_only=True)


def test_interrupted_teacher_resumes_from_its_last_epoch(straight_teacher, tmp_path, monkeypatch, capsys):
    out = tmp_path / "r"
    calls = []
    real = teacher_mod.accuracy

    def interrupt_in_epoch_2(*a, **k):
        calls.append(1)
        if len(calls) == 2:  # the validation pass after epoch 2: epoch 1's checkpoint is written
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(teacher_mod, "accuracy", interrupt_in_epoch_2)
    assert main([*BASE, "--out", str(out)]) == 130
    monkeypatch.undo()
    err = capsys.readouterr().err
    assert "while training the teacher; --resume continues its training from the last finished epoch" in err
    assert f"python -m evo_snn.search --resume {out}" in err
    partial = torch.load(out / "teacher" / "partial.pt", weights_only=True)
    assert partial["epoch"] == 1 and not (out / "teacher" / "teacher.pt").exists()

    assert main(["--resume", str(out), "--no-progress"]) == 0
    assert "teacher: continuing from epoch 1/3" in capsys.readouterr().out
    resumed = torch.load(out / "teacher" / "teacher.pt", weights_only=True)
    assert resumed.keys() == straight_teacher.keys()
    assert all(torch.equal(resumed[k], straight_teacher[k]) for k in resumed)
    assert not (out / "teacher" / "partial.pt").exists()  # deleted once the teacher is saved
    assert len(json.loads((out / "teacher" / "metrics.json").read_text())["val_curve"]) == 3


def test_a_checkpoint_of_other_settings_is_ignored(tmp_path, capsys):
    fs, path = _data(), tmp_path / "partial.pt"
    torch.save({"key": {"seed": 99}, "epoch": 1}, path)
    assert teacher_mod._read_partial(path, {"seed": 5}) is None
    assert "other teacher settings" in capsys.readouterr().out
    path.write_bytes(b"not a checkpoint")
    assert teacher_mod._read_partial(path, {"seed": 5}) is None
    assert "cannot be read" in capsys.readouterr().out


def test_resume_of_a_complete_run_says_so_and_changes_nothing(straight_teacher, tmp_path, capsys):
    out = tmp_path / "r"
    assert main([*BASE, "--out", str(out)]) == 0
    capsys.readouterr()
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    assert main(["--resume", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert f"{out} is complete (generation 0/0" in text and "nothing to do" in text
    assert f"python -m evo_snn.export {out} --pick knee" in text and "load_exported" in text
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == before  # nothing retrained or rewritten
