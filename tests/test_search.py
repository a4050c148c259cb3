"""End to end: a tiny search on synthetic data through the CLI, and its run directory."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from evo_snn.config import ModelConfig
from evo_snn.structure.genome import Genome
from evo_snn.models import build_model
from evo_snn.search.run import main

TINY = ["--set", "data.synthetic_classes=3", "--set", "data.synthetic_train_per_class=16",
        "--set", "data.synthetic_test_per_class=6", "--set", "data.synthetic_size=8", "--set", "data.frames=4",
        "--set", "data.val_fraction=0.25", "--set", "model.channels=[4]", "--set", "teacher.epochs=2",
        "--set", "kd.epochs=0.5"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "r"
    rc = main(["--dataset", "synthetic", "--population", "4", "--generations", "2", "--seed", "3",
               "--out", str(out), "--no-progress", *TINY])
    assert rc == 0
    return out


def test_run_directory_has_every_file(run_dir):
    for rel in ["config.json", "manifest.json", "evaluations.jsonl", "generations.csv", "pareto.csv",
                "teacher/teacher.pt", "teacher/metrics.json", "plots/pareto.png", "plots/hypervolume.png",
                "checkpoints/state.json"]:
        assert (run_dir / rel).is_file(), rel
    assert not list(run_dir.rglob("*.tmp-*"))
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "completed" and manifest["seed"] == 3 and manifest["end"]
    assert manifest["data_root"] is None and "resumed_from_gen" not in manifest  # embedded data, never resumed
    assert manifest["backend"] == "torch"  # CPU
    assert manifest["versions"]["torch"].startswith(torch.__version__.split("+")[0])
    cfg = json.loads((run_dir / "config.json").read_text())
    assert cfg["search"]["population"] == 4 and cfg["model"]["channels"] == [4]


def test_evaluations_and_generations_are_consistent(run_dir):
    rows = [json.loads(line) for line in (run_dir / "evaluations.jsonl").read_text().splitlines()]
    assert len(rows) == 4 * 3  # initial population + 2 generations of 4 children
    assert [r["gen"] for r in rows] == [0] * 4 + [1] * 4 + [2] * 4
    assert len({r["uid"] for r in rows}) == len(rows)
    assert all(r["parents"] for r in rows if r["gen"] > 0)
    ok = [r for r in rows if r["status"] == "ok"]
    assert ok and all(0 <= r["accuracy"] <= 1 and 0 <= r["sparsity"] <= 1 for r in ok)
    for r in ok:  # student sparsity is the genome's: masks are kept during KD training
        assert r["sparsity"] == pytest.approx(r["genome_sparsity"])
    gens = pd.read_csv(run_dir / "generations.csv")
    assert list(gens["gen"]) == [0, 1, 2]
    assert (np.diff(gens["hypervolume"]) >= -1e-12).all()  # elitist archive: HV never drops


def test_pareto_front_is_non_dominated(run_dir):
    front = pd.read_csv(run_dir / "pareto.csv")
    assert {"uid", "accuracy", "sparsity", "teacher_accuracy"} <= set(front.columns)
    pts = front[["accuracy", "sparsity"]].to_numpy()
    for i, p in enumerate(pts):
        dominated = ((pts >= p).all(1) & (pts > p).any(1))
        assert not dominated.any(), f"member {front.uid[i]} is dominated"


def test_exports_load_with_weights_only_and_match_their_genome(run_dir):
    exported = sorted(p for p in (run_dir / "exported").iterdir())
    assert 1 <= len(exported) <= 2
    front = set(pd.read_csv(run_dir / "pareto.csv")["uid"])
    roles = set()
    for d in exported:
        assert d.name in front
        metrics = json.loads((d / "metrics.json").read_text())
        roles.update(metrics["roles"])
        assert 0 <= metrics["test_accuracy"] <= 1
        genome = Genome.load(d)
        teacher = torch.load(d / "teacher.pt", weights_only=True)
        student = torch.load(d / "student.pt", weights_only=True)
        for name, mask in genome.mask_dict().items():
            assert (teacher[name + ".weight"].numpy()[~mask] == 0).all()
            assert (student[name + ".weight"].numpy()[~mask] == 0).all()
        net = build_model(ModelConfig(name="tiny_conv", channels=(4,)), (4, 2, 8, 8), 3)
        net.load_state_dict(student)
    assert roles == {"best_accuracy", "knee"}
    tm = json.loads((run_dir / "teacher" / "metrics.json").read_text())
    assert 0 <= tm["val_accuracy"] <= 1 and 0 <= tm["test_accuracy"] <= 1


def test_teacher_reuse_and_clear_errors(run_dir, tmp_path, capsys):
    out = tmp_path / "again"
    rc = main(["--dataset", "synthetic", "--population", "4", "--generations", "0", "--seed", "3", "--out", str(out), "--no-progress",
               "--teacher", str(run_dir / "teacher" / "teacher.pt"), *TINY])
    assert rc == 0
    t0 = json.loads((run_dir / "teacher" / "metrics.json").read_text())
    t1 = json.loads((out / "teacher" / "metrics.json").read_text())
    assert t1["val_accuracy"] == pytest.approx(t0["val_accuracy"])

    # a teacher that does not fit the model: one-line error, exit 2, run marked failed
    rc = main(["--dataset", "synthetic", "--out", str(tmp_path / "bad"), "--no-progress", "--seed", "3",
               "--teacher", str(run_dir / "teacher" / "teacher.pt"), *TINY, "--set", "model.channels=[6]"])
    assert rc == 2
    assert "does not fit" in capsys.readouterr().err
    assert json.loads((tmp_path / "bad" / "manifest.json").read_text())["status"] == "failed"

    # a teacher trained on another train/validation split (another seed) is refused
    assert json.loads((out / "teacher" / "split.json").read_text()) == json.loads((run_dir / "teacher" / "split.json").read_text())
    for extra in (["--seed", "4"], ["--seed", "3", "--set", "data.val_fraction=0.5"]):
        rc = main(["--dataset", "synthetic", "--out", str(tmp_path / f"split{extra[1]}"), "--no-progress",
                   "--teacher", str(run_dir / "teacher" / "teacher.pt"), *TINY, *extra])
        assert rc == 2 and "another train/validation split" in capsys.readouterr().err

    # an occupied --out is refused before anything is written to it
    rc = main(["--dataset", "synthetic", "--out", str(run_dir), "--no-progress", *TINY])
    assert rc == 2 and "not empty" in capsys.readouterr().err

    # bad config: exit 2 and no run directory
    rc = main(["--dataset", "synthetic", "--out", str(tmp_path / "never"), "--set", "kd.alhpa=1"])
    assert rc == 2 and not (tmp_path / "never").exists()
    assert "kd.alhpa" in capsys.readouterr().err


def test_missing_data_root_is_a_clear_error(tmp_path, capsys):
    rc = main(["--dataset", "nmnist", "--data-root", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "nowhere" in err and not (tmp_path / "o").exists()


def test_help_lists_every_flag(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for flag in ["--dataset", "--model", "--data-root", "--config", "--set", "--population", "--generations", "--workers",
                 "--address", "--seed", "--out", "--teacher", "--resume"]:
        assert flag in text


@pytest.mark.parametrize("bad", ["model.name=nope", "genome.prunable=[features.99]", "model.channels=[4,4,4,4,4]"])
def test_bad_model_settings_fail_before_any_output(bad, tmp_path, capsys):
    rc = main(["--dataset", "synthetic", "--out", str(tmp_path / "o"), "--no-progress", *TINY, "--set", bad])
    assert rc == 2
    assert "error:" in capsys.readouterr().err and not (tmp_path / "o").exists()


@pytest.mark.parametrize("mode", ["self", "default", "ann", "none"])
def test_every_kd_mode_runs_inside_the_search(mode, tmp_path):
    out = tmp_path / mode
    rc = main(["--dataset", "synthetic", "--population", "4", "--generations", "0", "--out", str(out),
               "--no-progress", *TINY, "--set", f"kd={mode}"])
    assert rc == 0
    rows = [json.loads(line) for line in (out / "evaluations.jsonl").read_text().splitlines()]
    assert {r["kd_mode"] for r in rows} == {mode} and all(r["status"] == "ok" for r in rows)
    assert json.loads((out / "config.json").read_text())["kd"]["mode"] == mode
    assert (out / "teacher" / "ann_teacher.pt").exists() == (mode == "ann")
    if mode == "ann":
        ann = torch.load(out / "teacher" / "ann_teacher.pt", weights_only=True)
        snn = torch.load(out / "teacher" / "teacher.pt", weights_only=True)
        assert set(ann) <= set(snn) and any(not torch.equal(ann[k], snn[k]) for k in ann)


@pytest.mark.slow  # the fast path: test_resume.py::test_sigterm_then_resume (the same CLI process, SIGTERM, 130, 'interrupted')
def test_sigterm_marks_the_run_interrupted(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "evo_snn.search", "--out", str(out), "--no-progress",
                             "--population", "4", "--generations", "50", *TINY])
    manifest = out / "manifest.json"
    deadline = time.time() + 120
    while time.time() < deadline and not (out / "evaluations.jsonl").exists():
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 130
    assert json.loads(manifest.read_text())["status"] == "interrupted"


def test_final_retraining_before_the_test_measurement(tmp_path):
    """search.final_epochs > 0: each exported member is retrained from its genome (masks kept)
    before its single test measurement, and the retrained student is what is exported."""
    out = tmp_path / "fe"
    assert main(["--dataset", "synthetic", "--population", "4", "--generations", "0", "--seed", "3", "--out", str(out),
                 "--no-progress", *TINY, "--set", "search.final_epochs=1"]) == 0
    ckpt_students = out / "checkpoints" / "students"
    for d in (out / "exported").iterdir():
        m = json.loads((d / "metrics.json").read_text())
        assert m["final_epochs"] == 1.0 and 0 <= m["retrained_val_accuracy"] <= 1 and m["retrain_samples"] > m["train_samples"]
        exported = torch.load(d / "student.pt", weights_only=True)
        searched = torch.load(ckpt_students / f"{m['genome_key']}.pt", weights_only=True)
        assert any(not torch.equal(exported[k], searched[k]) for k in exported if exported[k].is_floating_point())
        genome = Genome.load(d)
        for name, mask in genome.mask_dict().items():  # pruned weights stay zero after retraining
            assert (exported[name + ".weight"].numpy()[~mask] == 0).all()
