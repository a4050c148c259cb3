"""evo_snn.state.rundir: run-directory errors, atomic writers, the manifest's life cycle,
``truncate_evaluations`` and the run logger on a tiny fake archive."""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from evo_snn import atomic
from evo_snn.structure.genome import Genome
from evo_snn.search.nsga import Individual
from evo_snn.state.rundir import RunDir, RunDirError, RunLogger, pareto_frame, save_state_dict


def _no_tmp_files(root):
    return [p.name for p in root.rglob("*") if ".tmp-" in p.name]


# ---------------------------------------------------------------------- create / open
def test_create_makes_the_layout_and_refuses_a_non_empty_directory(tmp_path):
    run = RunDir.create(tmp_path / "run", "synthetic", "x")
    assert run.path == tmp_path / "run"
    assert sorted(p.name for p in run.path.iterdir()) == ["exported", "plots", "teacher"]
    assert (run.teacher, run.exported, run.plots) == (run.path / "teacher", run.path / "exported", run.path / "plots")
    (tmp_path / "empty").mkdir()
    assert RunDir.create(tmp_path / "empty", "synthetic", "x").path.is_dir()  # an existing empty folder is fine
    (run.path / "config.json").write_text("{}")
    with pytest.raises(RunDirError, match="is not empty"):
        RunDir.create(run.path, "synthetic", "x")


def test_create_names_a_fresh_run_by_time_dataset_and_tag(tmp_path):
    run = RunDir.create(None, "nmnist", "kd", root=tmp_path / "runs")
    assert run.path.parent == tmp_path / "runs"
    assert re.fullmatch(r"\d{8}-\d{6}-nmnist-kd", run.path.name)
    assert (run.path / "teacher").is_dir()


def test_create_reports_an_unwritable_output(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(RunDirError, match="cannot create output directory .*pass a writable --out"):
        RunDir.create(blocker / "run", "synthetic", "x")


def test_open_reads_the_manifest_and_names_what_is_wrong(tmp_path):
    with pytest.raises(RunDirError, match="not found"):
        RunDir.open(tmp_path / "missing")
    bare = tmp_path / "bare"
    bare.mkdir()
    run = RunDir.open(bare)
    assert run.manifest == {} and run.plots.is_dir() and run.exported.is_dir()  # missing folders are made
    (bare / "manifest.json").write_text('{"status": "done", "seed": 3}')
    assert RunDir.open(bare).manifest == {"status": "done", "seed": 3}
    (bare / "manifest.json").write_text('{"status": ')  # cut short by a crash
    with pytest.raises(RunDirError, match="manifest.json: not readable JSON"):
        RunDir.open(bare)


# ---------------------------------------------------------------------- writers
def test_writers_round_trip_and_leave_no_tmp_files(tmp_path):
    run = RunDir.create(tmp_path / "run", "synthetic", "x")
    run.write_json("a/b.json", {"t": (1, 2), "x": np.float32(0.5), "p": tmp_path})
    assert json.loads((run.path / "a" / "b.json").read_text()) == {"t": [1, 2], "x": 0.5, "p": str(tmp_path)}
    run.write_csv("f.csv", pd.DataFrame({"gen": [0, 1], "hv": [0.25, 0.5]}))
    assert (run.path / "f.csv").read_text() == "gen,hv\n0,0.25\n1,0.5\n"
    run.append_jsonl("e.jsonl", {"gen": 0})
    run.append_jsonl("e.jsonl", {"gen": 1})
    assert (run.path / "e.jsonl").read_text() == '{"gen": 0}\n{"gen": 1}\n'
    run.write_jsonl("e.jsonl", [{"gen": 5}])
    assert (run.path / "e.jsonl").read_text() == '{"gen": 5}\n'
    state = {"w": torch.arange(6.0).reshape(2, 3).requires_grad_(), "n": torch.tensor(3)}
    save_state_dict(run.path / "s.pt", state)
    loaded = torch.load(run.path / "s.pt", weights_only=True)
    assert set(loaded) == {"w", "n"} and torch.equal(loaded["w"], state["w"].detach()) and not loaded["w"].requires_grad
    assert _no_tmp_files(run.path) == []


def test_a_failed_write_keeps_the_previous_file(tmp_path, monkeypatch):
    run = RunDir.create(tmp_path / "run", "synthetic", "x")
    run.write_json("config.json", {"v": 1})
    seen = []

    def failing_replace(src, dst):
        seen.append(Path(src).read_text())  # the whole new content was in the tmp file
        raise OSError("disk full")

    monkeypatch.setattr(atomic.os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        run.write_json("config.json", {"v": 2})
    assert json.loads((run.path / "config.json").read_text()) == {"v": 1}
    assert json.loads(seen[0]) == {"v": 2}


# ---------------------------------------------------------------------- manifest
def test_manifest_start_finish_resume_and_note(tmp_path):
    run = RunDir.create(tmp_path / "run", "synthetic", "x")
    run.start(["search", "--seed", "3"], seed=3, device="cpu", data_root="/data/nmnist")
    on_disk = json.loads((run.path / "manifest.json").read_text())
    assert on_disk == run.manifest
    assert (on_disk["status"], on_disk["end"], on_disk["seed"], on_disk["device"]) == ("running", None, 3, "cpu")
    assert on_disk["argv"] == ["search", "--seed", "3"] and on_disk["data_root"] == "/data/nmnist"
    assert on_disk["pid"] == os.getpid() and on_disk["versions"]["torch"] == torch.__version__
    start = on_disk["start"]

    run.finish("failed", error="RuntimeError: boom", traceback="...")
    m = RunDir.open(run.path).manifest
    assert m["status"] == "failed" and m["error"] == "RuntimeError: boom" and m["end"] is not None

    again = RunDir.open(run.path)
    again.resume(["search", "--resume", str(run.path)], from_gen=2, device="cpu", generations=5)
    m = json.loads((run.path / "manifest.json").read_text())
    assert (m["status"], m["end"], m["resumed_from_gen"]) == ("running", None, 2)
    assert "error" not in m and "traceback" not in m
    assert m["argv"] == ["search", "--seed", "3"] and m["start"] == start  # the original run's record stays
    (entry,) = m["resumes"]
    assert entry["argv"] == ["search", "--resume", str(run.path)] and entry["from_gen"] == 2
    assert entry["previous_status"] == "failed" and entry["previous_error"] == "RuntimeError: boom"
    assert entry["generations"] == 5

    again.note(backend="torch")
    again.finish("done", hypervolume=0.5)
    m = json.loads((run.path / "manifest.json").read_text())
    assert (m["status"], m["backend"], m["hypervolume"]) == ("done", "torch", 0.5) and "error" not in m
    assert _no_tmp_files(run.path) == []


def test_the_lock_ignores_a_manifest_that_names_a_live_unrelated_process(tmp_path):
    """A killed run's manifest still says 'running' with its pid, which may since belong to
    another process: only run.lock says whether the directory is being written."""
    run = RunDir.create(tmp_path / "run", "synthetic", "x")
    run.start([], seed=0, device="cpu")
    child = subprocess.Popen(["sleep", "30"])
    try:
        run.write_json("manifest.json", {**run.manifest, "pid": child.pid})  # alive, on this host, not a search
        again = RunDir.open(run.path)
        assert again.manifest["status"] == "running" and again.manifest["host"] == platform.node()
        again.lock()
        assert again._lock is not None and not hasattr(again, "running_elsewhere")
        again.unlock()
    finally:
        child.kill()
        child.wait()


# ---------------------------------------------------------------------- truncate_evaluations
def test_truncate_evaluations_keeps_finished_generations_only(tmp_path):
    run = RunDir.create(tmp_path / "run", "synthetic", "x")
    assert run.truncate_evaluations(3) == ([], 0)  # no file yet
    lines = ['{"gen": 0, "uid": "a"}', '{"gen": 1, "uid": "b"}', '{"gen": 2, "uid": "c"}',
             '{"uid": "no-gen"}', '[1, 2]', '{"gen": 1, "uid": "d"}', '{"gen": 2, "ui']  # last: cut by a crash
    (run.path / "evaluations.jsonl").write_text("\n".join(lines) + "\n")
    rows, dropped = run.truncate_evaluations(1)
    assert [r["uid"] for r in rows] == ["a", "b", "d"] and dropped == 4
    assert (run.path / "evaluations.jsonl").read_text() == '{"gen": 0, "uid": "a"}\n{"gen": 1, "uid": "b"}\n{"gen": 1, "uid": "d"}\n'
    assert _no_tmp_files(run.path) == []


def test_truncate_evaluations_leaves_a_complete_file_untouched(tmp_path):
    run = RunDir.create(tmp_path / "run", "synthetic", "x")
    text = '{"gen": 0,   "uid": "a"}\n{"gen": 1, "uid": "b"}\n'  # odd spacing: a rewrite would normalise it
    (run.path / "evaluations.jsonl").write_text(text)
    rows, dropped = run.truncate_evaluations(1)
    assert ([r["uid"] for r in rows], dropped) == (["a", "b"], 0)
    assert (run.path / "evaluations.jsonl").read_text() == text


# ---------------------------------------------------------------------- RunLogger / pareto_frame
def _genome(zeros: int, n: int = 10) -> Genome:
    mask = np.ones(n, dtype=bool)
    mask[:zeros] = False
    return Genome(("fc",), (zeros / n,), (mask,))


def _ind(uid, gen, acc, sparsity, zeros, parents=(), status="ok", **metrics):
    ind = Individual(_genome(zeros), uid, gen, parents=parents, metrics=metrics, status=status, seed=7)
    ind.fitness.values = (acc, sparsity)
    return ind


def _archive():
    return [
        _ind("g0-1", 0, 0.9, 0.2, 2, teacher_accuracy=0.95),
        _ind("g1-4", 1, 0.5, 0.8, 8, parents=("g0-1", "g0-2"), teacher_accuracy=0.6),
        _ind("g1-5", 1, 0.0, 0.0, 5, status="failed"),
    ]


def test_pareto_frame_lists_non_failed_members_by_sparsity():
    archive = _archive()
    front = pareto_frame(list(reversed(archive)))
    assert list(front.columns) == ["uid", "accuracy", "sparsity", "teacher_accuracy", "genome_sparsity", "gen",
                                   "genome_key", "parents"]
    assert front["uid"].tolist() == ["g0-1", "g1-4"]  # sorted by sparsity, the failed member left out
    assert front["accuracy"].tolist() == [0.9, 0.5] and front["sparsity"].tolist() == [0.2, 0.8]
    assert front["teacher_accuracy"].tolist() == [0.95, 0.6] and front["genome_sparsity"].tolist() == [0.2, 0.8]
    assert front["parents"].tolist() == ["", "g0-1 g0-2"]
    assert front["genome_key"].tolist() == [archive[0].genome.key, archive[1].genome.key]
    assert pareto_frame([]).empty and "uid" in pareto_frame([]).columns


def test_run_logger_writes_evaluations_generations_and_pareto(tmp_path):
    run = RunDir.create(tmp_path / "run", "synthetic", "x")
    logger = RunLogger(run)
    archive = _archive()
    for ind in archive:
        logger.on_evaluation(ind, ind.metrics)
    rows = [json.loads(line) for line in (run.path / "evaluations.jsonl").read_text().splitlines()]
    assert [r["uid"] for r in rows] == ["g0-1", "g1-4", "g1-5"] and rows == logger.rows
    assert rows[1] == {"gen": 1, "uid": "g1-4", "parents": ["g0-1", "g0-2"], "genome_key": archive[1].genome.key,
                       "status": "ok", "seed": 7, "ratios": [0.8], "teacher_accuracy": 0.6}
    assert rows[2]["status"] == "failed"

    population = archive[:2]
    search = SimpleNamespace(gen=0, population=population, archive=archive, n_evals=3, elapsed_s=1.5)
    logger(search)
    logger(SimpleNamespace(gen=1, population=population[:1], archive=archive[:1], n_evals=5, elapsed_s=4.0))
    gens = pd.read_csv(run.path / "generations.csv")
    assert gens["gen"].tolist() == [0, 1] and gens["n_evals"].tolist() == [3, 5]
    # union of [0, 0.9] x [0, 0.2] and [0, 0.5] x [0, 0.8] = 0.18 + 0.5 * 0.6; then 0.9 * 0.2 alone
    assert gens["hypervolume"].tolist() == pytest.approx([0.48, 0.18])
    assert gens["best_accuracy"].tolist() == [0.9, 0.9] and gens["mean_sparsity"].tolist() == pytest.approx([0.5, 0.2])
    assert gens["front_size"].tolist() == [2, 1] and gens["elapsed_s"].tolist() == [1.5, 4.0]
    pareto = pd.read_csv(run.path / "pareto.csv", keep_default_na=False)
    assert pareto["uid"].tolist() == ["g0-1"]  # the latest generation's archive
    assert _no_tmp_files(run.path) == []


def test_evaluations_after_and_row_metrics_give_back_what_the_logger_wrote(tmp_path):
    from evo_snn.state.rundir import EVALUATION_FIELDS, row_metrics

    run = RunDir.create(tmp_path / "r", "synthetic", "t")
    logger = RunLogger(run)
    g = Genome(("fc",), (0.5,), (np.array([True, False]),))
    metrics = {"accuracy": 1 / 3, "sparsity": 0.5, "layer_sparsity": {"fc": 0.5}, "wall_s": 0.1 + 0.2}
    for gen, uid in ((1, "01-0004"), (2, "02-0008")):
        ind = Individual(g, uid=uid, gen=gen, parents=("00-0001",), metrics=dict(metrics), status="ok", seed=7)
        logger.on_evaluation(ind, metrics)
    with open(run.path / "evaluations.jsonl", "a") as f:
        f.write('{"gen": 2, "uid": "02-00')  # a line cut short by a kill
    rows = run.evaluations_after(1)
    assert [r["uid"] for r in rows] == ["02-0008"]
    assert row_metrics(rows[0]) == metrics  # exact floats after the JSON round trip
    assert set(rows[0]) - set(metrics) == set(EVALUATION_FIELDS)
    assert run.evaluations_after(2) == [] and RunDir(tmp_path / "none").evaluations_after(0) == []
