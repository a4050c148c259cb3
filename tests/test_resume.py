"""Search checkpoints and ``--resume RUN_DIR``: an interrupted search continues exactly.

The reference is one tiny synthetic search run for 3 generations straight; the same
search stopped after generation 1 (``--generations 1``), interrupted in the middle of
generation 2 (Ctrl-C), or crashed while writing generation 2's checkpoint must, once
resumed, give the same evaluations and the same Pareto front.
"""

import hashlib
import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

import evo_snn.state.checkpoint as checkpoint_mod
import evo_snn.state.runlog as runlog_mod
from evo_snn.state.checkpoint import CheckpointError, CheckpointWriter, load_checkpoint, student_store
from evo_snn.config import GenomeConfig, SearchConfig
from evo_snn.evaluation.fitness import FitnessResult
from evo_snn.structure.genome import GenomeOps
from evo_snn.search.nsga import StructureSearch
from evo_snn.search.run import main

from test_search import TINY

BASE = ["--dataset", "synthetic", "--population", "4", "--seed", "3", "--no-progress", *TINY]


def _run(out, generations):
    return main([*BASE, "--generations", str(generations), "--out", str(out)])


def _resume(out, *extra):
    return main(["--resume", str(out), "--no-progress", *extra])


def _evaluations(run):
    return [json.loads(line) for line in (run / "evaluations.jsonl").read_text().splitlines()]


def _manifest(run):
    return json.loads((run / "manifest.json").read_text())


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def straight(tmp_path_factory, one_torch_thread):
    out = tmp_path_factory.mktemp("straight") / "r"
    assert _run(out, 3) == 0
    return out


@pytest.fixture(scope="module")
def split(tmp_path_factory, one_torch_thread):
    """Stopped after generation 1, then resumed to 3."""
    out = tmp_path_factory.mktemp("split") / "r"
    assert _run(out, 1) == 0
    state = {"teacher": _sha(out / "teacher" / "teacher.pt"), "exported": sorted(p.name for p in (out / "exported").iterdir()),
             "manifest": _manifest(out), "ckpt_gen": load_checkpoint(out / "checkpoints").gen}
    assert _resume(out, "--generations", "3") == 0
    return out, state


def assert_same_search(run, reference):
    """The same evaluations (uid, genome key, ratios, seed, accuracy, sparsity, train loss) and the same front."""
    cols = ["uid", "genome_key", "status", "seed", "gen", "parents", "ratios", "accuracy", "sparsity", "train_loss"]
    got = [{k: r.get(k) for k in cols} for r in _evaluations(run)]
    want = [{k: r.get(k) for k in cols} for r in _evaluations(reference)]
    assert got == want
    front = pd.read_csv(run / "pareto.csv")[["uid", "accuracy", "sparsity", "genome_key"]]
    pd.testing.assert_frame_equal(front, pd.read_csv(reference / "pareto.csv")[["uid", "accuracy", "sparsity", "genome_key"]])
    gens = pd.read_csv(run / "generations.csv")
    ref = pd.read_csv(reference / "generations.csv")
    assert list(gens["gen"]) == [0, 1, 2, 3]  # no duplicated generation rows
    for col in ["n_evals", "hypervolume", "best_accuracy", "mean_sparsity", "front_size"]:
        np.testing.assert_allclose(gens[col], ref[col], rtol=0, atol=0, err_msg=col)
    assert sorted(p.name for p in (run / "exported").iterdir()) == sorted(p.name for p in (reference / "exported").iterdir())
    for d in (run / "exported").iterdir():
        a = json.loads((d / "metrics.json").read_text())
        b = json.loads((reference / "exported" / d.name / "metrics.json").read_text())
        assert (a["roles"], a["accuracy"], a["test_accuracy"]) == (b["roles"], b["accuracy"], b["test_accuracy"])


def assert_clean_checkpoints(run, gen):
    ck = run / "checkpoints"
    loaded = load_checkpoint(ck)
    assert loaded.gen == gen
    pointer = json.loads((ck / "state.json").read_text())
    assert pointer["gen"] == gen
    assert sorted(p.name for p in ck.iterdir()) == sorted(["state.json", "genomes", "students", pointer["dir"]])
    keys = {r["genome_key"] for r in loaded.state["population"] + loaded.state["archive"]}
    assert {p.name for p in (ck / "genomes").iterdir()} == keys  # bounded: unreferenced files deleted
    assert {p.stem for p in (ck / "students").iterdir()} == set(loaded.state["results"]) <= keys
    assert len(loaded.state["population"]) == 4
    assert not list(run.rglob("*.tmp-*")) and not list(run.rglob("tmp-*"))
    for pt in run.rglob("*.pt"):  # never pickle-only formats
        obj = torch.load(pt, weights_only=True)
        assert isinstance(obj, dict) and all(isinstance(v, torch.Tensor) for v in obj.values()), pt
    suffixes = {p.suffix for p in ck.rglob("*") if p.is_file()}
    assert suffixes <= {".json", ".npz", ".pt"}, suffixes


def test_straight_run_writes_a_checkpoint_after_the_last_generation(straight):
    assert_clean_checkpoints(straight, 3)
    state = load_checkpoint(straight / "checkpoints").state
    assert state["counter"] == 16
    assert [row["gen"] for row in load_checkpoint(straight / "checkpoints").logbook] == [0, 1, 2, 3]
    front = set(pd.read_csv(straight / "pareto.csv")["uid"])
    assert {r["uid"] for r in state["archive"]} == front


def test_resume_after_generation_1_equals_the_straight_run(split, straight):
    run, before = split
    assert before["ckpt_gen"] == 1 and before["manifest"]["status"] == "completed"
    assert_same_search(run, straight)
    assert_clean_checkpoints(run, 3)
    assert _sha(run / "teacher" / "teacher.pt") == before["teacher"]  # loaded, not trained again
    m = _manifest(run)
    assert m["status"] == "completed" and m["resumed_from_gen"] == 1 and m["end"]
    assert m["argv"] == before["manifest"]["argv"] and m["start"] == before["manifest"]["start"]
    assert len(m["resumes"]) == 1 and m["resumes"][0]["previous_status"] == "completed"
    assert m["n_evaluations"] == 16
    assert json.loads((run / "config.json").read_text())["search"]["generations"] == 3
    for rel in ["plots/pareto.png", "plots/hypervolume.png", "teacher/metrics.json"]:
        assert (run / rel).is_file()
    # exported/ holds this run's choice only (members chosen after generation 1 and no longer are removed)
    assert sorted(p.name for p in (run / "exported").iterdir()) == sorted(m["exported"])


def test_resume_after_ctrl_c_in_the_middle_of_a_generation(straight, tmp_path, monkeypatch, one_torch_thread, capsys):
    out = tmp_path / "r"
    original = runlog_mod.RunLogger.on_evaluation

    def interrupt_in_gen_2(self, ind, result):
        original(self, ind, result)
        if ind.gen == 2 and len(self.rows) == 10:  # two of generation 2's four evaluations are logged
            raise KeyboardInterrupt

    monkeypatch.setattr(runlog_mod.RunLogger, "on_evaluation", interrupt_in_gen_2)
    assert _run(out, 3) == 130
    monkeypatch.undo()
    err = capsys.readouterr().err  # where the run stands and the exact command that continues it
    assert "interrupted during generation 2/3; generations 0-1 are checkpointed" in err
    assert f"python -m evo_snn.search --resume {out}" in err
    assert _manifest(out)["status"] == "interrupted"
    assert [r["gen"] for r in _evaluations(out)] == [0] * 4 + [1] * 4 + [2] * 2
    assert load_checkpoint(out / "checkpoints").gen == 1

    assert _resume(out) == 0  # up to search.generations = 3 from config.json
    assert "2 finished evaluations of the unfinished generation are reused" in capsys.readouterr().out
    assert_same_search(out, straight)
    m = _manifest(out)
    assert m["status"] == "completed" and m["resumed_from_gen"] == 1
    assert m["resumes"][0]["previous_status"] == "interrupted" and m["resumes"][0]["dropped_evaluations"] == 2
    assert m["resumes"][0]["reused_evaluations"] == 2  # not trained again


def test_resume_after_a_crash_while_writing_a_checkpoint(straight, tmp_path, monkeypatch, one_torch_thread):
    """A checkpoint cut short (after its students, before the pointer) never replaces the good one."""
    out = tmp_path / "r"
    original = checkpoint_mod.save_state_dict
    calls = []

    def crash_on_third_rng_state(path, state):
        if path.name == "torch_rng.pt":
            calls.append(path)
            if len(calls) == 3:  # generation 2
                raise RuntimeError("disk full")
        original(path, state)

    monkeypatch.setattr(checkpoint_mod, "save_state_dict", crash_on_third_rng_state)
    with pytest.raises(RuntimeError, match="disk full"):
        _run(out, 3)
    monkeypatch.undo()
    m = _manifest(out)
    assert m["status"] == "failed" and "disk full" in m["error"]
    assert list(pd.read_csv(out / "generations.csv")["gen"]) == [0, 1, 2]  # the logger got further than the checkpoint
    assert load_checkpoint(out / "checkpoints").gen == 1

    assert _resume(out, "--generations", "3") == 0
    assert_same_search(out, straight)
    assert_clean_checkpoints(out, 3)
    m = _manifest(out)
    assert m["status"] == "completed" and "error" not in m and "disk full" in m["resumes"][0]["previous_error"]


def test_resume_of_a_completed_run_without_new_generations_says_it_is_complete(split, tmp_path, capsys):
    run = tmp_path / "copy"
    shutil.copytree(split[0], run)
    evals, manifest = (run / "evaluations.jsonl").read_text(), _manifest(run)
    assert _resume(run) == 0
    assert f"{run} is complete (generation 3/3" in capsys.readouterr().out
    assert (run / "evaluations.jsonl").read_text() == evals
    assert list(pd.read_csv(run / "generations.csv")["gen"]) == [0, 1, 2, 3]
    assert _manifest(run) == manifest  # nothing redone: no export, no test pass, no new resume record
    # going back is refused
    assert _resume(run, "--generations", "2") == 2
    assert "--generations >= 3" in capsys.readouterr().err


@pytest.mark.parametrize("flag", [["--dataset", "synthetic"], ["--config", "x.yaml"], ["--set", "kd.alpha=0.5"],
                                  ["--seed", "0"], ["--out", "elsewhere"], ["--population", "8"]])
def test_resume_refuses_flags_that_change_the_search(flag, split, capsys):
    before = (split[0] / "manifest.json").read_text()
    assert main(["--resume", str(split[0]), *flag]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and flag[0] in err and len(err.strip().splitlines()) == 1
    assert (split[0] / "manifest.json").read_text() == before


def test_resume_errors_are_one_line_and_exit_2(split, tmp_path, capsys):
    def error_of(*argv):
        assert main(["--resume", *argv, "--no-progress"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error:") and len(err.splitlines()) == 1, err
        return err

    assert "not found" in error_of(str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    assert "nothing to resume" in error_of(str(tmp_path / "empty"))
    # a run without checkpoints (e.g. from an older version)
    old = tmp_path / "old"
    shutil.copytree(split[0], old)
    shutil.rmtree(old / "checkpoints")
    assert "nothing to resume" in error_of(str(old))
    # a config that does not validate, or is not there
    bad = tmp_path / "bad"
    shutil.copytree(split[0], bad)
    cfg = json.loads((bad / "config.json").read_text())
    cfg["search"]["population"] = 6
    (bad / "config.json").write_text(json.dumps(cfg))
    assert "multiple of 4" in error_of(str(bad))
    cfg["search"]["population"] = 4
    cfg["kd"]["alhpa"] = 1.0
    (bad / "config.json").write_text(json.dumps(cfg))
    assert "alhpa" in error_of(str(bad))
    (bad / "config.json").unlink()
    assert "config.json not found" in error_of(str(bad))
    # a checkpoint whose files are gone
    broken = tmp_path / "broken"
    shutil.copytree(split[0], broken)
    for p in (broken / "checkpoints" / "students").iterdir():
        p.unlink()
    assert "incomplete" in error_of(str(broken))
    # a manifest naming a live process (a killed search's pid, reused) does not refuse --resume: test_lock.py


# ----------------------------------------------------------------- the writer, without training
def _analytic(g, _seed):
    s = g.sparsity
    return FitnessResult({"accuracy": 1 - s**2 - 0.05 * g.ratios[0], "sparsity": s}, {"w": torch.full((2,), float(s))})


def test_writer_keeps_the_folder_bounded_and_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    ops = GenomeOps({"a": np.abs(rng.normal(size=(8, 4))), "b": np.abs(rng.normal(size=(20,)))},
                    GenomeConfig(ratio_mutation_prob=0.5, mask_mutation_prob=0.5))
    store = student_store(tmp_path / "checkpoints")
    writer = CheckpointWriter(tmp_path / "checkpoints", store)
    seen = []

    def on_generation(search):
        gen, pop, archive = search.gen, search.population, search.archive
        writer.save(search.state_dict(), [{"gen": gen}])
        ck = load_checkpoint(tmp_path / "checkpoints")
        live = {i.genome.key for i in pop} | {i.genome.key for i in archive}
        assert ck.gen == gen and set(ck.state["genomes"]) == live
        assert {p.stem for p in (tmp_path / "checkpoints" / "students").iterdir()} == set(search.results)
        for key, metrics in ck.state["results"].items():
            sparsity = search.results[key]["sparsity"]
            assert torch.equal(ck.students.get(key)["w"], torch.full((2,), float(sparsity)))
            assert metrics == search.results[key]
        seen.append(gen)

    search = StructureSearch(ops, _analytic, SearchConfig(population=8, generations=4, seed=0), GenomeConfig(),
                             store=store, callbacks=[on_generation], progress=False)
    search.run()
    assert seen == [0, 1, 2, 3, 4]
    with pytest.raises(CheckpointError, match="nothing to resume"):
        load_checkpoint(tmp_path / "none")


def test_resume_reloads_real_data_from_the_recorded_data_root(tmp_path, monkeypatch, one_torch_thread):
    """An N-MNIST run given a relative --data-root resumes from another folder without one."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("data_conftest", Path(__file__).parent / "data" / "conftest.py")
    writers = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(writers)
    writers.make_nmnist_tree(tmp_path / "nm", {"Train": {d: 6 for d in range(3)}, "Test": {d: 2 for d in range(3)}})
    monkeypatch.chdir(tmp_path)
    sets = ["model.name=tiny_conv", "model.channels=[4]", "data.frames=4", "data.val_fraction=0.25", "teacher.epochs=1",
            "kd.epochs=0.5", "search.workers=1", f"data.cache_dir={tmp_path / 'cache'}"]
    argv = ["--dataset", "nmnist", "--data-root", "nm", "--population", "4", "--generations", "0", "--out", "run",
            "--no-progress", *[a for s in sets for a in ("--set", s)]]
    assert main(argv) == 0
    assert _manifest(tmp_path / "run")["data_root"] == str(tmp_path / "nm")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert main(["--resume", str(tmp_path / "run"), "--generations", "1", "--no-progress"]) == 0
    assert [r["gen"] for r in _evaluations(tmp_path / "run")] == [0] * 4 + [1] * 4
    assert list(pd.read_csv(tmp_path / "run" / "generations.csv")["gen"]) == [0, 1]
    assert_clean_checkpoints(tmp_path / "run", 1)


def test_sigterm_then_resume(tmp_path, one_torch_thread):
    """A search ended by SIGTERM (a scheduler) after its first checkpoint resumes from it."""
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "evo_snn.search", "--out", str(out), *BASE, "--generations", "50"])
    deadline = time.time() + 120
    while time.time() < deadline and not (out / "checkpoints" / "state.json").exists():
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 130
    assert _manifest(out)["status"] == "interrupted"
    gen = load_checkpoint(out / "checkpoints").gen
    assert main(["--resume", str(out), "--generations", str(gen + 1), "--no-progress"]) == 0
    assert list(pd.read_csv(out / "generations.csv")["gen"]) == list(range(gen + 2))
    rows = _evaluations(out)
    assert [r["gen"] for r in rows] == sorted(r["gen"] for r in rows) and len({r["uid"] for r in rows}) == len(rows)
    assert _manifest(out)["status"] == "completed" and _manifest(out)["resumed_from_gen"] == gen
    assert_clean_checkpoints(out, gen + 1)


def test_resume_of_an_ann_kd_run_loads_the_ann_teacher(tmp_path, one_torch_thread, capsys):
    out = tmp_path / "ann"
    assert main([*BASE, "--generations", "0", "--out", str(out), "--set", "kd=ann"]) == 0
    ann = _sha(out / "teacher" / "ann_teacher.pt")
    broken = tmp_path / "no_ann"
    shutil.copytree(out, broken)
    assert main(["--resume", str(out), "--generations", "1", "--no-progress"]) == 0
    assert _sha(out / "teacher" / "ann_teacher.pt") == ann
    assert {r["kd_mode"] for r in _evaluations(out)} == {"ann"} and len(_evaluations(out)) == 8
    (broken / "teacher" / "ann_teacher.pt").unlink()
    capsys.readouterr()
    before = (broken / "manifest.json").read_text()
    assert main(["--resume", str(broken), "--generations", "1", "--no-progress"]) == 2
    assert "ann_teacher.pt not found" in capsys.readouterr().err
    assert (broken / "manifest.json").read_text() == before  # refused before anything is written


def test_resume_with_inheritance_seeding_and_informed_mutation_equals_a_straight_run(tmp_path, one_torch_thread):
    """Weight inheritance reads parents' students from the checkpoint; informed mutation their
    |W|: a resumed run still equals a straight one."""
    extra = ["--set", "search.inherit_weights=true", "--set", "genome.mask_mutation=magnitude",
             "--set", "genome.init_global_fraction=0.5"]
    a, b = tmp_path / "straight", tmp_path / "split"
    assert main([*BASE, *extra, "--generations", "3", "--out", str(a)]) == 0
    assert main([*BASE, *extra, "--generations", "1", "--out", str(b)]) == 0
    assert _resume(b, "--generations", "3") == 0
    assert_same_search(b, a)
    rows = _evaluations(a)
    assert all(r["inherited"] == (r["gen"] > 0) for r in rows if r["status"] == "ok")
