"""Wiring of the search: crossover, NSGA-II survival, export roles, test accuracy of exports.

Each test is built so that a specific broken stage gives a different value (issue 7,
"tests that would catch a broken stage"). The search runs with a cheap fitness function (no
training) known in closed form; only the last test runs the CLI, on a
tiny synthetic search (about 2 s).
"""

from __future__ import annotations

import json
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from evo_snn.config import GenomeConfig, SearchConfig
from evo_snn.evaluation.evaluator import SerialEvaluator
from evo_snn.deploy.export import choose_exports
from evo_snn.evaluation.fitness import FitnessResult
from evo_snn.structure.genome import Genome, GenomeOps
from evo_snn.search.nsga import StructureSearch


# ----------------------------------------------------------------- fakes
def trade_off(g: Genome, _seed: int) -> FitnessResult:
    """accuracy = 1 - sparsity: every genome lies on one front, no training."""
    s = g.sparsity
    return FitnessResult({"accuracy": 1.0 - s, "sparsity": s, "teacher_accuracy": 1.0 - s}, {})


class TradeOffEvaluator(SerialEvaluator):
    """The serial evaluator (``map(fn, jobs)``, DEAP's toolbox.map); records the genomes of each call."""

    def __init__(self):
        self.calls: list[list[Genome]] = []

    def map(self, fn, jobs):
        jobs = list(jobs)
        self.calls.append([g for g, _ in jobs])
        yield from super().map(fn, jobs)


def _ops(n_layers: int = 3, cfg: GenomeConfig | None = None) -> GenomeOps:
    rng = np.random.default_rng(0)
    abs_w = {f"l{i}": np.abs(rng.normal(size=(6, 5))) for i in range(n_layers)}
    return GenomeOps(abs_w, cfg or GenomeConfig())


def _search(ops, ev, population, generations, genome_cfg, seed=0):
    return StructureSearch(ops, trade_off, SearchConfig(population=population, generations=generations, seed=seed), genome_cfg,
                           evaluator=ev, progress=False)


# ------------------------------------------------------------- crossover
def test_crossover_swaps_whole_layers_about_half_the_time():
    """Catches: a crossover that never swaps (or always swaps, or mixes within a layer)."""
    ops = _ops(n_layers=40)
    a = ops.magnitude([0.2] * 40)
    b = ops.magnitude([0.6] * 40)
    ca, cb = ops.crossover(a, b, np.random.default_rng(3))
    from_b = []
    for i in range(40):
        if ca.ratios[i] == 0.6:  # child a took layer i from b, so child b took it from a
            from_b.append(i)
            assert np.array_equal(ca.masks[i], b.masks[i]) and np.array_equal(cb.masks[i], a.masks[i])
            assert cb.ratios[i] == 0.2
        else:
            assert ca.ratios[i] == 0.2 and cb.ratios[i] == 0.6
            assert np.array_equal(ca.masks[i], a.masks[i]) and np.array_equal(cb.masks[i], b.masks[i])
    assert 8 <= len(from_b) <= 32  # Binomial(40, 0.5): outside this range with p < 1e-4
    # the parents are untouched
    assert a.ratios == (0.2,) * 40 and b.ratios == (0.6,) * 40


def test_search_children_are_layerwise_recombinations_of_their_parents():
    """Catches: a crossover that never swaps, or a search that never calls it."""
    gcfg = GenomeConfig(crossover_prob=1.0, ratio_mutation_prob=0.0, mask_mutation_prob=0.0, init_swap_fraction=0.0)
    ops = _ops(n_layers=6, cfg=gcfg)
    ev = TradeOffEvaluator()
    _search(ops, ev, population=8, generations=1, genome_cfg=gcfg).run()
    parents, children = ev.calls[0], [g for call in ev.calls[1:] for g in call]
    parent_keys = {g.key for g in parents}
    recombined = 0
    for child in children:
        # without mutation, every layer of a child is some parent's layer
        for i in range(len(child.layers)):
            assert any(np.array_equal(child.masks[i], p.masks[i]) for p in parents)
        if child.key not in parent_keys:
            recombined += 1
    assert recombined >= 2  # layers of two parents mixed; a no-op crossover evaluates nothing new


# -------------------------------------------------------------- survival
def test_survival_keeps_both_extremes_of_the_front():
    """Catches: survival by accuracy alone (``tools.selBest``) instead of NSGA-II ranking.

    All genomes lie on one front (accuracy = 1 - sparsity); NSGA-II keeps its two
    boundary members (infinite crowding distance), while ranking by accuracy drops
    the sparsest member.
    """
    gcfg = GenomeConfig(ratio_min=0.0, ratio_max=0.95, ratio_mutation_prob=1.0, ratio_mutation_sigma=0.3,
                        mask_mutation_prob=0.0)
    ev = TradeOffEvaluator()
    search = _search(_ops(cfg=gcfg), ev, population=8, generations=1, genome_cfg=gcfg, seed=4)
    search.run()
    evaluated = [g for call in ev.calls for g in call]
    assert len(evaluated) > 8
    sparsest, densest = max(g.sparsity for g in evaluated), min(g.sparsity for g in evaluated)
    survivors = sorted(ind.genome.sparsity for ind in search.population)
    assert len(survivors) == 8
    assert survivors[-1] == sparsest  # the most sparse (least accurate) member survives
    assert survivors[0] == densest  # and the most accurate one
    # accuracy ranking would keep the 8 densest genomes
    assert survivors != sorted(g.sparsity for g in evaluated)[:8]


# --------------------------------------------------------------- exports
def _front(points):
    return [SimpleNamespace(uid=f"u{i}", fitness=SimpleNamespace(values=tuple(p))) for i, p in enumerate(points)]


def test_export_roles_best_accuracy_and_knee_are_different_members():
    """Catches: the knee role given to the best-accuracy member."""
    # a convex front with a clear bend at u2 (normalised: u0 = (1, 0), u4 = (0, 1), u2 = (0.93, 0.75))
    front = _front([(0.95, 0.1), (0.94, 0.5), (0.90, 0.7), (0.6, 0.8), (0.2, 0.9)])
    assert choose_exports(front) == {"u0": ["best_accuracy"], "u2": ["knee"]}
    # the order of the front does not matter
    roles = choose_exports(front[::-1])
    assert roles == {"u0": ["best_accuracy"], "u2": ["knee"]}


def test_export_roles_best_accuracy_breaks_ties_by_sparsity():
    front = _front([(0.9, 0.2), (0.9, 0.6), (0.5, 0.7), (0.1, 0.95)])
    assert choose_exports(front)["u1"][0] == "best_accuracy"


# ----------------------------------------------------- end to end: test split
def test_exported_test_accuracy_is_measured_on_the_test_split(tmp_path, monkeypatch):
    """Catches: the exported members' (and the teacher's) "test accuracy" measured on the validation split.

    The CLI's data loader is wrapped so that the test split holds the *validation frames
    with rotated labels*: a model that learnt anything scores differently on the two.
    """
    import evo_snn.search.run as search_cli
    import evo_snn.search.setup as search_setup  # where the run's data stage looks load_splits up
    from evo_snn.data import FrameSet
    from evo_snn.models import build_model
    from evo_snn.training.train import accuracy

    real = search_setup.load_splits
    seen = {}

    def load_splits(*args, **kwargs):
        sp = real(*args, **kwargs)
        test = FrameSet(sp.val.frames.clone(), (sp.val.labels + 1) % sp.num_classes)
        seen["splits"] = sp = replace(sp, test=test)
        return sp

    monkeypatch.setattr(search_setup, "load_splits", load_splits)
    tiny = {"data.synthetic_classes": 3, "data.synthetic_train_per_class": 16, "data.synthetic_test_per_class": 2,
            "data.synthetic_size": 8, "data.frames": 4, "data.val_fraction": 0.25, "model.channels": "[4]",
            "teacher.epochs": 10, "teacher.lr": 0.01, "teacher.batch_size": 8, "kd.epochs": 1}
    sets = [a for k, v in tiny.items() for a in ("--set", f"{k}={v}")]
    out = tmp_path / "run"
    torch_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        rc = search_cli.main(["--dataset", "synthetic", "--population", "4", "--generations", "0", "--seed", "0",
                              "--out", str(out), "--no-progress", *sets])
    finally:
        torch.set_num_threads(torch_threads)
    assert rc == 0
    sp = seen["splits"]
    from evo_snn.config import Config

    cfg_model = Config.from_dict(json.loads((out / "config.json").read_text())).model

    def load(path):
        net = build_model(cfg_model, sp.frame_shape, sp.num_classes)
        net.load_state_dict(torch.load(path, weights_only=True))
        return net.eval()

    teacher = load(out / "teacher" / "teacher.pt")
    tm = json.loads((out / "teacher" / "metrics.json").read_text())
    assert accuracy(teacher, sp.val) > 0.9  # precondition: the teacher learnt, so val and test differ
    assert tm["test_accuracy"] == pytest.approx(accuracy(teacher, sp.test)) != pytest.approx(accuracy(teacher, sp.val))
    members = sorted((out / "exported").iterdir())
    assert members
    differs = 0
    for d in members:
        m = json.loads((d / "metrics.json").read_text())
        student, sparse_teacher = load(d / "student.pt"), load(d / "teacher.pt")
        acc_test, acc_val = accuracy(student, sp.test), accuracy(student, sp.val)
        assert m["test_accuracy"] == pytest.approx(acc_test)
        assert m["accuracy"] == pytest.approx(acc_val)  # the fitness objective: validation
        assert m["teacher_test_accuracy"] == pytest.approx(accuracy(sparse_teacher, sp.test))
        differs += acc_test != pytest.approx(acc_val)
    assert differs >= 1  # precondition: the check above can tell the two splits apart
