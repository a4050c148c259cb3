"""Issue 26's evaluation hot path, checked on the CPU against the code it replaces: the
optimizer (foreach Adam) and the masks kept by one ``torch._foreach_mul_`` (item 3),
batches prepared where the frames are (item 2), the grouped students' vectorised losses
and shared first convolution (item 5), the opt-in compiled students (item 4)."""

from __future__ import annotations

import copy

import pytest
import torch

from evo_snn.config import load_config
from evo_snn.data import FrameSet
from evo_snn.models import build_model
from evo_snn.structure.genome import GenomeOps
from evo_snn.structure.pruning import fold_masks, prunable_layers, sparse_copy, weight_magnitudes
from evo_snn.training.kd import student_loss
from evo_snn.training.train import adam, ce_loss, train_steps

C, T, H, W = 3, 4, 8, 8


def bits(t: torch.Tensor) -> torch.Tensor:
    """The tensor's bit pattern (so that -0.0 and 0.0, or two NaNs, are told apart)."""
    if t.is_floating_point():
        return t.contiguous().view({8: torch.int64, 4: torch.int32, 2: torch.int16}[t.element_size()])
    return t


def same_bits(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(bits(a[k]), bits(b[k])) for k in a)


@pytest.fixture(scope="module")
def setup(one_torch_thread):
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 3, (C * 8, T, 2, H, W), generator=g).to(torch.uint8)
    y = torch.arange(C).repeat_interleave(8)
    cfg = load_config("synthetic", overrides=["model.channels=[4,6]", "model.hidden=10", "kd.alpha=0.7", "kd.temperature=2.0"])
    torch.manual_seed(0)
    teacher = build_model(cfg.model, (T, 2, H, W), C).eval()
    layers = tuple(prunable_layers(teacher))
    genome = GenomeOps(weight_magnitudes(teacher, layers), cfg.genome).magnitude([0.5] * len(layers))
    return cfg, teacher, FrameSet(x, y), genome


# ---------------------------------------------------------------------- item 3: optimizer and masks
@pytest.mark.parametrize("weight_decay", [0.0, 1e-3])
def test_foreach_adam_and_one_call_masks_give_todays_weights_bit_for_bit(setup, weight_decay):
    """Catches: a foreach Adam whose arithmetic differs from the per-parameter loop (torch's
    CPU default, the path before issue 26), or one-call masks that multiply other gradients
    than the per-weight hooks did. Every tensor of the student's state and of Adam's state
    after 2 epochs (6 steps, KD from the sparse teacher) equal bit for bit, pruned weights 0."""
    cfg, teacher, train, genome = setup
    masks = genome.mask_dict()
    sparse = sparse_copy(teacher, masks)
    states, opts = [], []
    for old in (True, False):
        student = copy.deepcopy(sparse).requires_grad_(True)
        hooks = fold_masks(student, masks, per_weight=old)
        assert bool(hooks.handles) == old and bool(hooks.params) != old
        seen = []
        orig = torch.optim.Adam.step

        def spy(self, *a, **k):
            seen.append(self)
            return orig(self, *a, **k)

        torch.optim.Adam.step = spy
        try:
            train_steps(student, train, epochs=2, batch_size=8, lr=0.01, weight_decay=weight_decay,
                        loss_fn=student_loss(cfg.kd, C, sparse), seed=4, grad_masks=None if old else hooks,
                        adam_impl="single" if old else None)
        finally:
            torch.optim.Adam.step = orig
        hooks.remove()
        assert seen[0].defaults["foreach"] is (False if old else True)
        states.append({k: v.detach().clone() for k, v in student.state_dict().items()})
        opts.append({f"{i}.{k}": v for i, st in enumerate(seen[0].state.values()) for k, v in st.items()})
    assert same_bits(*states)
    assert same_bits(*opts)
    for name, mask in masks.items():
        w = states[1][f"{name}.weight"]
        assert (w[torch.from_numpy(~mask)] == 0).all()
        assert not torch.equal(w, sparse.state_dict()[f"{name}.weight"])  # it trained


def test_adam_impl_choice():
    p = [torch.nn.Parameter(torch.zeros(2))]
    assert adam(p, lr=0.1, weight_decay=0.0, device="cpu").defaults["foreach"] is True
    assert adam(p, lr=0.1, weight_decay=0.0, device="cpu", impl="single").defaults["foreach"] is False
    with pytest.raises(ValueError, match="unknown Adam implementation"):
        adam(p, lr=0.1, weight_decay=0.0, device="cpu", impl="sgd")


def test_mask_grads_without_pairs_or_gradients_is_a_no_op(setup):
    cfg, teacher, train, genome = setup
    net = copy.deepcopy(teacher).requires_grad_(True)
    hooks = fold_masks(net, genome.mask_dict(), per_weight=False)
    hooks.mask_grads()  # no .grad yet
    assert all(p.grad is None for p in net.parameters())
    hooks.remove()
    hooks.mask_grads()
    assert list(hooks) == []
    train_steps(net, train, epochs=0.5, batch_size=8, lr=0.01, loss_fn=ce_loss, seed=0)  # no masks passed: trains


# ---------------------------------------------------------------------- item 2: batches where the frames are
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _sets():
    """An event set (translation, flip, event drop) and a direct-encoded image set (crop,
    flip, normalisation, T = 3), uint8, as a memory-map-like numpy-backed view."""
    import numpy as np

    from evo_snn.data.augment import SeqTransform

    g = np.random.default_rng(0)
    ev = g.integers(0, 4, (20, T, 2, H, W), dtype=np.uint8)
    im = g.integers(0, 256, (20, 3, H, W), dtype=np.uint8)
    y = np.arange(20) % C
    return {
        "events": FrameSet.from_array(ev, y, SeqTransform("events", translate_px=2, hflip=True, event_drop=0.3)),
        "direct": FrameSet.from_array(im, y, SeqTransform("direct", steps=3, translate_px=2, hflip=True,
                                                           mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.3))),
    }


def _todays_batches(fs, seed, steps, device="cpu"):
    """The batches of train_steps before issue 26: prepared on the host, then sent."""
    from evo_snn.training.train import loader, to_device

    dl, g, out = loader(fs, 8, shuffle=True, seed=seed), torch.Generator().manual_seed(seed + 1), []
    while len(out) < steps:
        for x, y in dl:
            out.append((to_device(fs.to_seq(x, train=True, generator=g), device), y))
            if len(out) == steps:
                break
    return out


def _fed_batches(fs, seed, steps):
    """What train_steps feeds the loss today (x_seq, y), captured."""
    seen = []
    net = torch.nn.Sequential(torch.nn.Flatten(0, 1), torch.nn.Flatten(), torch.nn.LazyLinear(C))

    def loss_fn(z, y, x_seq):
        seen.append((x_seq.detach().clone(), y.clone()))
        return z.sum() * 0

    net(fs.to_seq(fs[[0]][0]))  # materialise the lazy layer
    train_steps(net, fs, epochs=steps / -(-len(fs) // 8), batch_size=8, lr=0.1, loss_fn=loss_fn, seed=seed)
    return seen


@pytest.mark.parametrize("kind", ["events", "direct"])
def test_training_batches_are_todays_bit_for_bit(kind):
    """Catches: batch preparation moved to the device that changes a value or the order of
    the random draws (translation, flip, event drop, normalisation, repeat over T)."""
    fs = _sets()[kind]
    fed, today = _fed_batches(fs, 5, 6), _todays_batches(fs, 5, 6)
    assert len(fed) == len(today) == 6
    for (a, ya), (b, yb) in zip(fed, today):
        assert torch.equal(bits(a), bits(b)) and torch.equal(ya, yb)
    assert fs.to("cpu") is fs  # on the CPU the frames stay where they are (a memory map stays one)


@CUDA
@pytest.mark.parametrize("kind", ["events", "direct"])
def test_batches_of_a_gpu_resident_set_are_the_hosts(kind):
    """On a GPU: the frames held there (uint8), batches gathered, converted and augmented
    there with the CPU generator's draws, equal the host-prepared batches bit for bit."""
    from evo_snn.training.train import loader

    fs = _sets()[kind]
    dev = fs.to("cuda")
    assert dev.frames.device.type == "cuda" and dev.frames.dtype == torch.uint8 and dev.labels.device.type == "cpu"
    today = _todays_batches(fs, 5, 4, "cuda")
    dl, g = loader(dev, 8, shuffle=True, seed=5), torch.Generator().manual_seed(6)
    for (x, _), (ref, _) in zip(dl, today):
        assert torch.equal(bits(dev.to_seq(x, train=True, generator=g)), bits(ref))
    assert fs.to("cuda", max_bytes=1) is fs  # too large: stays on the host


# ---------------------------------------------------------------------- item 5: grouped students
@pytest.mark.parametrize("mode", ["sparse", "default", "none"])
@pytest.mark.parametrize("form", ["paper", "hinton"])
def test_vectorised_member_losses_are_the_solo_losses_bit_for_bit(mode, form):
    """Catches: a batched reduction whose order differs from the solo loss's (KL summed over
    another layout, a batch mean that is not nll_loss's), or a coefficient multiplied in
    another order: then a group's member would not train exactly as its solo run."""
    from types import SimpleNamespace

    from evo_snn.evaluation.grouped import member_losses, solo_member_losses

    g = torch.Generator().manual_seed(1)
    for n in (8, 17, 64):
        for alpha, tau in ((0.7, 3.0), (0.3, 1.7), (0.9, 4.0)):
            cfg = SimpleNamespace(mode=mode, alpha=alpha, temperature=tau, default_prob=0.9, default_form=form)
            z_s, z_t = torch.randn(n, 4, 10, generator=g), torch.randn(n, 4, 10, generator=g)
            y = torch.randint(0, 10, (n,), generator=g)
            assert torch.equal(bits(member_losses(cfg, z_s, z_t, y)), bits(solo_member_losses(cfg, z_s, z_t, y)))


@pytest.mark.parametrize("model", ["conv_snn", "resnet18_tiny"])
def test_grouped_input_conv_takes_the_batch_once(model, monkeypatch):
    """The grouped net's input convolution is fed the batch once (no K-fold copy): its
    logits equal those of the grouped net that repeats the input K times, to float64
    rounding, and each member's solo logits."""
    import evo_snn.evaluation.grouped as grouped
    from spikingjelly.activation_based import functional

    cfg = load_config("synthetic", overrides=["model.channels=[4,6]", "model.hidden=10", f"model.name={model}",
                                              "model.width=0.5"])
    nets = []
    for s in range(3):
        torch.manual_seed(s)
        nets.append(build_model(cfg.model, (T, 2, H, W), C).double().eval())
    x = torch.rand(T, 5, 2, H, W, dtype=torch.float64) * 3
    shared = grouped.group(nets).eval()
    first = shared.net.get_submodule(shared.shared_input)
    assert first.in_channels == 2 and first.out_channels == 3 * nets[0].get_submodule(shared.shared_input).out_channels
    monkeypatch.setattr(grouped, "_input_conv", lambda m: None)
    repeated = grouped.group(nets).eval()
    assert repeated.shared_input is None
    with torch.no_grad():
        a, b = shared(x), repeated(x)
        functional.reset_net(shared), functional.reset_net(repeated)
        solo = torch.stack([n(x) for n in nets], 1)
        for n in nets:
            functional.reset_net(n)
    assert torch.allclose(a, b, rtol=0, atol=1e-12) and torch.allclose(a, solo, rtol=0, atol=1e-12)
    for k in range(3):
        assert all(torch.equal(v, nets[k].state_dict()[key]) for key, v in shared.member_state(k).items())


# ---------------------------------------------------------------------- item 4: compiled students
def _curve(model, train, teacher, cfg, grad_masks, seed=4):
    losses = []
    base = student_loss(cfg.kd, C, teacher)

    def loss_fn(z, y, x_seq):
        loss = base(z, y, x_seq)
        losses.append(loss.item())
        return loss

    train_steps(model, train, epochs=2, batch_size=8, lr=0.01, loss_fn=loss_fn, seed=seed, grad_masks=grad_masks)
    return losses


@pytest.mark.slow
def test_compiled_student_follows_the_eager_loss_curve(setup):
    """train.compile: a persistent compiled student (and sparse teacher), loaded in place
    with two genomes in turn, trains along the eager student's loss curve (float rounding
    of fused kernels only), and the second genome reuses the first one's compilation."""
    from evo_snn.training.compiled import Persistent

    cfg, teacher, train, genome = setup
    layers = tuple(prunable_layers(teacher))
    other = GenomeOps(weight_magnitudes(teacher, layers), cfg.genome).magnitude([0.8] * len(layers))
    build = lambda: build_model(cfg.model, (T, 2, H, W), C)  # noqa: E731
    stu, tea = Persistent(build, "cpu"), Persistent(build, "cpu")
    for g in (genome, other):
        sparse = sparse_copy(teacher, g.mask_dict())
        eager = copy.deepcopy(sparse).requires_grad_(True)
        want = _curve(eager, train, sparse, cfg, fold_masks(eager, g.mask_dict(), per_weight=False))
        run = stu.load(copy.deepcopy(sparse).requires_grad_(True), trainable=True)
        got = _curve(run, train, tea.load(sparse, trainable=False), cfg, fold_masks(stu.module, g.mask_dict(), per_weight=False))
        assert len(got) == len(want) == 6
        assert got == pytest.approx(want, rel=1e-4, abs=1e-5)
        for name, mask in g.mask_dict().items():
            assert (stu.module.get_submodule(name).weight.detach()[torch.from_numpy(~mask)] == 0).all()
        for name, p in stu.module.named_parameters():
            assert torch.allclose(p.detach(), eager.state_dict()[name], rtol=1e-4, atol=1e-5), name


def test_persistent_refuses_another_architecture(setup):
    from evo_snn.training.compiled import Persistent

    cfg, teacher, _, _ = setup
    p = Persistent(lambda: build_model(cfg.model, (T, 2, H, W), C), "cpu")
    other = load_config("synthetic", overrides=["model.channels=[5]"])
    with pytest.raises(ValueError, match="differs from the persistent module"):
        p.load(build_model(other.model, (T, 2, H, W), C), trainable=True)


@pytest.mark.slow
def test_train_compile_fitness_is_close_to_eager_and_reuses_its_modules(setup):
    """train.compile through GenomeFitness: two genomes on one worker train the same
    persistent modules (one compilation), with the eager run's metrics up to rounding."""
    from dataclasses import replace

    from evo_snn.evaluation.fitness import FitnessContext, GenomeFitness

    cfg, teacher, train, genome = setup
    layers = tuple(prunable_layers(teacher))
    state = {k: v.detach().clone() for k, v in teacher.state_dict().items()}
    ctx = FitnessContext(cfg, train, train, (T, 2, H, W), C, state, layers)
    on = replace(ctx, cfg=replace(cfg, train=replace(cfg.train, compile=True)))
    eager, compiled = GenomeFitness(ctx, torch.device("cpu")), GenomeFitness(on, torch.device("cpu"))
    assert eager.compiled is None and set(compiled.compiled) == {"student", "teacher"}
    other = GenomeOps(weight_magnitudes(teacher, layers), cfg.genome).magnitude([0.8] * len(layers))
    module = compiled.compiled["student"].module
    for g in (genome, other):
        a, b = eager(g, seed=3), compiled(g, seed=3)
        assert compiled.compiled["student"].module is module
        assert b.metrics["sparsity"] == a.metrics["sparsity"]
        assert b.metrics["train_loss"] == pytest.approx(a.metrics["train_loss"], rel=1e-4)
        for k, v in a.student_state.items():
            assert torch.allclose(b.student_state[k].float(), v.float(), rtol=1e-4, atol=1e-5), k
