"""search.objectives: energy as a third (or second) objective, minimised; the hypervolume's
reference point from the config; the archive, state and pareto.csv follow.

The fitness is analytic (no training): energy_fraction = 1 - sparsity / 2 + a genome-dependent
term, so that low energy and high sparsity disagree for some genomes and the 3-D front holds
members that the 2-D (accuracy, sparsity) front drops.
"""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from evo_snn.config import OBJECTIVES, ConfigError, GenomeConfig, SearchConfig, load_config
from evo_snn.evaluation.fitness import FitnessResult
from evo_snn.structure.genome import GenomeOps
from evo_snn.search.nsga import Fitness, Individual, StructureSearch, fitness_class, hypervolume, objective_value


class EnergyFitness:
    """accuracy = 1 - sparsity^2 - 0.05 r_a; energy_fraction = 1 - sparsity / 2 - 0.3 r_a: pruning layer a
    costs accuracy and saves energy, so the two disagree at equal sparsity."""

    def __init__(self, with_energy=True):
        self.with_energy = with_energy

    def __call__(self, g, seed):
        s = g.sparsity
        m = {"accuracy": 1 - s**2 - 0.05 * g.ratios[0], "sparsity": s, "teacher_accuracy": 0.5}
        if self.with_energy:
            m["energy_fraction"] = 1 - s / 2 - 0.3 * g.ratios[0]
        return FitnessResult(m, {})


def _ops():
    rng = np.random.default_rng(0)
    return GenomeOps({"a": np.abs(rng.normal(size=(8, 4))), "b": np.abs(rng.normal(size=(20,)))},
                     GenomeConfig(ratio_mutation_prob=0.5, mask_mutation_prob=0.5))


def _point(cls, *values):
    ind = Individual.__new__(Individual)
    ind.fitness = cls(values)
    ind.metrics = {}
    return ind


def test_fitness_classes_take_directions_and_reference_from_the_table():
    assert fitness_class() is Fitness and fitness_class(("accuracy", "sparsity"), {"energy": 0.3}) is Fitness
    three = fitness_class(("accuracy", "sparsity", "energy"))
    assert three.weights == (1.0, 1.0, -1.0) and three.reference == (0.0, 0.0, 1.0)
    assert three is fitness_class(["accuracy", "sparsity", "energy"])  # one class per (objectives, reference)
    half = fitness_class(("accuracy", "energy"), {"accuracy": 0.1, "energy": 0.5})
    assert half.weights == (1.0, -1.0) and half.reference == (0.1, 0.5)
    assert {k: v[1] for k, v in OBJECTIVES.items()} == {"accuracy": 1.0, "sparsity": 1.0, "energy": -1.0}
    with pytest.raises(ValueError, match="unknown objective"):
        fitness_class(("accuracy", "latency"))


def test_three_objective_hypervolume_by_hand():
    cls = fitness_class(("accuracy", "sparsity", "energy"))
    a, b = _point(cls, 0.8, 0.5, 0.25), _point(cls, 0.4, 0.9, 0.5)
    assert hypervolume([a]) == pytest.approx(0.8 * 0.5 * 0.75)
    # union of two boxes from (0, 0, energy 1): 0.3 + 0.4 * 0.9 * 0.5 - overlap 0.4 * 0.5 * 0.5
    assert hypervolume([a, b]) == pytest.approx(0.3 + 0.18 - 0.1)
    two = fitness_class(("accuracy", "energy"))
    assert hypervolume([_point(two, 0.8, 0.2), _point(two, 0.5, 0.1)]) == pytest.approx(0.64 + 0.45 - 0.4)
    ref = fitness_class(("accuracy", "energy"), {"energy": 0.5})  # the config's reference point is used
    assert hypervolume([_point(ref, 0.8, 0.2)]) == pytest.approx(0.8 * 0.3)
    assert hypervolume([_point(Fitness, 0.9, 0.2), _point(Fitness, 0.5, 0.8)]) == pytest.approx(0.48)  # default unchanged


def _dominates(p, q):
    """p dominates q: accuracy, sparsity maximised, energy minimised."""
    better_eq = p[0] >= q[0] and p[1] >= q[1] and p[2] <= q[2]
    return better_eq and p != q


def test_three_objective_search_keeps_the_3d_front_and_minimises_energy():
    evaluated = {}

    class Record:
        def __call__(self, search):
            pass

        def on_evaluation(self, ind, metrics):
            if metrics is not None:
                evaluated[ind.genome.key] = (metrics["accuracy"], metrics["sparsity"], metrics["energy_fraction"])

    cfg = SearchConfig(population=8, generations=4, seed=3, objectives=("accuracy", "sparsity", "energy"))
    search = StructureSearch(_ops(), EnergyFitness(), cfg, GenomeConfig(), callbacks=[Record()], progress=False)
    archive = list(search.run())
    assert all(ind.fitness.weights == (1.0, 1.0, -1.0) for ind in archive)
    pts = list(evaluated.values())
    front = {p for p in pts if not any(_dominates(q, p) for q in pts)}
    assert {tuple(ind.fitness.values) for ind in archive} == front
    # some 3-D member is dominated in (accuracy, sparsity) alone: energy changed the front
    assert any(any(q[0] >= p[0] and q[1] >= p[1] and q[:2] != p[:2] for q in pts) for p in front)
    for ind in archive:
        assert objective_value(ind, "energy") == ind.metrics["energy_fraction"] == ind.fitness.values[2]


def test_accuracy_energy_search_reads_sparsity_from_the_metrics(tmp_path):
    """Catches: pareto.csv / generations.csv reading fitness.values[1] (here the energy) as the sparsity."""
    import pandas as pd

    from evo_snn.state.rundir import RunDir, RunLogger, pareto_frame

    cfg = SearchConfig(population=4, generations=1, seed=0, objectives=("accuracy", "energy"))
    run = RunDir.create(tmp_path / "run", "synthetic", "x")
    search = StructureSearch(_ops(), EnergyFitness(), cfg, GenomeConfig(), callbacks=[RunLogger(run)], progress=False)
    archive = list(search.run())
    gens = pd.read_csv(run.path / "generations.csv")
    sparsity = [ind.metrics["sparsity"] for ind in search.population]
    assert gens["mean_sparsity"].iloc[-1] == pytest.approx(sum(sparsity) / len(sparsity))
    assert gens["mean_sparsity"].iloc[-1] != pytest.approx(sum(i.fitness.values[1] for i in search.population) / 4)
    front = pareto_frame(archive)
    by_uid = {ind.uid: ind for ind in archive}
    for _, row in front.iterrows():
        ind = by_uid[row["uid"]]
        assert row["sparsity"] == ind.metrics["sparsity"] and row["energy_fraction"] == ind.fitness.values[1]


def test_failed_individual_gets_the_worst_energy():
    class Failing(EnergyFitness):
        def __call__(self, g, seed):
            raise RuntimeError("boom")

    cfg = SearchConfig(population=4, generations=0, seed=0, max_retries=0, objectives=("accuracy", "sparsity", "energy"))
    search = StructureSearch(_ops(), Failing(), cfg, GenomeConfig(), progress=False)
    search.run()
    assert all(ind.status == "failed" and ind.fitness.values == (0.0, 0.0, 1.0) for ind in search.population)
    assert hypervolume(search.population) == 0.0


def test_missing_energy_metric_is_an_error_naming_it():
    cfg = SearchConfig(population=4, generations=0, seed=0, objectives=("accuracy", "energy"))
    search = StructureSearch(_ops(), EnergyFitness(with_energy=False), cfg, GenomeConfig(), progress=False)
    with pytest.raises(ValueError, match="energy_fraction"):
        search.run()


def test_state_round_trip_keeps_objectives_and_refuses_others():
    cfg = SearchConfig(population=4, generations=1, seed=0, objectives=("accuracy", "sparsity", "energy"))
    search = StructureSearch(_ops(), EnergyFitness(), cfg, GenomeConfig(), progress=False)
    search.run()
    state = search.state_dict()
    doc = json.loads(json.dumps({k: v for k, v in state.items() if k != "genomes"}))
    doc["genomes"] = state["genomes"]
    assert doc["objectives"] == ["accuracy", "sparsity", "energy"]
    again = StructureSearch(_ops(), EnergyFitness(), cfg, GenomeConfig(), store=search.store, progress=False)
    again.load_state_dict(doc)
    assert [tuple(i.fitness.values) for i in again.archive] == [tuple(i.fitness.values) for i in search.archive]
    assert hypervolume(list(again.archive)) == hypervolume(list(search.archive))
    two = SearchConfig(population=4, generations=1, seed=0)
    with pytest.raises(ValueError, match="objectives"):
        StructureSearch(_ops(), EnergyFitness(), two, GenomeConfig(), store=search.store, progress=False).load_state_dict(doc)


def test_config_checks_objectives_and_reference():
    cfg = load_config("synthetic", overrides=["search.objectives=[accuracy,sparsity,energy]", "search.hv_reference.energy=0.7"])
    assert cfg.search.objectives == ("accuracy", "sparsity", "energy") and cfg.search.hv_reference["energy"] == 0.7
    assert load_config("synthetic").search.hv_reference == {"accuracy": 0.0, "sparsity": 0.0, "energy": 1.0}
    bad = {"search.objectives=[sparsity,energy]": "including 'accuracy'", "search.objectives=[accuracy,power]": "unknown",
           "search.objectives=[accuracy,accuracy]": "distinct", "energy.e_mac_pj=-1": "energy.e_mac_pj must be a finite number >= 0, got -1"}
    for item, msg in bad.items():
        with pytest.raises(ConfigError, match=msg):
            load_config("synthetic", overrides=[item])


def test_objectives_table_and_combinations_build():
    for k in (2, 3):
        for combo in itertools.permutations(OBJECTIVES, k):
            if "accuracy" in combo:
                cls = fitness_class(combo)
                assert len(cls.weights) == k and len(cls.reference) == k


def test_tiny_three_objective_search_end_to_end(tmp_path):
    """The CLI with --set search.objectives=[accuracy,sparsity,energy]: config.json keeps the
    reference point, pareto.csv the energy columns, the hypervolume is 3-D, energy.png exists."""
    import pandas as pd

    from evo_snn.state.rundir import ENERGY_COLUMNS
    from evo_snn.search.run import main

    tiny = ["data.synthetic_classes=3", "data.synthetic_train_per_class=16", "data.synthetic_test_per_class=6",
            "data.synthetic_size=8", "data.frames=4", "data.val_fraction=0.25", "model.channels=[4]",
            "teacher.epochs=2", "kd.epochs=0.5", "search.objectives=[accuracy,sparsity,energy]"]
    out = tmp_path / "run"
    args = ["--dataset", "synthetic", "--population", "4", "--generations", "1", "--seed", "3", "--out", str(out),
            "--no-progress"]
    assert main(args + [a for t in tiny for a in ("--set", t)]) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["search"]["objectives"] == ["accuracy", "sparsity", "energy"]
    assert cfg["search"]["hv_reference"] == {"accuracy": 0.0, "sparsity": 0.0, "energy": 1.0}
    assert cfg["energy"] == {"e_ac_pj": 0.9, "e_mac_pj": 4.6}
    front = pd.read_csv(out / "pareto.csv")
    assert set(ENERGY_COLUMNS) <= set(front.columns) and (front["effective_acs"] > 0).all()
    assert ((front["energy_fraction"] > 0) & (front["energy_fraction"] < 1)).all()
    rows = [json.loads(line) for line in (out / "evaluations.jsonl").read_text().splitlines()]
    ok = [r for r in rows if r["status"] != "failed"]
    assert all(r["energy_pj"] == pytest.approx(0.9 * r["effective_acs"] + 4.6 * r["effective_macs"]) for r in ok)
    # generations.csv: the 3-D hypervolume of the front, recomputed here from pareto.csv
    pts = front[["accuracy", "sparsity", "energy_fraction"]].to_numpy()
    cls = fitness_class(("accuracy", "sparsity", "energy"))
    hv = hypervolume([_point(cls, *p) for p in pts])
    assert pd.read_csv(out / "generations.csv")["hypervolume"].iloc[-1] == pytest.approx(hv) and hv > 0
    assert (out / "plots" / "energy.png").is_file() and (out / "plots" / "pareto.png").is_file()
