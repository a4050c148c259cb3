"""evo_snn.load_exported: an export reloads as ready-to-run nets that reproduce its recorded
accuracy, with the masks attached so that fine-tuning keeps the pruned weights at zero."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from test_export import tiny_run  # tests/ is on sys.path (pytest's rootdir conftest)

import evo_snn
from evo_snn.config import read_run_config
from evo_snn.data import load_splits
from evo_snn.training.train import accuracy, predict_logits


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    run = tiny_run(tmp_path_factory)
    cfg = read_run_config(run / "config.json")
    splits = load_splits(cfg.dataset, None, cfg.data, seed=cfg.search.seed)
    return sorted((run / "exported").iterdir()), splits


def test_reloaded_student_reproduces_the_recorded_accuracy_exactly(exported, one_torch_thread):
    dirs, splits = exported
    assert any(json.loads((d / "metrics.json").read_text())["accuracy"] > 0.5 for d in dirs)  # precondition: not chance (1/3)
    for d in dirs:
        student, teacher, info = evo_snn.load_exported(d)
        assert not student.training and not teacher.training
        assert accuracy(student, splits.val) == info["student_val_accuracy"] == info["accuracy"]  # exactly, not approx
        assert accuracy(student, splits.test) == info["test_accuracy"]
        assert accuracy(teacher, splits.val) == info["teacher_accuracy"]
        assert all(not p.requires_grad for p in teacher.parameters())
        assert info["genome"].key == info["genome_key"] and set(info["masks"]) == set(info["layers"])


def test_fine_tuning_a_reloaded_student_keeps_pruned_weights_zero(exported, one_torch_thread):
    from spikingjelly.activation_based import functional

    d = exported[0][0]
    splits = exported[1]
    student, _, info = evo_snn.load_exported(d)
    before = {n: student.get_submodule(n).weight.detach().clone() for n in info["masks"]}
    opt = torch.optim.SGD([p for p in student.parameters() if p.requires_grad], lr=1.0)
    student.train()
    x, y = splits.train[list(range(8))]
    for _ in range(2):
        loss = torch.nn.functional.cross_entropy(student(splits.train.to_seq(x)), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        functional.reset_net(student)
    changed = 0
    for name, mask in info["masks"].items():
        w = student.get_submodule(name).weight.detach()
        assert (w[~torch.from_numpy(mask)] == 0).all(), name  # pruned stays exactly zero
        changed += int((w != before[name]).any())
    assert changed > 0  # precondition: the step did change the kept weights


def test_student_loads_from_the_sparse_file_alone(exported, tmp_path, one_torch_thread):
    d, splits = exported[0][0], exported[1]
    copy = tmp_path / d.name
    shutil.copytree(d, copy)
    (copy / "student.pt").unlink()
    (copy / "teacher.pt").unlink()
    a, _, _ = evo_snn.load_exported(d)
    b, _, _ = evo_snn.load_exported(copy)
    assert torch.equal(predict_logits(a, splits.val), predict_logits(b, splits.val))


def test_load_errors_say_what_to_do(exported, tmp_path):
    d = exported[0][0]
    with pytest.raises(FileNotFoundError, match="metrics.json not found"):
        evo_snn.load_exported(tmp_path)
    old = tmp_path / "old"
    shutil.copytree(d, old)
    rec = json.loads((old / "metrics.json").read_text())
    del rec["model_args"]
    (old / "metrics.json").write_text(json.dumps(rec))
    with pytest.raises(ValueError, match=f"--pick uid={rec['uid']}"):
        evo_snn.load_exported(old)
    bad = tmp_path / "bad"
    shutil.copytree(d, bad)
    state = torch.load(bad / "student.pt", weights_only=True)
    name = json.loads((bad / "metrics.json").read_text())["layers"][0]
    state[name + ".weight"] = torch.ones_like(state[name + ".weight"])
    torch.save(state, bad / "student.pt")
    with pytest.raises(ValueError, match="non-zero where the genome's mask prunes"):
        evo_snn.load_exported(bad)
