"""Multi-fidelity evaluation (search.fidelity_fraction < 1, evo_snn.evaluation.fidelity): successive
halving inside a generation. Plain fitness functions through the serial evaluator, then
the real fitness and the CLI on the tiny synthetic set."""

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from evo_snn.config import Config, ConfigError, GenomeConfig, SearchConfig
from evo_snn.evaluation.evaluator import ReplayEvaluator, SerialEvaluator
from evo_snn.evaluation.fidelity import Rung, rung_seed, student_key
from evo_snn.evaluation.fitness import FitnessResult
from evo_snn.structure.genome import GenomeOps
from evo_snn.search.nsga import StructureSearch
from evo_snn.state.store import StudentStore

S = 1000  # train_samples of a full evaluation of the plain fitness below


def _ops():
    rng = np.random.default_rng(0)
    return GenomeOps({"a": np.abs(rng.normal(size=(8, 4))), "b": np.abs(rng.normal(size=(20,)))},
                     GenomeConfig(ratio_mutation_prob=0.5, mask_mutation_prob=0.5))


def _tag(key: str) -> int:
    """A genome key as an int64 (students in a disk store hold tensors only)."""
    return int(key, 16) >> 8


def _good(key: str) -> bool:
    """A fixed half of the genomes (by key) look good at rung 0."""
    return int(key, 16) % 2 == 0


class RungFitness:
    """A plain multi-fidelity fitness. Full fidelity: accuracy 1 - s^2 - 0.05 r_0 (<= 1).
    Rung 0: 'good' genomes score (1.5 + u, 1.5 - u) and the others (1.1, 1.1) (u in [0, 0.1),
    from the key): every good one dominates every other one, the good ones are mutually
    non-dominated, and no rung-0 value is a valid full-fidelity one (accuracy > 1), so a
    rung-0 value that leaked into the archive would show. The student records how far it
    was trained ('trained', a fraction of kd.epochs) and for which genome."""

    def __init__(self, fail=None):
        self.jobs, self.fail = [], fail or {}

    def __call__(self, g, seed, init_state=None, rung=None):
        self.jobs.append((g.key, seed, init_state, rung))
        if g.key in self.fail and self.fail[g.key] == (None if rung is None else rung.index):
            raise RuntimeError("boom")
        start = 0.0 if rung is None else rung.start
        if rung is not None and rung.continues:
            assert init_state is not None and init_state["key"].item() == _tag(g.key) and init_state["trained"].item() == start
        spent = 1.0 if rung is None else rung.spent
        s = g.sparsity
        if rung is not None and rung.fidelity < 1:
            u = (int(g.key, 16) % 1000) / 10000
            acc, sp = (1.5 + u, 1.5 - u) if _good(g.key) else (1.1, 1.1)
        else:
            acc, sp = 1 - s**2 - 0.05 * g.ratios[0], s
        return FitnessResult({"accuracy": acc, "sparsity": sp, "train_samples": int(round(S * spent)), "inherited": init_state is not None and not (rung is not None and rung.continues)},
                             {"key": torch.tensor([_tag(g.key)]), "trained": torch.tensor([start + spent], dtype=torch.float64)})


class Rows:
    """Search callback collecting what a RunLogger would write: one row per evaluation."""

    def __init__(self):
        self.rows, self.gens = [], []

    def __call__(self, search):
        self.gens.append(search.gen)

    def on_evaluation(self, ind, metrics):
        self.rows.append({"gen": ind.gen, "uid": ind.uid, "genome_key": ind.genome.key, "status": ind.status,
                          "seed": ind.evaluation_seed, "base_seed": ind.seed, **ind.metrics})


def _search(fitness, b=0.25, eta=0.5, population=8, generations=3, seed=1, store=None, callbacks=(), **kw):
    cfg = SearchConfig(population=population, generations=generations, seed=seed, fidelity_fraction=b, promote_fraction=eta, **kw)
    return StructureSearch(_ops(), fitness, cfg, GenomeConfig(crossover_prob=0.5), store=store, callbacks=list(callbacks),
                           progress=False)


# ------------------------------------------------------------------ config
def test_config_keys_are_off_by_default_and_validated():
    cfg = Config()
    assert cfg.search.fidelity_fraction == 1.0 and cfg.search.promote_fraction == 0.5
    assert Config().override(["search.fidelity_fraction=null"]).validate().search.fidelity_fraction is None
    ok = Config().override(["search.fidelity_fraction=0.25", "search.promote_fraction=1"]).validate()
    assert ok.search.fidelity_fraction == 0.25 and ok.search.promote_fraction == 1.0
    for bad, msg in [("search.fidelity_fraction=0", "fidelity_fraction must be a number in \\(0, 1\\]"),
                     ("search.fidelity_fraction=1.5", "fidelity_fraction"), ("search.fidelity_fraction=true", "fidelity_fraction"),
                     ("search.promote_fraction=0", "promote_fraction must be a number in \\(0, 1\\]"),
                     ("search.promote_fraction=2", "promote_fraction")]:
        with pytest.raises(ConfigError, match=msg):
            Config().override([bad]).validate()


# ------------------------------------------------------------------ promotion
def test_promote_ranks_by_nondominated_sorting_then_crowding():
    search = _search(RungFitness(), eta=0.5)
    ops = _ops()
    rng = np.random.default_rng(5)
    pts = [(0.9, 0.1), (0.5, 0.5), (0.1, 0.9), (0.4, 0.4), (0.3, 0.3), (0.05, 0.05)]  # fronts: 3 + 1 + 1 + 1
    inds = []
    for p in pts:
        ind = search._new(ops.random(rng), 1)
        ind.fitness.values, ind.status = p, "ok"
        inds.append(ind)
    picked = lambda eta: {tuple(i.fitness.values) for i in (setattr(search, "promote_fraction", eta) or search.promote(inds))}  # noqa: E731
    assert picked(0.5) == set(pts[:3])  # ceil(0.5 * 6) = 3: the first front
    assert picked(4 / 6) == set(pts[:4])  # 4: the first front and the only member of the second
    assert picked(2 / 6) == {pts[0], pts[2]}  # 2 of the first front: its extremes (infinite crowding distance)
    assert picked(0.01) == {pts[0]} or len(picked(0.01)) == 1
    inds[0].status = "failed"  # a failed evaluation is never promoted
    assert pts[0] not in picked(1.0) and len(picked(1.0)) == 5


def test_rung0_promotes_the_best_ceil_eta_n_among_the_offspring_only():
    rows = Rows()
    fit = RungFitness()
    search = _search(fit, b=0.25, eta=0.375, generations=4, callbacks=[rows])
    archive = search.run()
    for gen in range(1, 5):
        r0 = [r for r in rows.rows if r["gen"] == gen and r["rung"] == 0 and r["status"] == "ok"]
        promoted = {r["genome_key"] for r in rows.rows if r["gen"] == gen and r["rung"] == 1}
        good = {r["genome_key"] for r in r0 if _good(r["genome_key"])}
        n = len({r["genome_key"] for r in r0})
        assert len(promoted) == math.ceil(0.375 * n)  # 3 of 8
        # rung-0 good genomes dominate the others: promoted among them, or all of them promoted
        assert promoted <= good or good <= promoted
    # only full-fidelity values reach the archive and the population (rung-0 accuracies are > 1)
    assert all(ind.fitness.values[0] <= 1 and ind.metrics["fidelity"] == 1.0 for ind in archive)
    assert all(ind.fitness.values[0] <= 1 and ind.metrics["fidelity"] == 1.0 for ind in search.population)
    assert not any(k.endswith(".rung0") for k in search.store.keys())  # rung-0 students live for their generation only


def test_only_full_fidelity_results_enter_survival_and_archive():
    """Rung-0 results of non-promoted children never enter survival: with eta = 1/8 one
    child per generation survives the screening, so the population changes by at most one
    member per generation."""
    rows = Rows()
    search = _search(RungFitness(), eta=1 / 8, generations=3, callbacks=[rows])
    pops = []
    search.callbacks.append(lambda s: pops.append({i.uid for i in s.population}))
    search.run()
    for before, after in zip(pops, pops[1:]):
        assert len(after - before) <= 1
    promoted = {r["uid"] for r in rows.rows if r.get("rung") == 1 and r["gen"] > 0}
    assert {i.uid for i in search.archive} - {i.uid for i in search.archive if i.gen == 0} <= promoted
    assert all(i.gen == 0 or i.uid in promoted for i in search.population)


# ------------------------------------------------------------------ budget and records
def test_promotion_continues_from_the_rung0_student_and_counts_samples_once():
    rows = Rows()
    fit = RungFitness()
    search = _search(fit, b=0.25, eta=0.5, generations=2, callbacks=[rows])
    search.run()
    cont = [j for j in fit.jobs if j[3] is not None and j[3].continues]
    assert cont and all(j[2]["trained"].item() == 0.25 and j[2]["key"].item() == _tag(j[0]) for j in cont)  # (checked in the fitness too)
    assert all(search.store.get(k)["trained"].item() == 1.0 for k in search.results)  # full students only under genome keys
    for gen in (1, 2):
        spent = sum(r["train_samples"] for r in rows.rows if r["gen"] == gen and r["status"] == "ok")
        assert spent == 8 * 0.25 * S + 4 * 0.75 * S == 0.625 * 8 * S  # a generation costs 0.625 of a plain one
        by_uid = {}
        for r in rows.rows:
            if r["gen"] == gen:
                by_uid.setdefault(r["uid"], []).append(r)
        for uid, rs in by_uid.items():
            if len(rs) == 2:  # promoted: b*S + (1 - b)*S = S, once
                assert [r["rung"] for r in rs] == [0, 1] and sum(r["train_samples"] for r in rs) == S


def test_every_evaluation_records_its_fidelity_rung_and_seed():
    rows = Rows()
    search = _search(RungFitness(), b=0.25, generations=2, callbacks=[rows])
    search.run()
    ok = [r for r in rows.rows if r["status"] == "ok"]
    assert {(r["fidelity"], r["rung"], r["fidelity_spent"]) for r in ok if r["gen"] == 0} == {(1.0, 1, 1.0)}
    later = {(r["fidelity"], r["rung"], r["fidelity_spent"]) for r in ok if r["gen"] > 0}
    assert later == {(0.25, 0, 0.25), (1.0, 1, 0.75)}
    for r in ok:  # rung 0 and generation 0: the individual's seed; a continuation: one derived from it
        assert r["seed"] == (rung_seed(r["base_seed"], 1) if r["fidelity_spent"] == 0.75 else r["base_seed"])
    seeds = [r["seed"] for r in ok]
    assert len(set(seeds)) == len(seeds)  # a continuation never replays its rung-0 batch order


def test_off_is_the_single_fidelity_search():
    def summary(s, rows):
        return ([(i.uid, i.genome.key, i.fitness.values) for i in s.population],
                [(i.uid, i.fitness.values) for i in s.archive], [sorted(r) for r in rows.rows])

    got = []
    for b in (None, 1.0, "default"):
        rows = Rows()
        calls = []

        def fitness(g, seed, *rest):
            calls.append(len(rest))
            s = g.sparsity
            return FitnessResult({"accuracy": 1 - s**2 - 0.05 * g.ratios[0], "sparsity": s}, {})

        cfg = SearchConfig(population=8, generations=2, seed=1) if b == "default" else \
            SearchConfig(population=8, generations=2, seed=1, fidelity_fraction=b)
        s = StructureSearch(_ops(), fitness, cfg, GenomeConfig(crossover_prob=0.5), callbacks=[rows], progress=False)
        s.run()
        assert set(calls) == {0}  # jobs stay (genome, seed)
        assert not any("fidelity" in r or "rung" in r for r in rows.rows)
        got.append(summary(s, rows))
    assert got[0] == got[1] == got[2]


# ------------------------------------------------------------------ twins, cache, failures, inheritance
def test_twins_cache_and_failures_with_rungs():
    ops = _ops()
    rng = np.random.default_rng(7)
    pool = [ops.random(rng) for _ in range(200)]
    good = [g for g in pool if _good(g.key)]
    bad = [g for g in pool if not _good(g.key)]
    known, fails1 = good[0], good[1]  # known: evaluated before; fails1: promoted (the only good one screened)
    twin, fails0, other = bad[:3]
    fit = RungFitness(fail={fails0.key: 0, fails1.key: 1})
    search = _search(fit, eta=0.5, population=4, generations=0)
    search.results[known.key] = {"accuracy": 0.5, "sparsity": known.sparsity}  # evaluated earlier at full fidelity
    search.store.put(known.key, {"key": torch.tensor([_tag(known.key)]), "trained": torch.tensor([1.0], dtype=torch.float64)})
    children = [search._new(g, 1) for g in (known, twin, twin, fails0, fails1, other)]
    full, n = search.evaluate_offspring(children, 1)
    # known: a cache hit, not screened; twin: screened once; 4 distinct genomes screened
    assert list(dict.fromkeys(j[0] for j in fit.jobs if j[3].index == 0)) == [twin.key, fails0.key, fails1.key, other.key]
    assert sum(j[0] == twin.key for j in fit.jobs if j[3].index == 0) == 1  # (failures are retried: max_retries)
    assert children[0].status == "cached" and children[0] in full and children[0].fitness.values[0] == 0.5
    # fails0 failed at rung 0: worst fitness, never promoted, not returned for survival
    assert children[3].status == "failed" and children[3].metrics["rung"] == 0 and children[3] not in full
    assert children[3].fitness.values == (0.0, 0.0)
    # ceil(0.5 * 4) = 2 promoted: fails1 (it dominates at rung 0) and one of twin / other, never the twin twice
    promoted = list(dict.fromkeys(j[0] for j in fit.jobs if j[3].index == 1))
    assert len(promoted) == 2 and fails1.key in promoted
    assert set(promoted) - {fails1.key} <= {twin.key, other.key} and len(set(promoted)) == 2
    # fails1 failed at rung 1: a full-fidelity failure, worst fitness, goes to survival as in a plain search
    assert children[4] in full and children[4].status == "failed" and children[4].metrics["rung"] == 1
    assert children[4].fitness.values == (0.0, 0.0)
    if twin.key in promoted:  # both copies get the one full result
        assert children[1] in full and children[2] in full and children[2].status == "cached"
        assert children[1].fitness.values == children[2].fitness.values and children[1].metrics["fidelity"] == 1.0
    else:
        assert children[1] not in full and children[2] not in full and children[5] in full
    assert n == 4 + 2
    assert all(c.metrics.get("fidelity", 1.0) == 1.0 for c in full)


def test_inheritance_with_rungs_starts_rung0_from_the_parent_and_carries_the_flag():
    rows = Rows()
    fit = RungFitness()
    search = _search(fit, b=0.5, generations=2, callbacks=[rows], inherit_weights=True)
    search.run()
    first = [j for j in fit.jobs if j[3].index == 0]
    assert first and all(j[2] is not None and j[2]["trained"].item() == 1.0 for j in first)  # a parent's full student
    for r in rows.rows:
        if r["gen"] > 0 and r["status"] == "ok":
            assert r["inherited"] is True  # the continuation reports its rung-0 evaluation's flag


class ShuffledEvaluator(SerialEvaluator):
    """Yields each map's results in a scrambled order, as Ray's completion order does."""

    def __init__(self, seed):
        super().__init__()
        self.rng = np.random.default_rng(seed)

    def map(self, fn, jobs):
        out = list(super().map(fn, jobs))
        return [out[i] for i in self.rng.permutation(len(out))]


def test_the_order_results_arrive_in_does_not_change_the_search():
    """Serial and Ray alike: promotion waits for every rung-0 result and ranks them in offspring order."""
    def summary(s):
        return ([(i.uid, i.genome.key, i.fitness.values) for i in s.population], [(i.uid, i.fitness.values) for i in s.archive])

    # eta = 0.75: the promotion reaches the tied rung-0 values of the 'bad' genomes, where only order decides
    serial = _search(RungFitness(), generations=3, eta=0.75)
    serial.run()
    for seed in (0, 1):
        shuffled = _search(RungFitness(), generations=3, eta=0.75)
        shuffled.evaluator = ShuffledEvaluator(seed)
        shuffled.run()
        assert summary(shuffled) == summary(serial)


def test_students_per_batch_groups_each_rung_separately():
    """K = 3: the jobs of one rung go in groups (GroupedJobs; a plain function is applied per
    member), never a rung-0 job with a continuation: the same search as K = 1."""
    a, b = RungFitness(), RungFitness()
    one = _search(a, generations=2)
    one.run()
    three = _search(b, generations=2, students_per_batch=3)
    three.run()
    assert [(i.uid, i.fitness.values) for i in three.archive] == [(i.uid, i.fitness.values) for i in one.archive]
    assert [(k, s, r) for k, s, _, r in b.jobs] == [(k, s, r) for k, s, _, r in a.jobs]


# ------------------------------------------------------------------ resume
def _json_round_trip(state):
    doc = json.loads(json.dumps({k: v for k, v in state.items() if k != "genomes"}))
    return {**doc, "genomes": dict(state["genomes"])}


@pytest.mark.parametrize("kill_at", ["rung0", "between", "continuation"])
def test_a_kill_in_a_generation_then_resume_equals_a_straight_run(kill_at, tmp_path):
    """Killed in generation 2 (during rung 0, after it, or during the continuation), resumed
    from the generation-1 state with the finished evaluations replayed (as --resume does):
    the same evaluations and front; the replayed rung-0 students are the rung-0 ones."""
    straight_rows = Rows()
    straight = _search(RungFitness(), generations=3, callbacks=[straight_rows])
    straight.run()

    saved, rows = {}, Rows()

    def kill(ind, metrics):
        n0 = sum(r["gen"] == 2 and r["rung"] == 0 for r in rows.rows)
        n1 = sum(r["gen"] == 2 and r["rung"] == 1 for r in rows.rows)
        if (kill_at, n0, n1) in {("rung0", 3, 0), ("between", 8, 0), ("continuation", 8, 2)}:
            raise KeyboardInterrupt

    class Killer(Rows):
        def on_evaluation(self, ind, metrics):
            rows.on_evaluation(ind, metrics)
            kill(ind, metrics)

    def checkpoint(search):
        saved[search.gen] = _json_round_trip(search.state_dict())

    store = StudentStore(tmp_path / "students")
    first = _search(RungFitness(), generations=3, store=store, callbacks=[checkpoint, Killer()])
    with pytest.raises(KeyboardInterrupt):
        first.run()
    finished = {(r["genome_key"], r["seed"]): {k: v for k, v in r.items() if k not in ("gen", "uid", "genome_key", "status", "seed", "base_seed")}
                for r in rows.rows if r["gen"] == 2 and r["status"] == "ok"}
    assert finished
    fit = RungFitness()
    resumed_rows = Rows()
    resumed = _search(fit, generations=3, store=store, callbacks=[resumed_rows])
    resumed.evaluator = ReplayEvaluator(SerialEvaluator(), finished, store)
    resumed.load_state_dict(saved[1])
    resumed.run()
    key = lambda r: (r["uid"], r["rung"])  # noqa: E731
    got = sorted((key(r), r["seed"], r["accuracy"], r["sparsity"], r["status"]) for r in resumed_rows.rows)
    want = sorted((key(r), r["seed"], r["accuracy"], r["sparsity"], r["status"]) for r in straight_rows.rows if r["gen"] >= 2)
    assert got == want
    assert [(i.uid, i.fitness.values) for i in resumed.archive] == [(i.uid, i.fitness.values) for i in straight.archive]
    assert [(i.uid, i.fitness.values) for i in resumed.population] == [(i.uid, i.fitness.values) for i in straight.population]
    # the finished evaluations were served, not trained again
    trained = {(k, s) for k, s, _, _ in fit.jobs}
    assert not trained & set(finished)
    assert resumed.evaluator.reused == len(finished)


def test_replay_serves_a_rung0_result_with_its_rung0_student(tmp_path):
    ops = _ops()
    g = ops.random(np.random.default_rng(3))
    store = StudentStore(tmp_path / "students")
    store.put(g.key, {"w": torch.ones(2)})  # the genome's full-fidelity student
    store.put(student_key(g.key, 0.25, 0), {"w": torch.zeros(2)})  # its rung-0 student
    assert student_key(g.key, 0.25, 0) == f"{g.key}.rung0" and student_key(g.key, 1.0) == g.key == student_key(g.key)
    finished = {(g.key, 11): {"accuracy": 0.1, "sparsity": 0.2, "fidelity": 0.25, "rung": 0},
                (g.key, 12): {"accuracy": 0.3, "sparsity": 0.2, "fidelity": 1.0, "rung": 1}}
    replay = ReplayEvaluator(SerialEvaluator(), finished, store)
    out = dict(replay.map(None, [(g, 11, None, Rung(0, 0.0, 0.25)), (g, 12, None, Rung(1, 0.25, 1.0))]))
    assert torch.equal(out[0].student_state["w"], torch.zeros(2)) and out[0].metrics["rung"] == 0
    assert torch.equal(out[1].student_state["w"], torch.ones(2))


# ------------------------------------------------------------------ baselines compute
def test_baselines_count_both_rungs_once(tmp_path):
    from types import SimpleNamespace

    from evo_snn.analysis.baselines import Comparison
    from evo_snn.training.train import samples_processed

    cfg = Config().override(["kd.epochs=1.0", "kd.batch_size=10", "search.fidelity_fraction=0.25"]).validate()
    rows = [{"gen": 0, "status": "ok", "train_samples": 100, "fidelity": 1.0, "rung": 1, "fidelity_spent": 1.0},
            {"gen": 1, "status": "ok", "train_samples": 30, "fidelity": 0.25, "rung": 0, "fidelity_spent": 0.25},
            {"gen": 1, "status": "ok", "train_samples": 80, "fidelity": 1.0, "rung": 1, "fidelity_spent": 0.75},
            {"gen": 1, "status": "cached", "train_samples": 30, "fidelity": 0.25, "rung": 0, "fidelity_spent": 0.25},
            {"gen": 1, "status": "failed", "fidelity": 0.25, "rung": 0, "fidelity_spent": 0.25},
            {"gen": 1, "status": "failed", "fidelity": 1.0, "rung": 1, "fidelity_spent": 0.75},
            {"gen": 2, "status": "ok", "train_samples": 999}]  # after the checkpoint: not counted
    (tmp_path / "evaluations.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cmp = Comparison.__new__(Comparison)
    cmp.run, cmp.cfg = SimpleNamespace(path=tmp_path), cfg
    cmp.splits, cmp.ckpt = SimpleNamespace(train=range(100)), SimpleNamespace(gen=1)
    n, samples = cmp.search_compute()
    assert samples_processed(100, 10, 0.25) == 30 and samples_processed(100, 10, 0.75) == 80
    assert (n, samples) == (5, 100 + 30 + 80 + 30 + 80)
    assert cmp.random_evaluations(n, samples) == math.ceil(320 / 100)  # random search at the search's compute
    plain = Comparison.__new__(Comparison)
    plain.run, plain.splits, plain.ckpt = cmp.run, cmp.splits, cmp.ckpt
    plain.cfg = Config().override(["kd.epochs=1.0", "kd.batch_size=10"]).validate()
    assert plain.random_evaluations(n, samples) == n  # one fidelity: as many evaluations as the search


# ------------------------------------------------------------------ the real fitness
def _real_fitness(tiny_cfg, tiny_splits):
    """(cfg with kd.epochs 2, teacher, prunable layers, GenomeFitness, the same fitness with lr 0):
    the real fitness on the tiny synthetic split, for the rung tests below."""
    from dataclasses import replace

    from evo_snn.evaluation.fitness import FitnessContext, GenomeFitness
    from evo_snn.models import build_model
    from evo_snn.structure.pruning import prunable_layers
    from evo_snn.training.train import cpu_state

    cfg = replace(tiny_cfg, kd=replace(tiny_cfg.kd, epochs=2.0))
    torch.manual_seed(0)
    teacher = build_model(cfg.model, tiny_splits.frame_shape, tiny_splits.num_classes)
    layers = tuple(prunable_layers(teacher, cfg.genome.prunable))
    ctx = FitnessContext(cfg, tiny_splits.train, tiny_splits.val, tiny_splits.frame_shape, tiny_splits.num_classes,
                         cpu_state(teacher), layers)
    frozen = GenomeFitness(replace(ctx, cfg=replace(cfg, kd=replace(cfg.kd, lr=0.0))), torch.device("cpu"))
    return cfg, teacher, layers, GenomeFitness(ctx, torch.device("cpu")), frozen


def test_genome_fitness_continues_from_the_rung0_student(tiny_cfg, tiny_splits, one_torch_thread):
    from evo_snn.structure.pruning import weight_magnitudes
    from evo_snn.training.train import samples_processed

    cfg, teacher, layers, fit, frozen = _real_fitness(tiny_cfg, tiny_splits)
    g = GenomeOps(weight_magnitudes(teacher, layers), cfg.genome).random(np.random.default_rng(0))
    r0, r1 = Rung(0, 0.0, 0.25), Rung(1, 0.25, 1.0)
    n, bs = len(tiny_splits.train), cfg.kd.batch_size
    a = fit(g, 7, None, r0)
    assert a.metrics["train_samples"] == samples_processed(n, bs, 0.5)
    b = fit(g, rung_seed(7, 1), a.student_state, r1)
    assert b.metrics["train_samples"] == samples_processed(n, bs, 1.5) and b.metrics["inherited"] is False
    with pytest.raises(ValueError, match="rung-0 student"):
        fit(g, 8, None, r1)
    # it starts from the rung-0 student: with a zero learning rate (frozen) the prunable weights stay the rung-0 ones
    c = frozen(g, rung_seed(7, 1), a.student_state, r1)
    for name in layers:
        w = a.student_state[name + ".weight"]
        assert torch.equal(c.student_state[name + ".weight"], w)
        assert not torch.equal(w, teacher.state_dict()[name + ".weight"].masked_fill(w == 0, 0))  # trained at rung 0
    # loaded as it is (not refilled from the teacher as an inherited parent's student is): a kept
    # connection the rung-0 training had left at exactly zero stays zero
    state = {k: v.clone() for k, v in a.student_state.items()}
    w = state[layers[0] + ".weight"].view(-1)
    kept = int(torch.nonzero(w != 0)[0])
    w[kept] = 0.0
    d = frozen(g, rung_seed(7, 1), state, r1)
    assert d.student_state[layers[0] + ".weight"].view(-1)[kept] == 0.0
    # a full evaluation through the rung path is the plain evaluation
    full = fit(g, 7, None, Rung(1, 0.0, 1.0))
    plain = fit(g, 7)
    assert full.metrics["accuracy"] == plain.metrics["accuracy"] and full.metrics["train_loss"] == plain.metrics["train_loss"]


def test_genome_fitness_group_trains_a_rung_from_each_members_own_student(tiny_cfg, tiny_splits, one_torch_thread):
    from evo_snn.structure.pruning import weight_magnitudes
    from evo_snn.training.train import samples_processed

    cfg, teacher, layers, fit, frozen = _real_fitness(tiny_cfg, tiny_splits)
    ops = GenomeOps(weight_magnitudes(teacher, layers), cfg.genome)
    rng = np.random.default_rng(1)
    genomes = [ops.random(rng), ops.random(rng)]
    r0, r1 = Rung(0, 0.0, 0.25), Rung(1, 0.25, 1.0)
    firsts = fit.group([(g, 10 + i, None, r0) for i, g in enumerate(genomes)])
    n, bs = len(tiny_splits.train), cfg.kd.batch_size
    assert [r.metrics["train_samples"] for r in firsts] == [samples_processed(n, bs, 0.5)] * 2
    conts = frozen.group([(g, rung_seed(10 + i, 1), a.student_state, r1) for i, (g, a) in enumerate(zip(genomes, firsts))])
    for a, c in zip(firsts, conts):
        assert c.metrics["train_samples"] == samples_processed(n, bs, 1.5)
        for name in layers:  # each member starts from its own rung-0 student
            assert torch.equal(c.student_state[name + ".weight"], a.student_state[name + ".weight"])
    with pytest.raises(ValueError, match="share one rung"):
        fit.group([(genomes[0], 1, None, r0), (genomes[1], 2, firsts[1].student_state, r1)])


# ------------------------------------------------------------------ the CLI
from test_search import TINY  # noqa: E402

FID = ["--dataset", "synthetic", "--population", "4", "--seed", "3", "--no-progress", *TINY, "--set", "kd.epochs=1.0",
       "--set", "search.fidelity_fraction=0.5", "--set", "search.promote_fraction=0.5"]


def _evaluations(run):
    return [json.loads(line) for line in (run / "evaluations.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def fid_straight(tmp_path_factory, one_torch_thread):
    from evo_snn.search.run import main

    out = tmp_path_factory.mktemp("fid") / "r"
    assert main([*FID, "--generations", "2", "--out", str(out)]) == 0
    return out


def test_cli_run_records_fidelity_and_fronts_are_full_fidelity(fid_straight):
    rows = _evaluations(fid_straight)
    assert {(r["gen"] > 0, r["rung"], r["fidelity"]) for r in rows} == {(False, 1, 1.0), (True, 0, 0.5), (True, 1, 1.0)}
    full_uids = {r["uid"] for r in rows if r["fidelity"] == 1.0}
    front = pd.read_csv(fid_straight / "pareto.csv")
    assert set(front["uid"]) <= full_uids
    for uid in front["uid"]:
        full = [r for r in rows if r["uid"] == uid and r["fidelity"] == 1.0 and r["status"] in ("ok", "cached")][0]
        assert front.loc[front["uid"] == uid, "accuracy"].item() == pytest.approx(full["accuracy"], abs=1e-12)
    assert all(json.loads((d / "metrics.json").read_text())["uid"] in full_uids for d in (fid_straight / "exported").iterdir())
    assert not [p for p in (fid_straight / "checkpoints" / "students").iterdir() if ".rung" in p.name]


@pytest.mark.parametrize("at", [(2, 0, 1), (2, 1, 1)])  # (gen, rung, rows of that rung logged) at the kill
def test_cli_interrupt_then_resume_equals_the_straight_run(at, fid_straight, tmp_path, monkeypatch, one_torch_thread):
    import evo_snn.state.runlog as runlog_mod
    from evo_snn.search.run import main

    out = tmp_path / "r"
    original = runlog_mod.RunLogger.on_evaluation

    def interrupt(self, ind, result):
        original(self, ind, result)
        if sum(r["gen"] == at[0] and r["rung"] == at[1] for r in self.rows) == at[2]:
            raise KeyboardInterrupt

    monkeypatch.setattr(runlog_mod.RunLogger, "on_evaluation", interrupt)
    assert main([*FID, "--generations", "2", "--out", str(out)]) == 130
    monkeypatch.undo()
    assert main(["--resume", str(out), "--no-progress"]) == 0
    cols = ["uid", "genome_key", "status", "seed", "gen", "rung", "fidelity", "accuracy", "sparsity", "train_loss", "train_samples"]
    table = lambda run: sorted(tuple(str(r.get(k)) for k in cols) for r in _evaluations(run))  # noqa: E731
    assert table(out) == table(fid_straight)
    front = ["uid", "accuracy", "sparsity", "genome_key"]
    pd.testing.assert_frame_equal(pd.read_csv(out / "pareto.csv")[front], pd.read_csv(fid_straight / "pareto.csv")[front])
    m = json.loads((out / "manifest.json").read_text())
    assert m["status"] == "completed" and m["resumes"][0]["reused_evaluations"] >= 1


def test_figures_leave_rung0_rows_out():
    from evo_snn.evaluation.fidelity import full_rows as full_fidelity  # what plots (and pareto) filter with

    df = pd.DataFrame({"gen": [0, 1, 1], "accuracy": [0.5, 1.5, 0.6], "sparsity": [0.1, 0.2, 0.3], "fidelity": [1.0, 0.25, 1.0]})
    assert list(full_fidelity(df)["accuracy"]) == [0.5, 0.6]
    plain = df.drop(columns="fidelity")
    assert full_fidelity(plain) is plain


def test_cli_crash_while_writing_a_checkpoint_then_resume_equals_the_straight_run(fid_straight, tmp_path, monkeypatch,
                                                                                     one_torch_thread):
    """The window after a generation's end (its rung-0 students already deleted) and before its
    checkpoint: resumed, the generation is replayed from evaluations.jsonl, rung-0 students or not."""
    import evo_snn.state.checkpoint as checkpoint_mod
    from evo_snn.search.run import main

    out = tmp_path / "r"
    original = checkpoint_mod.save_state_dict
    calls = []

    def crash_on_generation_2(path, state):
        if path.name == "torch_rng.pt":
            calls.append(path)
            if len(calls) == 3:
                raise RuntimeError("disk full")
        original(path, state)

    monkeypatch.setattr(checkpoint_mod, "save_state_dict", crash_on_generation_2)
    with pytest.raises(RuntimeError, match="disk full"):
        main([*FID, "--generations", "2", "--out", str(out)])
    monkeypatch.undo()
    assert main(["--resume", str(out), "--no-progress"]) == 0
    cols = ["uid", "genome_key", "status", "seed", "gen", "rung", "fidelity", "accuracy", "sparsity", "train_loss", "train_samples"]
    table = lambda run: sorted(tuple(str(r.get(k)) for k in cols) for r in _evaluations(run))  # noqa: E731
    assert table(out) == table(fid_straight)
    front = ["uid", "accuracy", "sparsity", "genome_key"]
    pd.testing.assert_frame_equal(pd.read_csv(out / "pareto.csv")[front], pd.read_csv(fid_straight / "pareto.csv")[front])
    m = json.loads((out / "manifest.json").read_text())
    assert m["resumes"][0]["reused_evaluations"] == sum(r["gen"] == 2 and r["status"] == "ok" for r in _evaluations(fid_straight))
