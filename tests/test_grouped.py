"""K students in one grouped network (search.students_per_batch, evo_snn.evaluation.grouped).

The decisive test trains K = 3 students with different masks as one group and each of
them alone, on the same batches (same seed), in float64, and compares every tensor of
every student's state after several Adam steps: equal up to float64 rounding, while the
steps moved the weights by orders of magnitude more. A group whose loss is the mean (not
the sum) of the students' losses, whose BatchNorm mixed students, or whose masks leaked
would fail it.
"""

from __future__ import annotations

import copy
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn as nn

from evo_snn.config import GenomeConfig, SearchConfig, load_config
from evo_snn.data import FrameSet
from evo_snn.evaluation.fitness import FitnessContext, FitnessResult, GenomeFitness
from evo_snn.structure.genome import GenomeOps
from evo_snn.evaluation.grouped import (
    GroupedJobs,
    group,
    group_masks,
    last_epoch_steps,
    member_losses,
)
from evo_snn.training.kd import student_loss
from evo_snn.models import build_model
from evo_snn.search.nsga import StructureSearch
from evo_snn.structure.pruning import fold_masks, prunable_layers, sparse_copy, weight_magnitudes
from evo_snn.training.train import train_steps

C, T, H, W = 3, 4, 8, 8


def _data(n_per_class=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 3, (C * n_per_class, T, 2, H, W), generator=g).float()
    y = torch.arange(C).repeat_interleave(n_per_class)
    for i, c in enumerate(y.tolist()):
        x[i, :, 1, 2 * c:2 * c + 3, :] += 2.0
    return FrameSet(x, y)


def _cfg(*extra):
    return load_config("synthetic", overrides=["model.channels=[4,6]", "model.hidden=10", "kd.alpha=0.7",
                                               "kd.temperature=2.0", *extra])


class AsDouble(nn.Module):
    """Runs ``net`` in float64 on float32 batches (the FrameSet's ``x_seq``)."""

    def __init__(self, net):
        super().__init__()
        self.net = net.double()

    def forward(self, x_seq):
        return self.net(x_seq.double())


def _genomes(teacher, cfg, ratios=(0.2, 0.5, 0.8)):
    layers = tuple(prunable_layers(teacher))
    ops = GenomeOps(weight_magnitudes(teacher, layers), cfg.genome)
    return layers, [ops.magnitude([r] * len(layers)) for r in ratios]


@pytest.fixture(scope="module")
def setup(one_torch_thread):
    cfg = _cfg()
    torch.manual_seed(0)
    teacher = build_model(cfg.model, (T, 2, H, W), C).eval()
    return cfg, teacher, _data()


@pytest.mark.parametrize("model", ["conv_snn", "resnet18_tiny"])
def test_k3_group_update_equals_three_solo_runs(setup, model):
    """Each student's state after 6 Adam steps (batch 8, KD from its own sparse teacher) in
    a group of 3 equals its solo run's on the same batches, to float64 rounding: conv -
    BN - IF - maxpool blocks, a spiking hidden FC and a linear readout (conv_snn), and
    residual blocks with 1x1 downsampling, adaptive average pooling (resnet18_tiny)."""
    cfg, teacher, train = setup
    if model == "resnet18_tiny":
        cfg = _cfg("model.name=resnet18_tiny", "model.width=0.5")
        torch.manual_seed(0)
        teacher = build_model(cfg.model, (T, 2, H, W), C).eval()
    layers, genomes = _genomes(teacher, cfg)
    seed = 11
    steps_kw = {"epochs": 2, "batch_size": 8, "lr": 0.01, "seed": seed}
    teachers = [sparse_copy(teacher, g.mask_dict()).double() for g in genomes]
    solo_states = []
    for g, t in zip(genomes, teachers):
        student = copy.deepcopy(t).requires_grad_(True)
        hooks = fold_masks(student, g.mask_dict())
        train_steps(AsDouble(student), train, loss_fn=student_loss(cfg.kd, C, AsDouble(t)), **steps_kw)
        hooks.remove()
        solo_states.append({k: v.detach().clone() for k, v in student.state_dict().items()})

    net = group([copy.deepcopy(t).requires_grad_(True) for t in teachers])
    handles = group_masks(net, [g.mask_dict() for g in genomes])
    teach = group(teachers).requires_grad_(False).eval()
    from spikingjelly.activation_based import functional

    def loss_fn(z_s, y, x_seq):
        with torch.no_grad():
            z_t = teach(x_seq.double())
            functional.reset_net(teach)
        return member_losses(cfg.kd, z_s, z_t, y).sum()

    train_steps(AsDouble(net), train, loss_fn=loss_fn, **steps_kw)
    for h in handles:
        h.remove()
    start = teachers[0].state_dict()
    for k, (g, solo) in enumerate(zip(genomes, solo_states)):
        member = net.member_state(k)
        assert member.keys() == solo.keys()
        for key in solo:
            assert torch.allclose(member[key], solo[key], rtol=0, atol=1e-11), (k, key, (member[key] - solo[key]).abs().max())
        for name, mask in g.mask_dict().items():
            assert (member[f"{name}.weight"].numpy()[~mask] == 0).all()
    moved = max((solo_states[0][f"{n}.weight"] - start[f"{n}.weight"]).abs().max().item() for n in layers)
    assert moved > 1e-3  # the steps trained: the tolerance is 8 orders of magnitude below the change
    # BN running statistics were updated per student (they differ between students)
    bn = next(key for key in solo_states[0] if key.endswith("running_mean"))
    assert not torch.allclose(solo_states[0][bn], solo_states[2][bn])


def test_member_losses_are_each_students_own_loss(setup):
    cfg, _, _ = setup
    g = torch.Generator().manual_seed(0)
    z_s, z_t, y = torch.randn(5, 3, C, generator=g), torch.randn(5, 3, C, generator=g), torch.tensor([0, 1, 2, 1, 0])
    from evo_snn.training.kd import KDLoss

    kd = KDLoss(cfg.kd.alpha, cfg.kd.temperature)
    expected = torch.stack([kd(z_s[:, k], z_t[:, k], y) for k in range(3)])
    assert torch.allclose(member_losses(cfg.kd, z_s, z_t, y), expected)
    ce = member_losses(replace(cfg.kd, mode="none"), z_s, None, y)
    assert torch.allclose(ce[1], torch.nn.functional.cross_entropy(z_s[:, 1], y))


def test_group_refuses_a_layer_the_students_would_share():
    cfg = load_config("synthetic", overrides=["model.channels=[4]", "model.neuron=plif"])
    nets = [build_model(cfg.model, (T, 2, H, W), C) for _ in range(2)]
    with pytest.raises(ValueError, match="ParametricLIFNode"):
        group(nets)


def test_last_epoch_steps():
    assert [last_epoch_steps(s, 4) for s in (1, 3, 4, 5, 8, 9)] == [1, 3, 4, 1, 4, 1]


@pytest.fixture(scope="module")
def fitness_ctx(one_torch_thread):
    cfg = _cfg("kd.epochs=1", "kd.batch_size=12", "kd.lr=0.01")
    torch.manual_seed(0)
    teacher = build_model(cfg.model, (T, 2, H, W), C).eval()
    train, val = _data(seed=0), _data(n_per_class=4, seed=1)
    layers = tuple(prunable_layers(teacher))
    ctx = FitnessContext(cfg, train, val, (T, 2, H, W), C, {k: v.clone() for k, v in teacher.state_dict().items()}, layers)
    return ctx, teacher


def test_genome_fitness_group_matches_solo_calls_at_the_group_seed(fitness_ctx):
    """GenomeFitness.group: per-member results as the solo call with the group's seed (the
    first member's), float32 grouped vs solo kernels; a genome that does not fit fails alone."""
    ctx, teacher = fitness_ctx
    fit = GenomeFitness(ctx, torch.device("cpu"))
    _, genomes = _genomes(teacher, ctx.cfg)
    bad = replace(genomes[1], layers=("no_such_layer",) + genomes[1].layers[1:])  # does not fit the model
    jobs = [(genomes[0], 21), (bad, 22), (genomes[2], 23)]
    out = fit.group(jobs)
    assert isinstance(out[1], Exception)
    for i in (0, 2):
        solo = fit(genomes[i], 21)
        res = out[i]
        assert isinstance(res, FitnessResult)
        assert res.metrics["group_size"] == 3 and res.metrics["group_seed"] == 21
        assert res.metrics["sparsity"] == solo.metrics["sparsity"]
        assert res.metrics["teacher_accuracy"] == solo.metrics["teacher_accuracy"]
        assert res.metrics["train_loss"] == pytest.approx(solo.metrics["train_loss"], rel=1e-4)
        assert abs(res.metrics["accuracy"] - solo.metrics["accuracy"]) <= 1 / len(ctx.val)
        for key, v in solo.student_state.items():
            assert torch.allclose(res.student_state[key], v, atol=1e-4), key
        assert res.metrics["synops"] == pytest.approx(solo.metrics["synops"], rel=1e-3)


class RecordingFitness:
    """A plain callable (no ``group``): GroupedJobs applies it to each member."""

    def __init__(self):
        self.calls = []

    def __call__(self, g, seed):
        self.calls.append(seed)
        return FitnessResult({"accuracy": 1 - g.sparsity ** 2 - 0.01 * (seed % 7), "sparsity": g.sparsity}, {})


class GroupFitness(RecordingFitness):
    def __init__(self):
        super().__init__()
        self.groups = []

    def group(self, jobs):
        self.groups.append([seed for _, seed in jobs])
        return [self(*job) for job in jobs]


def _ops():
    rng = np.random.default_rng(0)
    return GenomeOps({"a": np.abs(rng.normal(size=(8, 4))), "b": np.abs(rng.normal(size=(20,)))},
                     GenomeConfig(ratio_mutation_prob=0.5, mask_mutation_prob=0.5))


@pytest.mark.parametrize("fitness_cls", [RecordingFitness, GroupFitness])
def test_search_in_groups_of_k_gives_each_genome_its_own_result(fitness_cls):
    """students_per_batch=3 with population 8: jobs go in groups of 3, 3, 2 in order, and
    the search's evaluations and front equal the ungrouped search's (a fitness that depends
    only on (genome, seed) gives the same results whichever way the jobs travel)."""
    runs = {}
    for k in (1, 3):
        fit = fitness_cls()
        search = StructureSearch(_ops(), fit, SearchConfig(population=8, generations=2, seed=4, students_per_batch=k),
                                 GenomeConfig(), progress=False)
        archive = search.run()
        runs[k] = (fit, sorted((ind.genome.key, ind.fitness.values) for ind in archive))
    assert runs[1][1] == runs[3][1]
    assert runs[1][0].calls == runs[3][0].calls
    if fitness_cls is GroupFitness:
        sizes = [len(g) for g in runs[3][0].groups]
        assert sizes[:3] == [3, 3, 2] and max(sizes) == 3
        assert [s for g in runs[3][0].groups for s in g] == runs[3][0].calls


def test_grouped_jobs_reports_member_failures_per_member():
    def fn(g, seed):
        if seed == 2:
            raise RuntimeError("boom")
        return seed

    out = GroupedJobs(fn)(((None, 1), (None, 2), (None, 3)), 1)
    assert out[0] == 1 and isinstance(out[1], RuntimeError) and out[2] == 3


def test_students_per_batch_is_checked():
    from evo_snn.config import ConfigError

    assert load_config("synthetic", overrides=["search.students_per_batch=4"]).search.students_per_batch == 4
    with pytest.raises(ConfigError, match="students_per_batch"):
        load_config("synthetic", overrides=["search.students_per_batch=0"])
