"""evo_snn.analysis.pareto: the front of one run, the comparison of several, read-only, in progress too."""

from __future__ import annotations

import csv
import json
import math

import pandas as pd
import pytest

from evo_snn.analysis import pareto

# (uid, gen, accuracy, sparsity): the front of run "a" is a1 (0.9, 0.3), a2 (0.8, 0.6), a3 (0.5, 0.85)
EVALS_A = [("a0", 0, 0.7, 0.2), ("a1", 0, 0.9, 0.3), ("a2", 1, 0.8, 0.6), ("a3", 1, 0.5, 0.85), ("a4", 1, 0.4, 0.5)]


def _write_run(root, name, evals, front_uids, *, status="completed", last_gen=1, seed=0, kd="sparse",
               exported=None, extra_lines=(), energy=False):
    run = root / name
    (run / "teacher").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"dataset": "synthetic", "model": {"name": "tiny_conv"},
                                                 "kd": {"mode": kd}, "search": {"seed": seed}}))
    (run / "manifest.json").write_text(json.dumps({"status": status}))
    (run / "teacher" / "metrics.json").write_text(json.dumps({"val_accuracy": 0.95, "test_accuracy": 0.93}))
    lines = []
    for uid, gen, acc, sp in evals:
        row = {"gen": gen, "uid": uid, "status": "ok", "accuracy": acc, "sparsity": sp, "teacher_accuracy": acc + 0.01}
        if energy:
            row["energy_pj"] = 1000.0 * (1 - sp)
        lines.append(json.dumps(row))
    (run / "evaluations.jsonl").write_text("\n".join([*lines, *extra_lines]) + "\n")
    if last_gen is not None:
        pd.DataFrame({"gen": list(range(last_gen + 1)), "hypervolume": [0.1] * (last_gen + 1)}).to_csv(run / "generations.csv", index=False)
        rows = [{"uid": u, "accuracy": a, "sparsity": s, "teacher_accuracy": a + 0.01, "gen": g}
                for u, g, a, s in evals if u in front_uids]
        pd.DataFrame(rows).to_csv(run / "pareto.csv", index=False)
    for uid, roles in (exported or {}).items():
        acc, sp = next((a, s) for u, _, a, s in evals if u == uid)
        (run / "exported" / uid).mkdir(parents=True)
        (run / "exported" / uid / "metrics.json").write_text(json.dumps({"uid": uid, "roles": roles, "accuracy": acc, "sparsity": sp}))
    return run


def _snapshot(path):
    return {str(p.relative_to(path)): (p.stat().st_mtime_ns, p.read_bytes() if p.is_file() else None) for p in sorted(path.rglob("*"))}


def test_one_run_prints_its_front_with_teacher_and_exported_roles_and_writes_nothing(tmp_path, capsys):
    run = _write_run(tmp_path, "a", EVALS_A, {"a1", "a2", "a3"}, exported={"a2": ["knee"]})
    before = _snapshot(run)
    assert pareto.main([str(run), "--plot", str(tmp_path / "out.png")]) == 0
    out = capsys.readouterr().out
    assert _snapshot(run) == before  # read-only: no file made, changed or touched
    assert (tmp_path / "out.png").read_bytes()[:4] == b"\x89PNG"
    lines = out.splitlines()
    assert "val accuracy 0.9500" in lines[0] and "test accuracy 0.9300" in lines[0] and "generation 1 completed" in lines[0]
    body = [line.split() for line in lines[2:]]
    assert [r[0] for r in body] == ["a1", "a2", "a3"]  # sorted by sparsity, dominated a0 / a4 absent
    assert body[1][-1] == "knee" and len(body[0]) == len(body[1]) - 1  # only a2 carries a role


def test_csv_and_json_formats(tmp_path, capsys):
    run = _write_run(tmp_path, "a", EVALS_A, {"a1", "a2", "a3"}, energy=True)
    assert pareto.main([str(run), "--format", "csv"]) == 0
    df = pd.read_csv(pd.io.common.StringIO(capsys.readouterr().out))
    assert list(df["uid"]) == ["a1", "a2", "a3"]
    assert df["energy_pj"].tolist() == pytest.approx([700.0, 400.0, 150.0])  # energy metrics merged from evaluations
    assert pareto.main([str(run), "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["teacher"]["val_accuracy"] == 0.95 and len(doc["front"]) == 3
    # HV of the staircase (0.9, 0.3), (0.8, 0.6), (0.5, 0.85) with reference (0, 0)
    assert doc["summary"]["hypervolume"] == pytest.approx(0.9 * 0.3 + 0.8 * 0.3 + 0.5 * 0.25)


def test_a_run_in_progress(tmp_path, capsys):
    """Generation 2 is being evaluated (one row so far, one line cut short): counted, not on the front."""
    evals = [*EVALS_A, ("a5", 2, 0.99, 0.99)]
    run = _write_run(tmp_path, "a", evals, {"a1", "a2", "a3"}, status="running", extra_lines=['{"gen": 2, "uid": "a6", "sta'])
    view = pareto.read_run(run)
    assert view.pending == 1 and view.skipped_lines == 1 and view.last_gen == 1
    assert list(view.front["uid"]) == ["a1", "a2", "a3"]  # the archive as of the last completed generation
    assert pareto.main([str(run)]) == 0
    captured = capsys.readouterr()
    assert "status running" in captured.out and "1 evaluations of the next one" in captured.out
    assert "1 line(s) not JSON" in captured.err


def test_before_generation_0_completes_the_front_comes_from_the_evaluations(tmp_path):
    run = _write_run(tmp_path, "a", EVALS_A[:2] + [("b", 0, 0.6, 0.7)], set(), status="running", last_gen=None)
    view = pareto.read_run(run)
    assert view.last_gen is None and view.pending == 3
    assert sorted(view.front["uid"]) == ["a1", "b"]  # a0 is dominated by a1


def test_several_runs_one_row_each(tmp_path, capsys):
    a = _write_run(tmp_path, "a", EVALS_A, {"a1", "a2", "a3"})
    b = _write_run(tmp_path, "b", [("b0", 0, 0.95, 0.1), ("b1", 0, 0.6, 0.82)], {"b0", "b1"}, last_gen=0, seed=1, kd="none")
    assert pareto.main([str(a), str(b), "--format", "json", "--plot", str(tmp_path / "fronts.png")]) == 0
    rows = {r["run"]: r for r in json.loads(capsys.readouterr().out)}
    ra, rb = rows["a"], rows["b"]
    assert (ra["seed"], ra["kd_mode"], ra["dataset"], ra["evaluations"], ra["generation"]) == (0, "sparse", "synthetic", 5, 1)
    assert (rb["seed"], rb["kd_mode"], rb["evaluations"], rb["generation"]) == (1, "none", 2, 0)
    assert ra["objectives"] == "accuracy,sparsity" and ra["search_hypervolume"] == pytest.approx(0.1)
    assert ra["acc@sparsity>=0.5"] == pytest.approx(0.8) and ra["acc@sparsity>=0.8"] == pytest.approx(0.5)
    assert ra["acc@sparsity>=0.9"] is None or math.isnan(ra["acc@sparsity>=0.9"])  # nothing that sparse
    assert rb["acc@sparsity>=0.8"] == pytest.approx(0.6) and rb["acc@sparsity>=0.5"] == pytest.approx(0.6)
    assert rb["hypervolume"] == pytest.approx(0.95 * 0.1 + 0.6 * 0.72)
    assert (tmp_path / "fronts.png").stat().st_size > 1000
    assert pareto.main([str(a), str(b)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert len(table) == 3 and "hypervolume" in table[0]


def test_bad_input_is_a_clear_error(tmp_path, capsys):
    assert pareto.main([str(tmp_path / "missing")]) == 2
    assert "not found" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert pareto.main([str(tmp_path / "empty")]) == 2
    assert "config.json not found" in capsys.readouterr().err
    run = _write_run(tmp_path, "a", EVALS_A, {"a1"})
    (run / "manifest.json").write_text("{broken")
    assert pareto.main([str(run)]) == 2
    assert "manifest.json: not readable JSON" in capsys.readouterr().err
    assert pareto.main([str(run), "--plot", "x.pdf"]) == 2
    with pytest.raises(SystemExit):
        pareto.main(["--help"])


def test_the_multi_run_table_fits_120_columns_with_integer_generations(tmp_path, capsys):
    long = "20251206-202800-tiny_imagenet-a-very-long-tag-name-for-this-run"
    a = _write_run(tmp_path, long, EVALS_A, {"a1", "a2", "a3"}, status="interrupted", last_gen=3)
    b = _write_run(tmp_path, "20251206-202801-synthetic-s1", [("b0", 0, 0.95, 0.1)], {"b0"}, last_gen=None, seed=1)
    assert pareto.main([str(a), str(b)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and max(len(line) for line in lines) <= 120
    header = lines[0].split()
    gen = header.index("gen")
    assert lines[1].split()[gen] == "3" and lines[2].split()[gen] == "-"  # never 3.0000
    assert lines[1].startswith("2025120") and "..." in lines[1] and lines[1].split()[0].endswith("this-run")
    # short names are not cut; csv keeps every column and integer generations
    c = _write_run(tmp_path, "c", EVALS_A, {"a1"}, last_gen=2)
    assert pareto.main([str(c), str(b)]) == 0
    assert capsys.readouterr().out.splitlines()[1].split()[0] == "c"
    assert pareto.main([str(c), str(b), "--format", "csv"]) == 0
    head, first, second = list(csv.reader(capsys.readouterr().out.splitlines()))
    assert "search_hypervolume" in head and first[head.index("generation")] == "2" and second[head.index("generation")] == ""


def test_help_has_no_markup(capsys):
    with pytest.raises(SystemExit):
        pareto.main(["--help"])
    out = capsys.readouterr().out
    assert "``" not in out and "--plot" in out and "read-only" in out.lower()


def test_a_run_without_the_teacher_pass_shows_the_exported_members_at_export_accuracy(tmp_path, capsys):
    """search.measure_teacher false (the default since issue 26): pareto.csv has no sparse-teacher
    accuracy; the front takes an exported member's from its metrics.json, the others stay empty,
    and the table drops the column when no member has one."""
    run = _write_run(tmp_path, "a", EVALS_A, {"a1", "a2", "a3"}, exported={"a2": ["knee"]})
    front = pd.read_csv(run / "pareto.csv")
    front["teacher_accuracy"] = float("nan")
    front.to_csv(run / "pareto.csv", index=False)
    rec = json.loads((run / "exported" / "a2" / "metrics.json").read_text())
    rec.update(teacher_accuracy=0.77, teacher_accuracy_measured="at export")
    (run / "exported" / "a2" / "metrics.json").write_text(json.dumps(rec))
    table = pareto.front_table(pareto.read_run(run))
    got = dict(zip(table["uid"], table["sparse_teacher_val_accuracy"]))
    assert got["a2"] == 0.77 and math.isnan(got["a1"]) and math.isnan(got["a3"])
    assert pareto.main([str(run), "--format", "csv"]) == 0
    assert list(csv.DictReader(capsys.readouterr().out.splitlines()))[1]["sparse_teacher_val_accuracy"] == "0.77"
    (run / "exported" / "a2" / "metrics.json").write_text(json.dumps({**rec, "teacher_accuracy": None}))
    assert pareto.main([str(run)]) == 0
    out = capsys.readouterr().out
    assert "sparse_teacher_val_accuracy" not in out and "a2" in out  # nothing measured: no column of NaN
