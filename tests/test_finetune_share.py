"""Fine-tune once with most of the budget (issue 23 item 5): search.finetune_share in
evo_snn.analysis.baselines (finetune_budget, finetune_targets, select_finetune, search_finetuned)."""

import json
import math

import numpy as np
import pandas as pd
import pytest

from evo_snn.analysis import baselines as B
from evo_snn.analysis import comparison as C  # Comparison.measure: the test measurement
from evo_snn.analysis.baselines import (FINETUNED, Member, finetune_budget, finetune_targets, main as baselines_main,
                               select_finetune)
from evo_snn.config import ConfigError, GenomeConfig, SearchConfig, load_config
from evo_snn.structure.genome import GenomeOps
from evo_snn.search.run import main as search_main
from evo_snn.training.train import samples_processed

TINY = ["--set", "data.synthetic_classes=3", "--set", "data.synthetic_train_per_class=16",
        "--set", "data.synthetic_test_per_class=6", "--set", "data.synthetic_size=8", "--set", "data.frames=4",
        "--set", "data.val_fraction=0.25", "--set", "model.channels=[4]", "--set", "teacher.epochs=2",
        "--set", "kd.epochs=0.5"]
RATIOS = [0.2, 0.5, 0.7, 0.9]


# ------------------------------------------------------------------ config and formulas
def test_finetune_share_default_follows_screening_and_is_validated():
    assert SearchConfig().finetune_share is None
    assert SearchConfig().resolved_finetune_share() == 0.0  # screen 'none': today's comparison
    assert SearchConfig(screen="nll").resolved_finetune_share() == 0.85
    assert SearchConfig(screen="nll", finetune_share=0.0).resolved_finetune_share() == 0.0
    assert SearchConfig(finetune_share=0.5).resolved_finetune_share() == 0.5
    assert load_config("synthetic", overrides=["search.finetune_share=0"]).search.resolved_finetune_share() == 0.0
    assert load_config("synthetic", overrides=["search.finetune_share=0.6"]).search.finetune_share == 0.6
    for bad in ("1", "1.0", "-0.1", "true", "x"):
        with pytest.raises(ConfigError, match="finetune_share"):
            load_config("synthetic", overrides=[f"search.finetune_share={bad}"])


def test_finetune_budget_formulas():
    b = finetune_budget(1000, 0.85, 10)
    assert b["budget"] == pytest.approx(1000 / 0.15) and b["per_member"] == pytest.approx(1000 / 0.15 / 10)
    assert b["k"] == 8 and b["search_compute"] == 1000 and b["finetune_share"] == 0.85
    assert b["k"] * b["per_member"] <= b["budget"] - b["search_compute"] + 1e-6  # the fine-tuning fits in f x B
    assert finetune_budget(1000, 0.5, 4)["k"] == 2
    assert finetune_budget(1000, 0.1, 3)["k"] == 1  # at least one member
    z = finetune_budget(1234, 0.0, 5)
    assert z["k"] == 0 and z["budget"] == 1234 and z["per_member"] == pytest.approx(1234 / 5)
    for bad in (1.0, -0.01):
        with pytest.raises(ValueError):
            finetune_budget(10, bad, 3)


def test_targets_are_spread_like_the_ratios():
    r = list(B.DEFAULT_RATIOS)
    assert [t for _, t in finetune_targets(r, 8)] == [0.1, 0.2, 0.4, 0.5, 0.6, 0.7, 0.9, 0.95]
    assert [t for _, t in finetune_targets(r, 10)] == r
    assert [t for _, t in finetune_targets(r, 1)] == [0.6]
    shuffled = [0.9, 0.2, 0.5]
    assert finetune_targets(shuffled, 3) == [(1, 0.2), (2, 0.5), (0, 0.9)]  # indices into the given order


def _members(test_values):
    rng = np.random.default_rng(0)
    ops = GenomeOps({"a": np.abs(rng.normal(size=(6, 5))), "b": 3 * np.abs(rng.normal(size=(40,)))}, GenomeConfig())
    val = [(0.1, 0.9), (0.3, 0.8), (0.55, 0.7), (0.6, 0.75), (0.8, 0.5), (0.92, 0.3)]  # (sparsity, val accuracy)
    out = []
    for i, ((s, acc), t) in enumerate(zip(val, test_values)):
        out.append(Member("search", f"u{i}", ops.global_magnitude(s), i, {"accuracy": acc, "sparsity": s}, {},
                          selected=True, test={"test_accuracy": t}))
    return out


def test_select_finetune_reads_validation_only():
    picks = select_finetune(_members([0.0] * 6), finetune_targets(RATIOS, 2))  # targets 0.5, 0.9
    assert [(m.uid, j, t) for m, j, t in picks] == [("u3", 1, 0.5), ("u5", 3, 0.9)]
    # the best validation accuracy at or above each target, never the same genome twice; past the
    # sparsest member the sparsest one left
    picks = select_finetune(_members([0.0] * 6), [(0, 0.5), (1, 0.5), (2, 0.95)])
    assert [m.uid for m, _, _ in picks] == ["u3", "u2", "u5"]
    # test accuracies (anything a member carries besides its validation metrics) change nothing
    for seed in range(3):
        poisoned = _members(np.random.default_rng(seed).random(6))
        assert [m.uid for m, _, _ in select_finetune(poisoned, finetune_targets(RATIOS, 2))] == ["u3", "u5"]
    assert len(select_finetune(_members([0.0] * 6)[:1], finetune_targets(RATIOS, 4))) == 1


def test_select_finetune_takes_a_genome_at_the_targets_exact_count_as_at_the_target():
    """A genome built at sparsity t prunes round(t x N) weights, which can be a hair below t
    (0.45 x 175,192 = 78,836.4: sparsity 0.4499977); it is the member for target t, not the next one."""
    rng = np.random.default_rng(1)
    ops = GenomeOps({"a": np.abs(rng.normal(size=(4, 2, 3, 3))), "b": np.abs(rng.normal(size=(5, 8)))}, GenomeConfig())
    n = 72 + 40  # 112 weights: round(s x 112) / 112 < s for s = 0.45, 0.85, 0.95
    members = []
    for i, (s, acc) in enumerate([(0.45, 0.9), (0.85, 0.6), (0.95, 0.3)]):
        g = ops.allocation("erk", s)
        assert int(sum((~m).sum() for m in g.masks)) == round(s * n) and g.sparsity < s
        members.append(Member("search", f"u{i}", g, i, {"accuracy": acc, "sparsity": g.sparsity}, {}, selected=True))
    picks = select_finetune(members, [(0, 0.45), (1, 0.85), (2, 0.95)])
    assert [(m.uid, t) for m, _, t in picks] == [("u0", 0.45), ("u1", 0.85), ("u2", 0.95)]


# ------------------------------------------------------------------ the whole stage on a tiny run
@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, one_torch_thread):
    out = tmp_path_factory.mktemp("ft") / "synthetic-s1-plain"
    # a teacher above chance: an archive of 3 members (k = 2 of them are fine-tuned)
    assert search_main(["--dataset", "synthetic", "--population", "4", "--generations", "1", "--seed", "1",
                        "--out", str(out), "--no-progress", *TINY, "--set", "teacher.epochs=8"]) == 0
    assert len(pd.read_csv(out / "pareto.csv")) >= 3
    return out


@pytest.fixture(scope="module")
def finetuned(run_dir):
    """One comparison with --finetune-share 0.5 over 4 ratios (k = 2), every evaluate call recorded."""
    calls = []
    real = B.Comparison.evaluate

    def spy(self, jobs, epochs=None, desc="evaluations"):
        calls.append({"desc": desc, "epochs": epochs, "seeds": [s for _, s in jobs], "kd": self.cfg.kd,
                      "fitness_ctx": None})
        out = real(self, jobs, epochs=epochs, desc=desc)
        calls[-1]["fitness"] = self._fitness[epochs]
        return out

    mp = pytest.MonkeyPatch()
    mp.setattr(B.Comparison, "evaluate", spy)
    try:
        assert baselines_main([str(run_dir), "--finetune-share", "0.5", "--methods", "global_long,erk_long",
                               "--ratios", ",".join(map(str, RATIOS)), "--suffix", "ft", "--no-progress"]) == 0
    finally:
        mp.undo()
    doc = json.loads((run_dir / "comparison-ft.json").read_text())
    table = pd.read_csv(run_dir / "baselines-ft.csv")
    return doc, table, calls


def test_long_baselines_spend_the_whole_budget(finetuned, run_dir):
    doc, table, _ = finetuned
    cfg = json.loads((run_dir / "config.json").read_text())
    bs, n = cfg["kd"]["batch_size"], len(RATIOS)
    ft = doc["finetune"]
    S = doc["methods"]["search"]["train_samples"]
    assert doc["finetune_share"] == ft["finetune_share"] == 0.5
    assert ft["search_compute"] == S and ft["budget"] == pytest.approx(S / 0.5)
    assert ft["per_member"] == pytest.approx(ft["budget"] / n) and ft["k"] == 2 == ft["members"]
    for method in ("global_long", "erk_long"):
        spent = doc["methods"][method]["train_samples"]
        assert ft["budget"] <= spent < ft["budget"] + n * bs, method  # B, up to one batch per ratio
        per = table[table.method == method].train_samples
        assert len(per) == n and (per == samples_processed(doc["train_size"], bs, ft["per_member"] / doc["train_size"])).all()
    # the fine-tuned side spends S + k x per_member <= B (up to one batch per member)
    fts = doc["methods"][FINETUNED]
    assert fts["train_samples"] == S + ft["finetune_samples"]
    assert fts["train_samples"] <= ft["budget"] + ft["k"] * bs


def test_finetuned_members_get_exactly_the_long_training(finetuned):
    doc, table, calls = finetuned
    by = {c["desc"]: c for c in calls}
    ft_call, long_call = by["search fine-tuning"], by["global_long baseline"]
    assert ft_call["epochs"] == long_call["epochs"] == by["erk_long baseline"]["epochs"]
    assert ft_call["fitness"] is long_call["fitness"]  # the same fitness object: same recipe and KD settings
    assert ft_call["kd"] == long_call["kd"]
    ft, long = table[table.method == FINETUNED], table[table.method == "global_long"]
    assert len(ft) == 2 and (ft.train_samples.to_numpy() == long.train_samples.iloc[0]).all()
    # each fine-tuned member has the seed of the _long student at its target ratio, and is a search member
    for _, r in ft.iterrows():
        partner = long[np.isclose(long.ratio, r.ratio)]
        assert len(partner) == 1 and partner.seed.iloc[0] == r.seed
    search = table[table.method == "search"].set_index("uid")
    assert set(ft.partner) <= set(search.index)
    assert (ft.set_index("partner").genome_key == search.loc[ft.partner].genome_key).all()
    # the search side of the equal-compute comparison is the fine-tuned front; the search is still reported
    for front, b in doc["best_baseline"].items():
        assert b["search_method"] == FINETUNED
        if b["method"]:
            key, hv = B.FRONTS[front]
            assert b["search_hypervolume"] == doc["methods"][FINETUNED][key][hv]
    assert "search" in doc["methods"] and ft.test_accuracy.notna().any()


def test_finetuned_members_are_chosen_on_validation_never_on_test(run_dir, monkeypatch):
    """The fine-tuned members follow the documented rule applied to pareto.csv's validation
    columns, and random test accuracies (the test measurement replaced) change nothing."""
    pareto = pd.read_csv(run_dir / "pareto.csv")
    picked = []
    for seed in (1, 2):
        rng = np.random.default_rng(seed)
        monkeypatch.setattr(C, "accuracy", lambda model, split: float(rng.random()))
        assert baselines_main([str(run_dir), "--finetune-share", "0.5", "--methods", "none", "--ratios",
                               ",".join(map(str, RATIOS)), "--suffix", f"poison{seed}", "--no-progress"]) == 0
        doc = json.loads((run_dir / f"comparison-poison{seed}.json").read_text())
        picked.append([p["partner"] for p in doc["finetune"]["picks"]])
    assert picked[0] == picked[1]
    # the rule by hand on the validation metrics
    left = pareto.drop_duplicates("genome_key")[["uid", "accuracy", "sparsity"]].to_dict("records")
    want = []
    for _, t in finetune_targets(RATIOS, 2):
        above = [r for r in left if r["sparsity"] >= t - 1e-9]
        best = (max(above, key=lambda r: (r["accuracy"], r["sparsity"], r["uid"])) if above
                else max(left, key=lambda r: (r["sparsity"], r["accuracy"], r["uid"])))
        left.remove(best)
        want.append(best["uid"])
    assert picked[0] == want


def test_share_zero_changes_nothing(run_dir):
    """--finetune-share 0 and the default of a run without screening (resolved 0) give the same
    comparison: no fine-tuned method, each _long method spends the search's S."""
    common = ["--methods", "global_long", "--ratios", "0.2,0.9", "--no-progress"]
    assert baselines_main([str(run_dir), *common, "--suffix", "z0", "--finetune-share", "0"]) == 0
    assert baselines_main([str(run_dir), *common, "--suffix", "zd"]) == 0
    docs = [json.loads((run_dir / f"comparison-{t}.json").read_text()) for t in ("z0", "zd")]
    for d in docs:
        d.pop("wall_s")
    assert docs[0] == docs[1]
    t0, td = (pd.read_csv(run_dir / f"baselines-{t}.csv") for t in ("z0", "zd"))
    pd.testing.assert_frame_equal(t0, td)
    doc = docs[0]
    assert set(doc["methods"]) == {"search", "global_long"} and FINETUNED not in set(t0.method)
    S = doc["methods"]["search"]["train_samples"]
    assert doc["finetune"]["k"] == 0 and doc["finetune"]["budget"] == S and doc["finetune_share"] == 0
    bs = json.loads((run_dir / "config.json").read_text())["kd"]["batch_size"]
    per = samples_processed(doc["train_size"], bs, max(S, 1) / (2 * doc["train_size"]))  # today's global_long
    assert (t0[t0.method == "global_long"].train_samples == per).all()
    assert all(b["search_method"] == "search" for b in doc["best_baseline"].values())


def test_bad_finetune_share_is_a_usage_error(run_dir, capsys):
    assert baselines_main([str(run_dir), "--finetune-share", "1", "--no-progress"]) == 2
    assert "finetune-share" in capsys.readouterr().err


def test_screened_run_fine_tunes_by_default(tmp_path, one_torch_thread):
    """search.screen=nll: finetune_share defaults to 0.85, S counts the screening forwards,
    and the _long baselines spend B = S / 0.15."""
    out = tmp_path / "synthetic-s1-screen"
    assert search_main(["--dataset", "synthetic", "--population", "4", "--generations", "1", "--seed", "1",
                        "--out", str(out), "--no-progress", *TINY, "--set", "teacher.epochs=8",
                        "--set", "search.screen=nll", "--set", "search.screen_bn_batches=1",
                        "--set", "search.screen_samples=6"]) == 0
    assert baselines_main([str(out), "--methods", "global_long", "--ratios", "0.3,0.6,0.9", "--no-progress"]) == 0
    doc = json.loads((out / "comparison.json").read_text())
    rows = [json.loads(x) for x in (out / "evaluations.jsonl").read_text().splitlines()]
    screened = [r for r in rows if r.get("rung") == "screen"]
    assert screened
    ft = doc["finetune"]
    S = sum(r["train_samples"] for r in rows if r.get("status") == "ok" and r.get("rung") != "screen")
    S += sum(int(round(r["counted_samples"])) for r in screened)
    assert doc["finetune_share"] == 0.85 and ft["search_compute"] == S
    assert ft["budget"] == pytest.approx(S / 0.15) and ft["k"] == 2  # floor(0.85 x 3)
    bs = json.loads((out / "config.json").read_text())["kd"]["batch_size"]
    assert ft["budget"] <= doc["methods"]["global_long"]["train_samples"] < ft["budget"] + 3 * bs
    assert FINETUNED in doc["methods"] and doc["best_baseline"]["sparsity"]["search_method"] == FINETUNED
