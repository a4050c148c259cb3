"""evo_snn.analysis.results on the two fronts: the energy front's test HV per method, and the search's
paired difference in test HV against the best equal-compute baseline of each seed."""

import json

import numpy as np
import pytest

from evo_snn.analysis.results import collect, main as results_main, paired_vs_best, summarise, summarise_paired

SPARSITIES = (0.5, 0.7, 0.8, 0.9, 0.95)


def _method(hv, hv_energy=None, val_hv_energy=None):
    s = {"test": {"hypervolume": hv, "accuracy_at_sparsity": {f"{x:g}": 0.5 for x in SPARSITIES}},
         "val": {"hypervolume": hv}, "members": 3, "evaluations": 3, "compute_samples": 100}
    if hv_energy is not None:
        s.update(test_energy={"hypervolume": hv_energy, "accuracy_at_energy": {"0.5": 0.6, "0.3": 0.4}},
                 # the validation energy HV, deliberately far from the test one: it must not be read
                 val_energy={"hypervolume": 0.99 if val_hv_energy is None else val_hv_energy}, energy_members=2)
    return s


def _write(root, name, seed, methods, fe=0.0):
    d = root / f"cifar10-s{seed}-{name}"
    d.mkdir(exist_ok=True)
    doc = {"dataset": "cifar10", "kd_mode": "sparse", "final_epochs": fe, "seed": seed, "methods": methods}
    (d / f"comparison-{len(list(d.iterdir()))}.json").write_text(json.dumps(doc))


def test_paired_delta_is_against_the_best_long_baseline_of_each_seed_on_each_front(tmp_path):
    # seed 0: global_long best on sparsity, erk_long best on energy; seed 1: lamp_long best on both.
    # 'global' (not at equal compute) is better than all, and must not count.
    _write(tmp_path, "screen", 0, {"search": _method(0.50, 0.40), "global": _method(0.9, 0.9),
                                   "global_long": _method(0.48, 0.30), "erk_long": _method(0.45, 0.35)})
    _write(tmp_path, "screen", 1, {"search": _method(0.52, 0.42), "global_long": _method(0.47, 0.30)})
    _write(tmp_path, "screen", 1, {"search": _method(0.52, 0.42), "lamp_long": _method(0.49, 0.44)})  # another file, same seed
    rows = collect([tmp_path])
    assert {"test_energy_hv", "val_energy_hv", "acc_le_e0.5", "energy_members"} <= set(rows.columns)
    pairs = paired_vs_best(rows).set_index(["seed", "front"])
    assert pairs.loc[(0, "sparsity"), "best"] == "global_long" and pairs.loc[(0, "sparsity"), "delta"] == pytest.approx(0.02)
    assert pairs.loc[(0, "energy"), "best"] == "erk_long" and pairs.loc[(0, "energy"), "delta"] == pytest.approx(0.05)
    assert pairs.loc[(1, "sparsity"), "best"] == "lamp_long" and pairs.loc[(1, "sparsity"), "delta"] == pytest.approx(0.03)
    # energy front: the test HV (0.42 - 0.44), not the validation one (0.99 everywhere)
    assert pairs.loc[(1, "energy"), "delta"] == pytest.approx(-0.02)
    paired = summarise_paired(rows).set_index("front")
    assert paired.loc["sparsity", "delta_mean"] == pytest.approx(0.025)
    assert paired.loc["sparsity", "delta_std"] == pytest.approx(np.std([0.02, 0.03], ddof=1))
    assert paired.loc["energy", "delta_mean"] == pytest.approx(0.015)
    assert (paired.loc["energy", "seeds"], paired.loc["energy", "wins"]) == (2, 1)
    assert paired.loc["energy", "best"] == "erk_long ×1, lamp_long ×1"
    summ = summarise(rows).set_index("method")
    assert summ.loc["search (screen)", "test_energy_hv_mean"] == pytest.approx(0.41)
    md = tmp_path / "r.md"
    assert results_main([str(tmp_path), "--markdown", str(md)]) == 0
    text = md.read_text()
    assert "test HV energy" in text
    assert "`search (screen)` minus the best equal-compute baseline of each seed, paired test HV on the energy front: " \
           "0.015 ± 0.049 over 2 seed(s), search ahead in 1" in text


def test_comparisons_without_energy_counts_still_summarise(tmp_path):
    _write(tmp_path, "plain", 0, {"search": _method(0.5), "global_long": _method(0.4)})
    _write(tmp_path, "plain", 1, {"search": _method(0.45), "global_long": _method(0.5)})
    rows = collect([tmp_path])
    assert rows.test_energy_hv.isna().all()
    paired = summarise_paired(rows)
    assert list(paired.front) == ["sparsity"] and paired.delta_mean.iloc[0] == pytest.approx(0.025)
    md = tmp_path / "r.md"
    assert results_main([str(tmp_path), "--markdown", str(md)]) == 0
    assert "sparsity front: 0.025 ± 0.106 over 2 seed(s), search ahead in 1" in md.read_text()
    assert "energy front" not in md.read_text()
