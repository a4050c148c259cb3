"""Baselines against the search (evo_snn.analysis.baselines, evo_snn.analysis.results): the one-shot
pruning rules, the front arithmetic, and the whole stage on a tiny synthetic run."""

import json

import numpy as np
import pandas as pd
import pytest

from evo_snn.analysis.baselines import accuracy_at_sparsity, baseline_genomes, front_summary, main as baselines_main
from evo_snn.config import GenomeConfig
from evo_snn.structure.genome import GenomeOps
from evo_snn.analysis.results import collect, main as results_main, summarise
from evo_snn.search.run import main as search_main
from evo_snn.training.train import samples_processed

TINY = ["--set", "data.synthetic_classes=3", "--set", "data.synthetic_train_per_class=16",
        "--set", "data.synthetic_test_per_class=6", "--set", "data.synthetic_size=8", "--set", "data.frames=4",
        "--set", "data.val_fraction=0.25", "--set", "model.channels=[4]", "--set", "teacher.epochs=2",
        "--set", "kd.epochs=0.5"]


def _ops():
    rng = np.random.default_rng(0)
    return GenomeOps({"a": rng.normal(size=(6, 5)).__abs__(), "b": 3 * rng.normal(size=(40,)).__abs__()}, GenomeConfig())


def test_global_magnitude_is_one_threshold_over_all_layers():
    ops = _ops()
    for s in (0.0, 0.3, 0.7, 0.95):
        g = ops.global_magnitude(s)
        w = np.concatenate([ops.abs[n].ravel() for n in ops.layers])
        keep = np.concatenate([m.ravel() for m in g.masks])
        assert int((~keep).sum()) == round(s * w.size)
        if 0 < s:
            assert w[~keep].max() <= w[keep].min()  # every pruned |W| below every kept |W|
        # layer b has 3x larger weights: it is pruned less than layer a
        if 0 < s < 0.9:
            assert g.ratios[1] < g.ratios[0]
    with pytest.raises(ValueError):
        ops.global_magnitude(1.0)


def test_uniform_magnitude_prunes_each_layer_by_its_own_weights():
    ops = _ops()
    g = ops.uniform_magnitude(0.5)
    assert g.ratios == (0.5, 0.5)
    for n, m in zip(ops.layers, g.masks):
        assert int((~m).sum()) == round(0.5 * m.size)
        assert ops.abs[n][~m].max() <= ops.abs[n][m].min()


def test_baseline_genomes_per_method():
    ops, rng = _ops(), np.random.default_rng(1)
    assert [r for _, r in baseline_genomes("uniform", ops, [0.1, 0.5], 0, rng)] == [0.1, 0.5]
    assert len(baseline_genomes("random", ops, [0.1], 7, rng)) == 7
    with pytest.raises(ValueError, match="unknown baseline"):
        baseline_genomes("magic", ops, [0.1], 0, rng)


def test_accuracy_at_sparsity_reads_the_front_as_a_staircase():
    pts = [[0.9, 0.3], [0.8, 0.6], [0.5, 0.85]]
    assert accuracy_at_sparsity(pts, 0.5) == 0.8  # best net that is at least 50 % sparse
    assert accuracy_at_sparsity(pts, 0.6) == 0.8
    assert accuracy_at_sparsity(pts, 0.61) == 0.5
    assert accuracy_at_sparsity(pts, 0.1) == 0.9
    assert np.isnan(accuracy_at_sparsity(pts, 0.9))
    # a net at the exact pruned count of 0.95 over 175,192 weights (166,432: 0.9499977) is at 0.95
    at = [[0.3, 166432 / 175192], [0.6, 0.5]]
    assert accuracy_at_sparsity(at, 0.95) == 0.3 and np.isnan(accuracy_at_sparsity(at, 0.9501))
    s = front_summary(pts)
    # staircase area by hand: 0.9*0.3 + 0.8*(0.6-0.3) + 0.5*(0.85-0.6)
    assert s["hypervolume"] == pytest.approx(0.27 + 0.24 + 0.125)
    assert s["accuracy_at_sparsity"]["0.8"] == 0.5


def test_samples_processed_counts_the_last_short_batch():
    assert samples_processed(100, 32, 1.0) == 100  # 32+32+32+4
    assert samples_processed(100, 32, 0.5) == 64  # ceil(0.5*4) = 2 steps of 32
    assert samples_processed(100, 32, 2.0) == 200
    assert samples_processed(100, 32, 1.25) == 132  # 4 steps + 1 step
    assert samples_processed(10, 32, 0.01) == 10  # at least one step


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, one_torch_thread):
    out = tmp_path_factory.mktemp("cmp") / "synthetic-s3-plain"
    assert search_main(["--dataset", "synthetic", "--population", "4", "--generations", "1", "--seed", "3",
                        "--out", str(out), "--no-progress", *TINY]) == 0
    assert baselines_main([str(out), "--ratios", "0.2,0.6,0.9", "--random-evals", "3", "--no-progress"]) == 0
    return out


def test_comparison_files_and_protocol(run_dir):
    doc = json.loads((run_dir / "comparison.json").read_text())
    table = pd.read_csv(run_dir / "baselines.csv")
    assert set(doc["methods"]) == {"search", "uniform", "global", "random", "global_long"}
    assert (run_dir / "plots" / "comparison.png").is_file() and not list(run_dir.rglob("*.tmp-*"))
    counts = table.groupby("method").size().to_dict()
    assert counts["uniform"] == counts["global"] == 3 and counts["random"] == 3
    # the search's members are its archive, as in pareto.csv, with the same validation accuracy
    pareto = pd.read_csv(run_dir / "pareto.csv")
    search = table[table.method == "search"]
    assert sorted(search.uid) == sorted(pareto.uid)
    merged = search.merge(pareto, on="uid")
    assert np.allclose(merged.val_accuracy, merged.accuracy)
    # only validation-selected members (on either front) are measured on test, and each selection is
    # non-dominated on validation
    chosen = table.selected | table.selected_energy
    assert table[~chosen].test_accuracy.isna().all() and table[chosen].test_accuracy.notna().all()
    for method, part in table[table.selected].groupby("method"):
        v = part[["val_accuracy", "sparsity"]].to_numpy()
        for i in range(len(v)):
            assert not any((v[j] >= v[i]).all() and (v[j] > v[i]).any() for j in range(len(v)))
    # the global baseline's sparsities are the requested ones (one threshold over all weights)
    assert np.allclose(sorted(table[table.method == "global"].sparsity), [0.2, 0.6, 0.9], atol=2e-3)
    # test hypervolume recomputed from the table
    for method, s in doc["methods"].items():
        sel = table[(table.method == method) & table.selected]
        assert s["test"]["hypervolume"] == pytest.approx(front_summary(sel[["test_accuracy", "sparsity"]].to_numpy())["hypervolume"])
        assert s["members"] == len(sel)
    # compute: every evaluation of the search (from evaluations.jsonl) and of each baseline is counted
    rows = [json.loads(x) for x in (run_dir / "evaluations.jsonl").read_text().splitlines()]
    real = [r for r in rows if r["status"] == "ok"]
    assert doc["methods"]["search"]["evaluations"] == len(real)
    assert doc["methods"]["search"]["train_samples"] == sum(r["train_samples"] for r in real)
    assert doc["methods"]["uniform"]["train_samples"] == 3 * real[0]["train_samples"]
    # global_long: the global genomes again, trained with the search's budget shared among the ratios
    long, short = table[table.method == "global_long"], table[table.method == "global"]
    assert list(long.genome_key) == list(short.genome_key)
    spent, search_spent = doc["methods"]["global_long"]["train_samples"], doc["methods"]["search"]["train_samples"]
    assert search_spent <= spent < search_spent + 3 * 32  # at most one extra batch per ratio


def test_final_retraining_is_counted_and_changes_the_students(run_dir):
    assert baselines_main([str(run_dir), "--methods", "global", "--ratios", "0.5", "--final-epochs", "0,1",
                           "--suffix", "x", "--no-progress"]) == 0
    doc = json.loads((run_dir / "comparison-x-fe1.json").read_text())
    table = pd.read_csv(run_dir / "baselines-x-fe1.csv")
    plain = json.loads((run_dir / "comparison-x.json").read_text())
    assert plain["final_epochs"] == 0 and plain["methods"]["search"]["retrain_samples"] == 0
    # one evaluation pass: the same validation selection under both measurements
    assert plain["methods"]["global"]["val"] == doc["methods"]["global"]["val"]
    assert doc["final_epochs"] == 1.0 and set(doc["methods"]) == {"search", "global"}
    s = doc["methods"]["search"]
    assert s["retrain_samples"] == s["members"] * doc["train_size"]  # one epoch each
    assert s["compute_samples"] == s["train_samples"] + s["retrain_samples"]
    assert table[table.selected].retrained_val_accuracy.notna().all()


def test_global_matched_pairs_each_search_member_at_its_sparsity_and_seed(run_dir):
    assert baselines_main([str(run_dir), "--methods", "global_matched", "--final-epochs", "1", "--suffix", "m",
                           "--no-progress"]) == 0
    doc = json.loads((run_dir / "comparison-m-fe1.json").read_text())
    table = pd.read_csv(run_dir / "baselines-m-fe1.csv")
    search, matched = table[table.method == "search"].set_index("uid"), table[table.method == "global_matched"]
    assert len(matched) == len(search) == doc["methods"]["search"]["members"] and matched.selected.all()
    partner = search.loc[matched.partner]
    assert np.allclose(matched.sparsity.to_numpy(), partner.sparsity.to_numpy(), atol=2e-3)
    assert (matched.seed.to_numpy() == partner.seed.to_numpy()).all()
    # both sides retrained from their genomes for the same epoch: equal retraining compute
    assert doc["methods"]["global_matched"]["retrain_samples"] == doc["methods"]["search"]["retrain_samples"]
    diff = partner.test_accuracy.to_numpy() - matched.test_accuracy.to_numpy()
    same = partner.genome_key.to_numpy() == matched.genome_key.to_numpy()
    assert not same.all() and np.all(diff[same] == 0)  # the same genome with the same seed: the same retrained student
    pair = doc["methods"]["global_matched"]["paired"]
    assert pair["n"] == len(diff) and pair["mean"] == pytest.approx(diff.mean())
    assert pair["wins"] == int((diff > 0).sum()) and pair["losses"] == int((diff < 0).sum())


def test_results_aggregates_over_seeds(run_dir, tmp_path):
    rows = collect([run_dir.parent])
    assert set(rows.method) >= {"search (plain)", "global"}
    summ = summarise(rows)
    assert (summ.seeds == 1).all() and summ.test_hv_std.isna().all()
    md = tmp_path / "r.md"
    assert results_main([str(run_dir.parent), "--markdown", str(md)]) == 0
    assert "| search (plain) | 1 |" in md.read_text()
    assert results_main([str(tmp_path / "nothing")]) == 2


def test_results_pools_the_paired_difference_of_global_matched(tmp_path):
    def doc(seed, mean, n, wins, losses):
        front = {"test": {"hypervolume": 0.5, "accuracy_at_sparsity": {f"{s:g}": 0.5 for s in (0.5, 0.7, 0.8, 0.9, 0.95)}},
                 "val": {"hypervolume": 0.5}, "members": n, "evaluations": n, "compute_samples": 100}
        paired = {"n": n, "mean": mean, "std": 0.01, "wins": wins, "losses": losses}
        return {"dataset": "cifar10", "kd_mode": "none", "final_epochs": 0.36, "seed": seed,
                "methods": {"search": front, "global_matched": {**front, "paired": paired}}}
    for seed, mean, n, w, l in ((0, -0.01, 20, 6, 13), (1, 0.03, 15, 10, 5)):
        d = tmp_path / f"cifar10-s{seed}-kd-none"
        d.mkdir()
        (d / "comparison-matched-fe0.36.json").write_text(json.dumps(doc(seed, mean, n, w, l)))
    summ = summarise(collect([tmp_path]))
    r = summ[summ.method == "global_matched"].iloc[0]
    assert r.paired_mean == pytest.approx(0.01) and r.paired_std == pytest.approx(np.std([-0.01, 0.03], ddof=1))
    assert (r.paired_n, r.paired_wins, r.paired_losses) == (35, 16, 18)
    assert np.isnan(summ[summ.method == "search (kd-none)"].iloc[0].paired_mean)
    md = tmp_path / "r.md"
    assert results_main([str(tmp_path), "--markdown", str(md)]) == 0
    assert "ahead in 16 and behind in 18 of 35 pairs" in md.read_text()


def test_bad_run_dir_is_a_clear_error(tmp_path, capsys):
    assert baselines_main([str(tmp_path), "--no-progress"]) == 2
    assert "config.json not found" in capsys.readouterr().err
    assert not (tmp_path / "teacher").exists()  # nothing written


# ------------------------------------------------- evaluations.jsonl read as pareto and --resume read it
def _jsonl_run(tmp_path):
    """A run whose evaluations.jsonl has a line that is not JSON in the middle, a JSON value
    that is not an object, and a last line cut short by a crash."""
    from evo_snn.state.rundir import RunDir

    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    rows = [{"gen": 0, "uid": "00-0000", "status": "ok", "train_samples": 64, "accuracy": 0.5, "sparsity": 0.2},
            {"gen": 0, "uid": "00-0001", "status": "failed", "accuracy": 0.0, "sparsity": 0.0},
            {"gen": 0, "uid": "00-0002", "status": "cached", "accuracy": 0.5, "sparsity": 0.2},
            {"gen": 1, "uid": "01-0003", "status": "ok", "train_samples": 48, "accuracy": 0.7, "sparsity": 0.4},
            {"gen": 2, "uid": "02-0004", "status": "ok", "train_samples": 64, "accuracy": 0.9, "sparsity": 0.1}]
    lines = [json.dumps(r) for r in rows]
    lines.insert(2, '{"gen": 0, "uid": "00-9999", "sta')  # cut short (a disk-full write), then appended after
    lines.insert(4, "[1, 2]")  # JSON, but not a row
    lines.append('{"gen": 1, "uid": "01-0005", "status": "ok", "train_samp')  # being written / crash
    (run.path / "evaluations.jsonl").write_text("\n".join(lines) + "\n")
    return run


def test_search_compute_skips_lines_that_are_not_rows_and_notes_them(tmp_path, capsys):
    from types import SimpleNamespace

    from evo_snn.analysis.baselines import Comparison

    cmp = Comparison.__new__(Comparison)  # search_compute reads only these
    cmp.run = _jsonl_run(tmp_path)
    cmp.splits = SimpleNamespace(train=range(100))
    cmp.cfg = SimpleNamespace(kd=SimpleNamespace(batch_size=32, epochs=0.5))
    cmp.ckpt = SimpleNamespace(gen=1)
    n, samples = cmp.search_compute()
    # ok 00-0000 (64) + failed 00-0001 (a full evaluation's samples) + ok 01-0003 (48); cached costs nothing,
    # generation 2 is after the checkpoint, the three broken lines are skipped
    assert (n, samples) == (3, 64 + samples_processed(100, 32, 0.5) + 48)
    err = capsys.readouterr().err
    assert f"{cmp.run.path / 'evaluations.jsonl'}: 2 line(s) not JSON" in err


def test_redraw_pareto_plots_the_ok_rows_and_skips_broken_lines(tmp_path, monkeypatch):
    import evo_snn.analysis.plots as plots
    from evo_snn.analysis.baselines import _redraw_pareto

    run = _jsonl_run(tmp_path)
    (run.path / "teacher").mkdir()
    (run.path / "teacher" / "metrics.json").write_text(json.dumps({"val_accuracy": 0.95}))
    pd.DataFrame({"uid": ["01-0003"], "accuracy": [0.7], "sparsity": [0.4]}).to_csv(run.path / "pareto.csv", index=False)
    pd.DataFrame({"gen": [0, 1], "hypervolume": [0.1, 0.3]}).to_csv(run.path / "generations.csv", index=False)
    seen = {}
    monkeypatch.setattr(plots, "plot_run", lambda d, evals, front, gens, teacher_val, exported, baselines:
                        seen.update(uids=list(evals["uid"]), teacher_val=teacher_val, baselines=baselines))
    table = pd.DataFrame({"method": ["global"], "accuracy": [0.6], "sparsity": [0.5]})
    _redraw_pareto(run, table)
    assert seen["uids"] == ["00-0000", "01-0003", "02-0004"] and seen["teacher_val"] == 0.95
    assert seen["baselines"] is table


def test_kd_override_fine_tunes_the_baselines_with_another_mode(run_dir):
    from evo_snn.analysis.baselines import Comparison
    from evo_snn.state.rundir import RunDir

    cmp = Comparison(RunDir.open(run_dir), kd_mode="none", progress=False)
    try:  # the override reaches the fitness the baselines are trained with; the run's mode is kept
        assert cmp.cfg.kd.mode == cmp.ctx.cfg.kd.mode == "none" and cmp.search_kd_mode == "sparse"
    finally:
        cmp.close()
    assert baselines_main([str(run_dir), "--methods", "global", "--ratios", "0.5", "--kd", "none", "--suffix", "k",
                           "--final-epochs", "0", "--no-progress"]) == 0
    doc = json.loads((run_dir / "comparison-k.json").read_text())
    assert doc["kd_mode"] == "sparse" and doc["baseline_kd_mode"] == "none"
    plain = json.loads((run_dir / "comparison.json").read_text())
    assert plain["baseline_kd_mode"] == plain["kd_mode"] == "sparse"
    # the search's students are measured as the search trained them: the same test front
    assert doc["methods"]["search"]["test"] == plain["methods"]["search"]["test"]
    rows = collect([run_dir])
    assert "global (kd=none)" in set(rows.method) and "global" in set(rows.method)
    assert set(rows[rows.method == "global (kd=none)"].kd_mode) == {"sparse"}


# ------------------------------------------------- allocation baselines (evo_snn.structure.allocation): lamp, erk, energy_aware
ALLOC = ("lamp", "erk", "energy_aware")


def test_allocation_baselines_prune_exactly_at_each_ratio():
    from evo_snn.structure import allocation

    ops, rng = _ops(), np.random.default_rng(1)
    n = sum(v.size for v in ops.abs.values())
    spw = {"a": 10.0, "b": 1.0}
    for method in (*ALLOC, *(f"{m}_long" for m in ALLOC)):
        pairs = baseline_genomes(method, ops, [0.0, 0.5, 0.95], 0, rng, synops_per_weight=spw)
        assert [r for _, r in pairs] == [0.0, 0.5, 0.95]
        for g, r in pairs:
            assert int(sum((~m).sum() for m in g.masks)) == round(r * n)
        rule = method.removesuffix("_long")
        g = pairs[1][0]
        cap = {"max_ratio": max(ops.cfg.ratio_max, 0.95)} if rule == "energy_aware" else {}  # the baselines' cap
        assert [m.tolist() for m in g.masks] == [m.tolist() for m in allocation.allocation_masks(
            rule, ops.abs, 0.5, synops_per_weight=spw, **cap)]
    with pytest.raises(ValueError, match="synops_per_weight"):
        baseline_genomes("energy_aware", ops, [0.5], 0, rng)


def test_allocation_methods_are_listed_with_long_twins_and_share_globals_seeds():
    from evo_snn.analysis.baselines import LONG, METHODS, STREAMS, build_parser

    for m in ALLOC:
        assert m in METHODS and f"{m}_long" in METHODS and f"{m}_long" in LONG
        assert STREAMS[m] == STREAMS["global"] and STREAMS[f"{m}_long"] == STREAMS["global_long"]
    text = build_parser().format_help().replace("\n", "").replace(" ", "")
    for m in (*ALLOC, *(f"{m}_long" for m in ALLOC)):
        assert m in text


def test_allocation_baselines_run_end_to_end(run_dir):
    methods = ",".join(m for a in ALLOC for m in (a, f"{a}_long"))
    assert baselines_main([str(run_dir), "--methods", methods, "--ratios", "0.5,0.9", "--suffix", "alloc",
                           "--final-epochs", "0", "--no-progress"]) == 0
    doc = json.loads((run_dir / "comparison-alloc.json").read_text())
    table = pd.read_csv(run_dir / "baselines-alloc.csv")
    assert set(doc["methods"]) == {"search", *methods.split(",")}
    plain = pd.read_csv(run_dir / "baselines.csv")
    glob = plain[plain.method == "global"]
    search_spent = doc["methods"]["search"]["train_samples"]
    for a in ALLOC:
        short, long = table[table.method == a], table[table.method == f"{a}_long"]
        assert len(short) == len(long) == 2 and short.test_accuracy.notna().any()
        assert np.allclose(sorted(short.sparsity), [0.5, 0.9], atol=2e-3)  # the exact count, as measured on the student
        # the _long twin: the same genomes, the search's training samples shared among the ratios (as global_long)
        assert list(long.genome_key) == list(short.genome_key)
        spent = doc["methods"][f"{a}_long"]["train_samples"]
        assert search_spent <= spent < search_spent + 2 * 32
        assert doc["methods"][a]["train_samples"] == 2 * glob.train_samples.iloc[0]
        # global's seed at the same ratio index (the first baselines.csv ran 0.2, 0.6, 0.9)
        assert short.seed.iloc[0] == glob.seed.iloc[0]


def test_energy_aware_measures_synops_per_weight_on_the_teacher(run_dir):
    from evo_snn.analysis.baselines import Comparison
    from evo_snn.state.rundir import RunDir

    cmp = Comparison(RunDir.open(run_dir), progress=False)
    try:
        t = cmp.splits.frame_shape[0]
        spw = cmp.synops_per_weight()
        conv, fc = cmp.layers  # the tiny net: a 3x3 conv (padding 1) on 8x8 frames, then the linear readout
        # the conv: T x its 64 output positions, less the products with zero padding (22/3 per axis)
        assert spw[conv] == pytest.approx(t * (22 / 3) ** 2) and spw[fc] == pytest.approx(t)
        rng = np.random.default_rng(0)
        (ea, _), = baseline_genomes("energy_aware", cmp.ops, [0.5], 0, rng, synops_per_weight=spw)
        (gl, _), = baseline_genomes("global", cmp.ops, [0.5], 0, rng)
        assert round(ea.sparsity * 1e6) == round(gl.sparsity * 1e6)  # the same pruned count
        assert ea.ratios[0] > gl.ratios[0] and ea.ratios[1] < gl.ratios[1]  # the dear conv is pruned first
    finally:
        cmp.close()


# ------------------------------------------------- the energy front: (accuracy, 1 - energy fraction) on test
def test_energy_hypervolume_is_accuracy_against_one_minus_energy_fraction():
    from evo_snn.analysis.baselines import accuracy_at_energy, energy_front_summary, energy_hypervolume, energy_nondominated
    from evo_snn.search.nsga import points_hypervolume

    pts = [[0.9, 0.6], [0.7, 0.2], [0.6, 0.3]]  # (accuracy, energy fraction); the third is dominated
    # staircase in (accuracy, 1 - e) by hand: 0.9 * (1 - 0.6) + 0.7 * ((1 - 0.2) - (1 - 0.6))
    assert energy_hypervolume(pts) == pytest.approx(0.36 + 0.28)
    # the wrong objective (energy fraction maximised as if it were sparsity) gives another number
    assert points_hypervolume(pts) != pytest.approx(energy_hypervolume(pts))
    # the reference (search.hv_reference['energy']): points at or beyond it add nothing
    assert energy_hypervolume(pts, reference=0.5) == pytest.approx(0.7 * (0.5 - 0.2))
    assert energy_hypervolume([[0.9, 0.6]], reference=0.5) == 0.0 and energy_hypervolume([]) == 0.0
    assert energy_nondominated(pts) == [0, 1]  # lower energy is better
    assert accuracy_at_energy(pts, 0.3) == 0.7 and accuracy_at_energy(pts, 0.6) == 0.9
    assert np.isnan(accuracy_at_energy(pts, 0.1))
    s = energy_front_summary(pts)
    assert s["hypervolume"] == pytest.approx(0.64) and s["accuracy_at_energy"]["0.2"] == 0.7


def test_best_baseline_is_the_best_equal_compute_baseline_per_front():
    from evo_snn.analysis.baselines import best_baseline

    def m(hv, hv_e):
        return {"test": {"hypervolume": hv}, "test_energy": {"hypervolume": hv_e}}

    summary = {"search": m(0.5, 0.4), "global": m(0.9, 0.9), "global_long": m(0.45, 0.2), "erk_long": m(0.4, 0.3)}
    b = best_baseline(summary, "sparsity")
    assert b["method"] == "global_long" and b["search_minus_best"] == pytest.approx(0.05)
    assert set(b["methods"]) == {"global_long", "erk_long"}  # global: not at equal compute
    e = best_baseline(summary, "energy")
    assert e["method"] == "erk_long" and e["search_minus_best"] == pytest.approx(0.1)
    assert best_baseline({"search": m(0.5, 0.4)}, "energy")["method"] is None


def test_energy_front_is_selected_on_validation_and_measured_on_test(run_dir):
    import torch

    from evo_snn.analysis.baselines import Comparison, energy_hypervolume, energy_nondominated
    from evo_snn.evaluation.energy import count_energy
    from evo_snn.models import build_model
    from evo_snn.state.rundir import RunDir
    from evo_snn.training.train import accuracy

    doc = json.loads((run_dir / "comparison.json").read_text())
    table = pd.read_csv(run_dir / "baselines.csv")
    assert doc["energy_hv_reference"] == 1.0 and 0 < doc["dense_teacher_test_energy_fraction"] < 1
    ok = table[table.error.isna()]
    assert ok.val_energy_fraction.notna().all()
    for method, s in doc["methods"].items():
        part = ok[ok.method == method]
        sel = part[part.selected_energy]
        assert s["energy_members"] == len(sel) > 0
        # the energy members: the validation front in (accuracy, validation energy fraction), among all evaluated
        v = part[["val_accuracy", "val_energy_fraction"]].to_numpy()
        assert list(np.flatnonzero(part.selected_energy)) == energy_nondominated(v)
        # test HV: (test accuracy, test energy fraction) of those members; val HV from their validation values
        t = sel[["test_accuracy", "test_energy_fraction"]].to_numpy()
        assert s["test_energy"]["hypervolume"] == pytest.approx(energy_hypervolume(t))
        assert s["test_energy"]["hypervolume_dense_ref"] == pytest.approx(energy_hypervolume(t, doc["energy_hv_reference_dense"]))
        assert s["val_energy"]["hypervolume"] == pytest.approx(energy_hypervolume(sel[["val_accuracy", "val_energy_fraction"]].to_numpy()))
        assert s["energy_compute_samples"] == s["train_samples"] + s["energy_retrain_samples"]
    # the search's validation energy fraction is pareto.csv's (the fitness's validation pass)
    pareto = pd.read_csv(run_dir / "pareto.csv")
    merged = table[table.method == "search"].merge(pareto, on="uid")
    assert np.allclose(merged.val_energy_fraction, merged.energy_fraction)
    # the test energy fraction is counted on the test split, not the validation split
    cmp = Comparison(RunDir.open(run_dir), progress=False)
    try:
        m = cmp.search_members()[0]
        student = build_model(cmp.cfg.model, cmp.splits.frame_shape, cmp.splits.num_classes)
        student.load_state_dict(m.student_state)
        row = table[(table.method == "search") & (table.uid == m.uid)].iloc[0]
        with torch.no_grad():
            on_test = count_energy(student, _frames(cmp.splits.test))
            on_val = count_energy(student, _frames(cmp.splits.val))
        assert row.test_energy_fraction == pytest.approx(on_test.energy_fraction)
        assert row.val_energy_fraction == pytest.approx(on_val.energy_fraction)
        assert on_test.energy_fraction != pytest.approx(on_val.energy_fraction, rel=1e-9, abs=1e-12)
        assert row.test_accuracy == pytest.approx(accuracy(student, cmp.splits.test))
        # the second energy reference: the dense teacher on the validation split (no member is selected with it)
        with torch.no_grad():
            teacher_val = count_energy(cmp.teacher, _frames(cmp.splits.val)).energy_fraction
            teacher_test = count_energy(cmp.teacher, _frames(cmp.splits.test)).energy_fraction
        assert doc["energy_hv_reference_dense"] == pytest.approx(teacher_val)
        assert doc["dense_teacher_test_energy_fraction"] == pytest.approx(teacher_test)
    finally:
        cmp.close()
    # best_baseline: the best of the _long methods on each front, and the search's difference to it
    for front, key, hv in (("sparsity", "test", "hypervolume"), ("energy", "test_energy", "hypervolume"),
                           ("energy_dense_ref", "test_energy", "hypervolume_dense_ref")):
        b = doc["best_baseline"][front]
        assert b["method"] == "global_long" and b["methods"] == ["global_long"]
        assert b["search_minus_best"] == pytest.approx(doc["methods"]["search"][key][hv]
                                                       - doc["methods"]["global_long"][key][hv])


def _frames(fs, batch_size=64):
    """x_seq [T, N, ...] batches of a FrameSet, as ``train.predict_logits`` feeds them."""
    from evo_snn.training.train import loader

    for x, _ in loader(fs, batch_size, shuffle=False):
        yield fs.to_seq(x, train=False)


def test_plot_comparison_draws_the_energy_panel_from_the_energy_members(tmp_path, monkeypatch):
    import evo_snn.analysis.plots as plots

    table = pd.DataFrame({
        "method": ["search", "search", "erk_long", "erk_long"],
        "selected": [True, True, False, False],  # erk_long: on the energy front only
        "selected_energy": [True, False, True, True],
        "sparsity": [0.3, 0.8, 0.5, 0.9],
        "val_accuracy": [0.9, 0.7, 0.75, 0.5], "test_accuracy": [0.88, 0.69, 0.7, 0.45],
        "val_energy_fraction": [0.5, 0.2, 0.4, 0.1], "test_energy_fraction": [0.52, 0.21, 0.41, 0.12],
    })
    figs = []
    save = plots._save
    monkeypatch.setattr(plots, "_save", lambda fig, path: (figs.append([
        {ln.get_label(): (list(ln.get_xdata()), list(ln.get_ydata())) for ln in ax.get_lines()} for ax in fig.axes]),
        save(fig, path)))
    plots.plot_comparison(tmp_path / "one.png", table.drop(columns=["selected_energy", "test_energy_fraction"]), 0.9, val=False)
    plots.plot_comparison(tmp_path / "two.png", table, 0.95, val=False, dense_teacher_energy=0.6)
    plots.plot_comparison(tmp_path / "val.png", table, 0.95, val=True)
    assert len(figs[0]) == 1  # no energy columns: the sparsity panel only, as before
    sparsity, energy = figs[1]
    assert sparsity["erk_long (0)"] == ([], []) and sparsity["search (2)"] == ([0.3, 0.8], [0.88, 0.69])
    # the energy panel: test energy fraction of the energy members, sorted, against their test accuracy
    assert energy["erk_long (2)"] == ([0.12, 0.41], [0.45, 0.7]) and energy["search (1)"] == ([0.52], [0.88])
    assert energy["dense teacher"] == ([0.6], [0.95])
    assert figs[2][1]["erk_long (2)"] == ([0.1, 0.4], [0.5, 0.75])  # val=True: the validation values
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.png", "two.png", "val.png"]
