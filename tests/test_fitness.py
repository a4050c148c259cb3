"""GenomeFitness wiring, checked against values computed here by hand.

The data are hand-built ``FrameSet``s (24 training samples, 3 classes, T=4, 2x8x8) and
the teacher a tiny conv net trained for a few steps, so each test takes well under a
second. The validation split holds the *training frames with shifted labels*, so any
model's accuracy on it differs from its accuracy on the training split by construction.

With ``kd.epochs=1`` and ``kd.batch_size >= len(train)`` the student takes exactly one
optimiser step, and the reported ``train_loss`` is the loss of that step, evaluated at
the student's initial weights: it is recomputed below from the teachers' logits with
hand-written formulas (Eq. 4-7), independently of ``evo_snn.training.kd``.
"""

from __future__ import annotations

import copy
import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from spikingjelly.activation_based import functional

from evo_snn.config import load_config
from evo_snn.data import FrameSet
from evo_snn.evaluation.fitness import FitnessContext, GenomeFitness
from evo_snn.structure.genome import GenomeOps
from evo_snn.models import build_model
from evo_snn.structure.pruning import prunable_layers, sparse_copy, weight_magnitudes
from evo_snn.training.train import accuracy, ce_loss, train_steps

C, T, H, W = 3, 4, 8, 8
N_PER_CLASS = 8
ALPHA, TAU, DEFAULT_PROB = 0.6, 2.0, 0.9


def _frames(n_per_class: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Class c: background noise plus a bright band in rows 2c..2c+2 (ON polarity)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 2, (C * n_per_class, T, 2, H, W), generator=g).float()
    y = torch.arange(C).repeat_interleave(n_per_class)
    for i, c in enumerate(y.tolist()):
        x[i, :, 1, 2 * c:2 * c + 3, :] += 3.0
    return x, y


@pytest.fixture(scope="module")
def setup():
    torch.set_num_threads(1)
    x, y = _frames(N_PER_CLASS, seed=0)
    train = FrameSet(x, y)
    val = FrameSet(x.clone(), (y + 1) % C)  # same frames, other labels: acc(val) != acc(train)
    cfg = load_config("synthetic", overrides=[
        "model.channels=[4]", f"kd.alpha={ALPHA}", f"kd.temperature={TAU}", f"kd.default_prob={DEFAULT_PROB}",
        "kd.epochs=1", f"kd.batch_size={len(train)}", "kd.lr=0.01",
    ])
    frame_shape = (T, 2, H, W)
    torch.manual_seed(0)
    teacher = build_model(cfg.model, frame_shape, C)
    train_steps(teacher, train, epochs=6, batch_size=8, lr=0.02, loss_fn=ce_loss, seed=0)
    teacher.eval()
    torch.manual_seed(1)
    ann = build_model(cfg.model.ann_twin(), frame_shape, C).eval()  # untrained ReLU twin: other logits
    layers = tuple(prunable_layers(teacher))
    ctx = FitnessContext(cfg, train, val, frame_shape, C, {k: v.detach().clone() for k, v in teacher.state_dict().items()},
                         layers, {k: v.detach().clone() for k, v in ann.state_dict().items()})
    ops = GenomeOps(weight_magnitudes(teacher, layers), cfg.genome)
    genome = ops.magnitude([0.5] * len(layers))
    return ctx, teacher, ann, genome


def _with_kd(ctx, **kd):
    return replace(ctx, cfg=replace(ctx.cfg, kd=replace(ctx.cfg.kd, **kd)))


def _measuring_teacher(ctx):
    """``ctx`` with ``search.measure_teacher`` on (off by default since issue 26)."""
    return replace(ctx, cfg=replace(ctx.cfg, search=replace(ctx.cfg.search, measure_teacher=True)))


def _net(ctx, state):
    net = build_model(ctx.cfg.model, ctx.frame_shape, ctx.num_classes)
    net.load_state_dict(state)
    return net.eval()


def _logits(net, x_seq, train_mode=False):
    net = copy.deepcopy(net).train(train_mode)
    with torch.no_grad():
        z = net(x_seq)
    functional.reset_net(net)
    return z.double().numpy()


def _log_softmax(z):
    z = z - z.max(1, keepdims=True)
    return z - np.log(np.exp(z).sum(1, keepdims=True))


def _ce(z_s, y):
    return float(-_log_softmax(z_s)[np.arange(len(y)), y].mean())


def _kd(z_s, p_t, y):
    """alpha * tau^2 * KL(p_t || softmax(z_s / tau)), batch mean, + (1 - alpha) * CE."""
    kl = (p_t * (np.log(p_t) - _log_softmax(z_s / TAU))).sum(1).mean()
    return ALPHA * TAU**2 * kl + (1 - ALPHA) * _ce(z_s, y)


def _expected_first_loss(mode, ctx, teacher, ann, genome):
    x_seq = ctx.train.to_seq(ctx.train.frames, train=False)  # no augmentation in these sets: the same x_seq
    y = ctx.train.labels.numpy()
    sparse = sparse_copy(teacher, genome.mask_dict())
    z_s = _logits(sparse, x_seq, train_mode=True)  # the student starts as the sparse teacher, in train mode
    if mode == "none":
        return _ce(z_s, y)
    if mode == "default":  # Eq. 6: p = a on the label, (1-a)/(C-1) elsewhere
        p = np.full((len(y), C), (1 - DEFAULT_PROB) / (C - 1))
        p[np.arange(len(y)), y] = DEFAULT_PROB
        if getattr(ctx.cfg.kd, "default_form", "hinton") == "paper":
            # Eq. 7: alpha * KL(softmax(p / tau) || softmax(z_s)) + (1 - alpha) * CE, no tau^2
            q = np.exp(_log_softmax(p / TAU))
            return ALPHA * float((q * (np.log(q) - _log_softmax(z_s))).sum(1).mean()) + (1 - ALPHA) * _ce(z_s, y)
        q = p ** (1 / TAU)  # Hinton-style: softmax(log p / tau)
        return _kd(z_s, q / q.sum(1, keepdims=True), y)
    teaching = {"sparse": sparse, "self": teacher, "ann": ann}[mode]
    z_t = _logits(teaching, x_seq)
    return _kd(z_s, np.exp(_log_softmax(z_t / TAU)), y)


def test_the_teachers_disagree(setup):
    """Precondition of the loss tests: the sparse, dense and ANN teachers give different logits."""
    ctx, teacher, ann, genome = setup
    x_seq = ctx.train.to_seq(ctx.train.frames, train=False)
    z_dense, z_ann = _logits(teacher, x_seq), _logits(ann, x_seq)
    z_sparse = _logits(sparse_copy(teacher, genome.mask_dict()), x_seq)
    assert np.abs(z_sparse - z_dense).max() > 0.1
    assert np.abs(z_ann - z_dense).max() > 0.1 and np.abs(z_ann - z_sparse).max() > 0.1


@pytest.mark.parametrize("mode", ["sparse", "self", "ann", "default", "default-hinton", "none"])
def test_student_loss_follows_kd_mode(setup, mode):
    """Catches: kd=sparse taught by the dense teacher; kd.mode ignored (always CE); student_init ignored."""
    ctx, teacher, ann, genome = setup
    if mode == "default-hinton":
        if not hasattr(ctx.cfg.kd, "default_form"):
            pytest.skip("no kd.default_form")
        mode, ctx = "default", _with_kd(ctx, default_form="hinton")
    res = GenomeFitness(_with_kd(ctx, mode=mode), torch.device("cpu"))(genome, seed=5)
    expected = {m: _expected_first_loss(m, ctx, teacher, ann, genome) for m in ("sparse", "self", "ann", "default", "none")}
    # the five values are far apart, so matching one of them identifies the teaching network
    vals = sorted(expected.values())
    assert min(b - a for a, b in zip(vals, vals[1:])) > 1e-3
    assert res.metrics["train_loss"] == pytest.approx(expected[mode], rel=1e-4, abs=1e-6)
    assert res.metrics["kd_mode"] == mode


def test_student_init_scratch_is_not_the_teacher(setup):
    """Catches: kd.student_init ignored (a scratch student starting from the teacher)."""
    ctx, teacher, ann, genome = setup
    scratch = GenomeFitness(_with_kd(ctx, mode="none", student_init="scratch"), torch.device("cpu"))(genome, seed=5)
    from_teacher = _expected_first_loss("none", ctx, teacher, ann, genome)
    assert abs(scratch.metrics["train_loss"] - from_teacher) > 1e-2
    # after one step of lr 0.01 a scratch student's weights are far from the sparse teacher's
    sparse = sparse_copy(teacher, genome.mask_dict()).state_dict()
    diff = max((scratch.student_state[k] - sparse[k]).abs().max().item() for k in (f"{n}.weight" for n in ctx.layers))
    assert diff > 0.1


def test_one_adam_step_moves_every_kept_weight_by_lr(setup):
    """Catches: the optimiser never stepping (and kd.lr not reaching it).

    The first Adam step moves each weight with a nonzero gradient by lr * g / (|g| + eps),
    i.e. by lr; pruned weights stay exactly 0.
    """
    ctx, teacher, ann, genome = setup
    lr = 0.01
    res = GenomeFitness(_with_kd(ctx, mode="none", lr=lr), torch.device("cpu"))(genome, seed=5)
    sparse = sparse_copy(teacher, genome.mask_dict()).state_dict()
    for name, mask in genome.mask_dict().items():
        after, before = res.student_state[f"{name}.weight"].numpy(), sparse[f"{name}.weight"].numpy()
        assert (after[~mask] == 0).all()
        step = np.abs(after[mask] - before[mask])
        assert step.max() == pytest.approx(lr, rel=1e-3)
        assert np.mean(np.isclose(step, lr, rtol=1e-3)) > 0.5, name


def test_accuracies_are_validation_accuracies(setup):
    """Catches: fitness accuracy (student or sparse teacher) measured on the training split."""
    ctx, teacher, ann, genome = setup
    res = GenomeFitness(_measuring_teacher(_with_kd(ctx, mode="none")), torch.device("cpu"))(genome, seed=5)
    student = _net(ctx, res.student_state)
    sparse = sparse_copy(teacher, genome.mask_dict())
    acc_val, acc_train = accuracy(student, ctx.val), accuracy(student, ctx.train)
    assert abs(acc_val - acc_train) > 0.2  # by construction of the validation labels
    assert res.metrics["accuracy"] == acc_val
    assert res.metrics["teacher_accuracy"] == accuracy(sparse, ctx.val) != accuracy(sparse, ctx.train)
    assert res.metrics["sparsity"] == pytest.approx(genome.sparsity)


def test_ray_actor_evaluates_with_the_job_seed(setup, ray_evaluator):
    """Catches: a Ray actor evaluating with a wrong seed (or results returned under the wrong index).

    A scratch student trained in minibatches depends on the seed through its initial
    weights and the batch order: the Ray result for (genome, seed) must equal the serial
    one for the same pair, and differ from the serial one for another seed.
    """
    from evo_snn.evaluation.evaluator import SerialEvaluator, genome_fitness

    ctx, teacher, ann, genome = setup
    ctx = _with_kd(ctx, mode="sparse", student_init="scratch", batch_size=8)
    other = GenomeOps(weight_magnitudes(teacher, ctx.layers), ctx.cfg.genome).magnitude([0.3] * len(ctx.layers))
    jobs = [(genome, 11), (other, 12), (genome, 13)]
    serial = dict(SerialEvaluator().map(genome_fitness(ctx), jobs))
    remote = dict(ray_evaluator.map(genome_fitness(ctx), jobs))  # 2 actors: results arrive in any order

    def gap(a, b):
        return max((a.student_state[k].float() - b.student_state[k].float()).abs().max().item() for k in a.student_state)

    assert gap(serial[0], serial[2]) > 1e-2  # precondition: the seed matters
    assert sorted(remote) == [0, 1, 2]
    for i in range(3):
        assert not isinstance(remote[i], Exception), remote[i]
        assert gap(remote[i], serial[i]) < 1e-5, i
        assert remote[i].metrics["train_loss"] == pytest.approx(serial[i].metrics["train_loss"], rel=1e-5)
        assert remote[i].metrics["sparsity"] == serial[i].metrics["sparsity"]


def test_energy_is_counted_on_the_students_validation_pass(setup):
    """Catches: energy counted on another net (the sparse or dense teacher), with the wrong
    constants, or not per sample; accuracy changed by the counting hooks."""
    from evo_snn.evaluation.energy import count_energy
    from evo_snn.training.train import loader

    ctx, teacher, ann, genome = setup
    ctx = replace(_with_kd(ctx, mode="none"), cfg=replace(ctx.cfg, energy=replace(ctx.cfg.energy, e_ac_pj=2.0, e_mac_pj=7.0)))
    res = GenomeFitness(ctx, torch.device("cpu"))(genome, seed=5)
    m = res.metrics
    student = _net(ctx, res.student_state)
    batches = [ctx.val.to_seq(x, train=False) for x, _ in loader(ctx.val, 64, shuffle=False)]
    rep = count_energy(student, batches)
    dense = count_energy(teacher, batches)
    assert m["accuracy"] == accuracy(student, ctx.val)
    assert (m["effective_acs"], m["effective_macs"], m["synops"]) == (rep.effective_acs, rep.effective_macs, rep.synops)
    assert m["energy_pj"] == pytest.approx(2.0 * m["effective_acs"] + 7.0 * m["effective_macs"])
    assert m["spikes"] == rep.spikes and m["layer_firing_rate"] == {k: v.firing_rate for k, v in rep.neurons.items()}
    # half of every layer pruned: the student's dense SynOps are the teacher's, its effective MACs about half
    assert m["synops"] == dense.synops and m["layer_synops"] == {k: v.synops for k, v in dense.layers.items()}
    first = ctx.layers[0]
    assert 0.3 < m["layer_effective_ops"][first] / dense.layers[first].effective_ops < 0.7
    assert 0 < m["energy_fraction"] < 1


@pytest.mark.parametrize("student_init", ["teacher", "scratch"])
def test_folded_masks_train_bit_for_bit_like_prune_reparametrisation(setup, student_init):
    """Catches: a fold_masks that lets pruned weights move (no gradient hook), or one whose
    kept weights drift from torch.nn.utils.prune's ``weight_orig * weight_mask`` training.

    Three Adam steps (batch 8) from the same start, once with prune.custom_from_mask +
    make_permanent (the fitness's former path) and once with fold_masks: every tensor of
    the state equal bit for bit, pruned weights exactly 0."""
    from evo_snn.training.kd import student_loss
    from evo_snn.structure.pruning import apply_masks, fold_masks, make_permanent

    ctx, teacher, _ann, genome = setup
    masks = genome.mask_dict()
    sparse = sparse_copy(teacher, masks)
    states = []
    for attach in ("prune", "fold"):
        torch.manual_seed(3)
        student = (copy.deepcopy(sparse) if student_init == "teacher" else build_model(ctx.cfg.model, ctx.frame_shape, C)).requires_grad_(True)
        hooks = apply_masks(student, masks) if attach == "prune" else fold_masks(student, masks)
        loss_fn = student_loss(ctx.cfg.kd, C, sparse)
        train_steps(student, ctx.train, epochs=1, batch_size=8, lr=0.01, loss_fn=loss_fn, seed=4)
        make_permanent(student) if attach == "prune" else hooks.remove()
        states.append(student.state_dict())
    prune_state, fold_state = states
    assert prune_state.keys() == fold_state.keys()
    for k in prune_state:
        assert torch.equal(prune_state[k], fold_state[k]), k
    moved = 0
    for name, mask in masks.items():
        w = fold_state[f"{name}.weight"].numpy()
        assert (w[~mask] == 0).all(), name
        moved += int((w[mask] != sparse.state_dict()[f"{name}.weight"].numpy()[mask]).sum())
    assert moved > 0  # the steps did train
