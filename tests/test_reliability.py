"""Issue 27's fault table, one row at a time (the rows fixed so far)."""

from __future__ import annotations

import json

import pandas as pd

from evo_snn.search.run import main

from test_search import TINY


def test_d5_generations_without_a_successful_evaluation(tmp_path, capsys):
    """D5: every evaluation fails (raise, no retries). The search goes through its
    generations (each logged as having no successful evaluation), then stops with status
    'failed', exit 1 and one line naming the errors, instead of an IndexError traceback."""
    out = tmp_path / "r"
    rc = main(["--dataset", "synthetic", "--population", "4", "--generations", "1", "--no-progress", *TINY,
               "--set", "faults.fail_rate=0.999", "--set", "faults.kinds=[raise]", "--set", "search.max_retries=0",
               "--out", str(out)])
    captured = capsys.readouterr()
    assert rc == 1
    err = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and "every one of the 8 evaluations failed" in err[0] and "InjectedFault" in err[0]
    assert "Traceback" not in captured.err
    assert captured.out.count("no successful evaluation yet (4 of 4 failed") == 2
    m = json.loads((out / "manifest.json").read_text())
    assert m["status"] == "failed" and "evaluations failed" in m["error"]
    assert list(pd.read_csv(out / "generations.csv")["gen"]) == [0, 1]
    assert not (out / "exported").exists() or not any((out / "exported").iterdir())


def test_d1_sigterm_with_ray_workers_ends_interrupted(tmp_path):
    """D1: SIGTERM to a driver with 2 Ray workers. ray.init replaces the driver's SIGTERM
    handler with one that aborts (exit 134, manifest left 'running'); the run reclaims it, so
    the run ends 'interrupted' with exit 130, the --resume command printed, and no Ray
    process of it left."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import psutil

    out = tmp_path / "r"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "evo_snn.search", "--dataset", "synthetic", "--population", "8",
                             "--generations", "50", "--workers", "2", "--no-progress", *TINY, "--out", str(out)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not (out / "checkpoints" / "state.json").exists() and proc.poll() is None:
        time.sleep(0.2)
    children = psutil.Process(proc.pid).children(recursive=True)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=90)
    assert proc.returncode == 130, err[-2000:]
    assert f"python -m evo_snn.search --resume {out}" in err and "SIGTERM received" not in err
    assert json.loads((out / "manifest.json").read_text())["status"] == "interrupted"
    gone, alive = psutil.wait_procs(children, timeout=30)
    assert not alive, [p.cmdline()[:2] for p in alive]


import pytest  # noqa: E402

from evo_snn.names import UnsafeNameError, plain_name  # noqa: E402


@pytest.mark.parametrize("bad", ["..", "../x", "/abs", "a/b", "a\\b", "a\x00b", "", ".hidden", "x..y", None, 7,
                                 "/../../../../outside/TRAV", "a" * 201])
def test_d3_plain_name_refuses_what_could_leave_the_folder(bad):
    with pytest.raises(UnsafeNameError, match="uid .* in f.json is not a plain name"):
        plain_name(bad, "uid", "f.json")


@pytest.mark.parametrize("good", ["01-0014", "e13a224a1f0bc3dc", "gen-0003-1a2b3c", "masks.npz", "teacher.sparse.npz"])
def test_d3_plain_name_keeps_the_project_names(good):
    assert plain_name(good, "name") == good


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("d3") / "r"
    assert main(["--dataset", "synthetic", "--population", "4", "--generations", "1", "--no-progress", *TINY,
                 "--out", str(out)]) == 0
    return out


@pytest.mark.parametrize("target", ["uid", "dir"])
def test_d3_resume_refuses_a_rewritten_name(finished_run, tmp_path, capsys, target):
    """A uid in the checkpoint, or state.json's folder, rewritten to leave the run directory:
    --resume stops with a one-line error naming the file, and reads nothing outside."""
    import shutil

    run = tmp_path / "r"
    shutil.copytree(finished_run, run)
    pointer = run / "checkpoints" / "state.json"
    state = json.loads(pointer.read_text())
    if target == "dir":
        state["dir"] = "../../" + state["dir"]
        pointer.write_text(json.dumps(state))
        culprit = pointer
    else:
        culprit = run / "checkpoints" / state["dir"] / "search.json"
        doc = json.loads(culprit.read_text())
        doc["population"][0]["uid"] = "/../../../../outside/TRAV"
        culprit.write_text(json.dumps(doc))
    capsys.readouterr()
    assert main(["--resume", str(run), "--generations", "2", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "is not a plain name" in err and str(culprit) in err
    assert not (tmp_path / "outside").exists()


@pytest.mark.parametrize("damage", ["truncate", "replace"])
def test_d4_resume_refuses_a_corrupt_student_naming_it(finished_run, tmp_path, capsys, damage):
    """D4: a truncated student file, or one replaced by another net's state_dict, is refused
    by --resume with a one-line error naming the file (it used to pass and crash export)."""
    import shutil

    import torch

    run = tmp_path / "r"
    shutil.copytree(finished_run, run)
    victim = sorted((run / "checkpoints" / "students").glob("*.pt"))[0]
    if damage == "truncate":
        victim.write_bytes(victim.read_bytes()[:100])
    else:
        torch.save({"weight": torch.zeros(3, 3)}, victim)
    capsys.readouterr()
    assert main(["--resume", str(run), "--generations", "2", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(victim) in err


def test_d6_emptied_history_is_rebuilt_from_the_checkpoint_and_reported(finished_run, tmp_path, capsys):
    """D6: an emptied evaluations.jsonl no longer resumes silently with only the new rows:
    the checkpoint's members are rebuilt (rebuilt: true), the rest is reported as lost, in
    the output and in the manifest's resume record."""
    import shutil

    run = tmp_path / "r"
    shutil.copytree(finished_run, run)
    original = [json.loads(line) for line in (run / "evaluations.jsonl").read_text().splitlines()]
    (run / "evaluations.jsonl").write_text("")
    capsys.readouterr()
    assert main(["--resume", str(run), "--generations", "2", "--no-progress"]) == 0
    out = capsys.readouterr().out
    rows = [json.loads(line) for line in (run / "evaluations.jsonl").read_text().splitlines()]
    rebuilt = [r for r in rows if r.get("rebuilt")]
    assert rebuilt and all(r["gen"] <= 1 for r in rebuilt)
    by_uid = {r["uid"]: r for r in original}
    for r in rebuilt:  # the same metrics as the rows that were lost
        assert r["accuracy"] == by_uid[r["uid"]]["accuracy"] and r["genome_key"] == by_uid[r["uid"]]["genome_key"]
    assert [r["gen"] for r in rows if not r.get("rebuilt")] == [2] * 4
    record = json.loads((run / "manifest.json").read_text())["resumes"][-1]
    assert record["rebuilt_evaluations"] == len(rebuilt) and record["lost_evaluations"] == len(original) - len(rebuilt)
    assert f"lacks {len(original)} of the {len(original)} evaluations" in out and "lost" in out


def test_d6_intact_history_is_left_alone(finished_run, tmp_path):
    import shutil

    run = tmp_path / "r"
    shutil.copytree(finished_run, run)
    before = (run / "evaluations.jsonl").read_text()
    assert main(["--resume", str(run), "--generations", "2", "--no-progress"]) == 0
    assert (run / "evaluations.jsonl").read_text().startswith(before)
    record = json.loads((run / "manifest.json").read_text())["resumes"][-1]
    assert "rebuilt_evaluations" not in record


def test_d3_export_of_a_rewritten_uid_writes_nothing_outside(finished_run, tmp_path, capsys):
    """D3's reproduction: a uid rewritten to a traversal in the checkpoint, pareto.csv and
    evaluations.jsonl; export stops with one line (exit 2) and writes nothing outside."""
    import shutil

    from evo_snn.deploy.export import main as export_main

    run = tmp_path / "deep" / "er" / "r"
    shutil.copytree(finished_run, run)
    uid = json.loads((run / "manifest.json").read_text())["exported"][0]
    evil = "/../../../../outside/TRAV"
    for f in [*run.glob("checkpoints/gen-*/search.json"), run / "pareto.csv", run / "evaluations.jsonl"]:
        f.write_text(f.read_text().replace(uid, evil))
    capsys.readouterr()
    assert export_main([str(run), "--pick", "max-accuracy", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "is not a plain name" in err
    assert not any(p.name == "TRAV" for p in tmp_path.rglob("*"))


def test_d3_load_exported_refuses_a_masks_file_outside_its_folder(finished_run, tmp_path):
    import shutil

    from evo_snn import load_exported

    uid = json.loads((finished_run / "manifest.json").read_text())["exported"][0]
    export = tmp_path / "e"
    shutil.copytree(finished_run / "exported" / uid, export)
    meta = json.loads((export / "genome.json").read_text())
    meta["masks_file"] = "../" + (finished_run / "exported" / uid / "masks.npz").relative_to(finished_run.parent).as_posix()
    (export / "genome.json").write_text(json.dumps(meta))
    with pytest.raises(UnsafeNameError, match="masks_file"):
        load_exported(export)


def test_d9_a_failed_resume_keeps_a_completed_run_completed(finished_run, tmp_path, capsys):
    import shutil

    run = tmp_path / "r"
    shutil.copytree(finished_run, run)
    before = json.loads((run / "manifest.json").read_text())
    (run / "teacher" / "teacher.pt").write_bytes(b"broken")
    assert main(["--resume", str(run), "--generations", "2", "--no-progress"]) == 2
    assert "teacher.pt" in capsys.readouterr().err
    m = json.loads((run / "manifest.json").read_text())
    assert m["status"] == "completed" and m["end"] == before["end"] and "error" not in m
    assert "teacher.pt" in m["resumes"][-1]["error"]


def test_d9_a_missing_teacher_leaves_no_run_directory(tmp_path, capsys):
    out = tmp_path / "r"
    argv = ["--dataset", "synthetic", "--population", "4", "--generations", "0", "--no-progress", *TINY, "--out", str(out)]
    assert main([*argv, "--teacher", str(tmp_path / "nonexistent.pt")]) == 2
    assert "no such file" in capsys.readouterr().err and not out.exists()
    assert main(argv) == 0  # the same --out is free


@pytest.mark.parametrize("damage", ["rng_pickle", "manifest_list", "jsonl_bytes"])
def test_d8_damaged_files_give_one_line_not_a_traceback(finished_run, tmp_path, capsys, damage):
    import pickle
    import shutil

    run = tmp_path / "r"
    shutil.copytree(finished_run, run)
    pointer = json.loads((run / "checkpoints" / "state.json").read_text())
    if damage == "rng_pickle":
        (run / "checkpoints" / pointer["dir"] / "torch_rng.pt").write_bytes(pickle.dumps({"cpu": print}))
    elif damage == "manifest_list":
        (run / "manifest.json").write_text("[1, 2]")
    else:
        with open(run / "evaluations.jsonl", "ab") as f:
            f.write(b'{"gen": 1, "uid": "\xff\xfe"}\n')
    capsys.readouterr()
    rc = main(["--resume", str(run), "--generations", "2", "--no-progress"])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    if damage == "jsonl_bytes":  # the bad line is dropped like a torn one, and the run goes on
        assert rc == 0
    else:
        assert rc == 2 and len([ln for ln in err.splitlines() if ln.startswith("error:")]) == 1
        assert ("torch_rng.pt" if damage == "rng_pickle" else "manifest.json") in err


def test_d8_missing_rng_and_manifest_are_warnings_naming_what_is_lost(finished_run, tmp_path, capsys):
    import shutil

    run = tmp_path / "r"
    shutil.copytree(finished_run, run)
    pointer = json.loads((run / "checkpoints" / "state.json").read_text())
    (run / "checkpoints" / pointer["dir"] / "torch_rng.pt").unlink()
    (run / "manifest.json").unlink()
    with pytest.warns(UserWarning, match="torch_rng.pt is missing"):
        assert main(["--resume", str(run), "--generations", "2", "--no-progress"]) == 0
    assert "manifest.json is missing: the run's original argv" in capsys.readouterr().out


def _limited(max_bytes):
    def preexec():
        import resource

        resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, max_bytes))
    return preexec


def test_d7_a_full_disk_is_one_line_and_resumable(tmp_path):
    """D7: a file-size limit (as ``ulimit -f 20``) hit while the search writes: one line
    naming the --resume command, exit 1, status 'failed', and no traceback."""
    import os
    import subprocess
    import sys

    out = tmp_path / "r"
    proc = subprocess.run([sys.executable, "-m", "evo_snn.search", "--dataset", "synthetic", "--population", "8",
                           "--generations", "4", "--no-progress", *TINY, "--out", str(out)],
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                          preexec_fn=_limited(20 * 1024), timeout=300)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    err = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(err) == 1 and "File too large" in err[0] and f"--resume {out}" in err[0]
    assert json.loads((out / "manifest.json").read_text())["status"] == "failed"
    assert not list(out.rglob("*.tmp-*"))


def test_d7_an_export_that_hits_a_full_disk_leaves_no_empty_folder(finished_run, tmp_path):
    import os
    import subprocess
    import sys

    dest = tmp_path / "exports"
    proc = subprocess.run([sys.executable, "-m", "evo_snn.export", str(finished_run), "--pick", "knee", "--no-progress",
                           "--out", str(dest)], env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True,
                          text=True, preexec_fn=_limited(2 * 1024), timeout=300)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "nothing was exported" in proc.stderr
    assert not dest.exists()


def test_d9_a_negative_seed_is_a_config_error_before_any_output(tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["--dataset", "synthetic", "--seed", "-1", "--no-progress", *TINY, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "search.seed must be an integer in [0, 2**32)" in err and "Traceback" not in err and not out.exists()


def test_d9_a_huge_search_says_how_many_evaluations_it_is(tmp_path, capsys, monkeypatch):
    import evo_snn.search.run as search_mod

    monkeypatch.setattr(search_mod, "_execute", lambda *a, **k: 0)  # the note comes before any training
    assert main(["--dataset", "synthetic", "--population", "4000", "--generations", "1", "--no-progress", *TINY,
                 "--out", str(tmp_path / "r")]) == 0
    assert "population 4000 x 2 generations = 8000 genome evaluations" in capsys.readouterr().out


@pytest.mark.slow  # ~30 s: a Ray node started and killed (python -m pytest -m slow tests/test_reliability.py)
def test_d2_a_killed_ray_dashboard_agent_ends_the_run_failed_with_the_resume_command(tmp_path):
    """D2: SIGKILL of Ray's dashboard agent takes the raylet and then the driver with it
    (Ray's core worker exits the process: exit 1, no traceback). The supervising parent of
    ``python -m evo_snn.search`` records status 'failed' with the reason and prints the
    --resume command; the manifest is never left at 'running'."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import psutil

    out = tmp_path / "r"
    proc = subprocess.Popen([sys.executable, "-m", "evo_snn.search", "--dataset", "synthetic", "--population", "8",
                             "--generations", "50", "--workers", "2", "--no-progress", *TINY, "--out", str(out)],
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not (out / "checkpoints" / "state.json").exists() and proc.poll() is None:
        time.sleep(0.2)
    agents = [p for p in psutil.Process(proc.pid).children(recursive=True)
              if "DashboardAgent" in " ".join(p.cmdline())]
    assert agents, "no dashboard agent found"
    for p in agents:
        p.send_signal(signal.SIGKILL)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0
    line = [ln for ln in err.splitlines() if ln.startswith("error: the search process")]
    assert len(line) == 1 and f"python -m evo_snn.search --resume {out}" in line[0]
    m = json.loads((out / "manifest.json").read_text())
    assert m["status"] == "failed" and "Ray's local node" in m["error"]


@pytest.fixture(scope="module")
def wide_run(tmp_path_factory):
    """The quick-start search for one generation: an archive of several members."""
    out = tmp_path_factory.mktemp("wide") / "r"
    assert main(["--dataset", "synthetic", "--generations", "1", "--no-progress", "--out", str(out)]) == 0
    return out


def test_d4_export_reads_only_the_member_it_exports(wide_run, tmp_path, capsys):
    """D4: with another member's student truncated, exporting an intact member works
    (export reads just that student), and exporting the damaged one is a one-line error."""
    import shutil

    from evo_snn.deploy.export import main as export_main

    run = tmp_path / "r"
    shutil.copytree(wide_run, run)
    pointer = json.loads((run / "checkpoints" / "state.json").read_text())
    archive = json.loads((run / "checkpoints" / pointer["dir"] / "search.json").read_text())["archive"]
    ok = [r for r in archive if r["status"] != "failed"]
    assert len(ok) >= 2
    damaged, intact = ok[0], ok[1]
    victim = run / "checkpoints" / "students" / f"{damaged['genome_key']}.pt"
    victim.write_bytes(victim.read_bytes()[:100])
    assert export_main([str(run), "--pick", f"uid={intact['uid']}", "--no-progress"]) == 0
    assert (run / "exported" / intact["uid"] / "student.pt").is_file()
    capsys.readouterr()
    assert export_main([str(run), "--pick", f"uid={damaged['uid']}", "--no-progress"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and damaged["genome_key"] in err[0]


def test_d8_pareto_reports_a_manifest_that_is_not_an_object_in_one_line(finished_run, tmp_path, capsys):
    import shutil

    from evo_snn.analysis.pareto import main as pareto_main

    run = tmp_path / "r"
    shutil.copytree(finished_run, run)
    (run / "manifest.json").write_text("[1, 2]")
    with open(run / "evaluations.jsonl", "ab") as f:
        f.write(b'{"gen": 1, "uid": "\xff"}\n')
    capsys.readouterr()
    assert pareto_main([str(run)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error:") and "manifest.json: a JSON list" in err[-1]


def test_d9_a_corrupt_state_json_resumes_from_the_intact_checkpoint_folder(finished_run, tmp_path):
    import shutil

    run = tmp_path / "r"
    shutil.copytree(finished_run, run)
    (run / "checkpoints" / "state.json").write_text("{not json")
    with pytest.warns(UserWarning, match="resuming from the complete checkpoint"):
        assert main(["--resume", str(run), "--generations", "2", "--no-progress"]) == 0
    assert json.loads((run / "manifest.json").read_text())["status"] == "completed"
    assert json.loads((run / "checkpoints" / "state.json").read_text())["gen"] == 2


def test_d5_the_search_stops_after_max_failed_generations(tmp_path, capsys):
    """D5 / item 5: with search.max_failed_generations 2, two generations in a row without a
    successful evaluation stop the search: status 'failed', one line naming the errors."""
    out = tmp_path / "r"
    rc = main(["--dataset", "synthetic", "--population", "4", "--generations", "5", "--no-progress", *TINY,
               "--set", "faults.fail_rate=0.999", "--set", "faults.kinds=[raise]", "--set", "search.max_retries=0",
               "--set", "search.max_failed_generations=2", "--out", str(out)])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
    assert rc == 1 and len(err) == 1
    assert "2 generations in a row (up to 1) had no successful evaluation" in err[0] and "InjectedFault" in err[0]
    gens = pd.read_csv(out / "generations.csv")
    assert list(gens["gen"]) == [0, 1] and list(gens["ok_evals"]) == [0, 0]
    assert json.loads((out / "manifest.json").read_text())["status"] == "failed"


def test_d6_a_torn_line_inside_a_checkpointed_generation_is_rebuilt(finished_run, tmp_path, capsys):
    """D6: a line of a checkpointed generation cut short used to be 'dropped, logged again'
    but never re-logged; now the row of a checkpoint member is rebuilt (rebuilt: true)."""
    import shutil

    run = tmp_path / "r"
    shutil.copytree(finished_run, run)
    lines = (run / "evaluations.jsonl").read_text().splitlines()
    pointer = json.loads((run / "checkpoints" / "state.json").read_text())
    members = {r["uid"] for r in json.loads((run / "checkpoints" / pointer["dir"] / "search.json").read_text())["population"]}
    i = next(k for k, ln in enumerate(lines) if json.loads(ln)["uid"] in members)
    torn = json.loads(lines[i])
    lines[i] = lines[i][: len(lines[i]) // 2]
    (run / "evaluations.jsonl").write_text("\n".join(lines) + "\n")
    assert main(["--resume", str(run), "--generations", "2", "--no-progress"]) == 0
    rows = [json.loads(ln) for ln in (run / "evaluations.jsonl").read_text().splitlines()]
    again = [r for r in rows if r["uid"] == torn["uid"]]
    assert len(again) == 1 and again[0]["rebuilt"] is True and again[0]["accuracy"] == torn["accuracy"]
    assert "1 rebuilt from the checkpoint" in capsys.readouterr().out
