"""The GPU hot path, checked on the CPU: ``train.amp`` (bf16 autocast), ``train.channels_last``,
``model.neuron_backend``, ``to_device`` (pinned, non_blocking copies) and
``search.measure_teacher``. The CUDA-only parts (fp16 + GradScaler, pinned copies, the
GPU neuron backends) are at the end, skipped without CUDA."""

import json
import math
from dataclasses import replace

import pandas as pd
import pytest
import torch
from spikingjelly.activation_based import functional

from evo_snn import malloc
from evo_snn.config import ConfigError, ModelConfig, TrainConfig, load_config
from evo_snn.data import FrameSet
from evo_snn.evaluation.fitness import FitnessContext, GenomeFitness
from evo_snn.structure.genome import GenomeOps
from evo_snn.training.kd import KDLoss
from evo_snn.models import build_model, check_backend_request, select_backend
from evo_snn.structure.pruning import prunable_layers, weight_magnitudes
from evo_snn.search.run import main
from evo_snn.training.train import autocast, ce_loss, channels_last, channels_last_seq, check_hot_path, to_device, train_steps

TINY = ["--set", "data.synthetic_classes=3", "--set", "data.synthetic_train_per_class=16",
        "--set", "data.synthetic_test_per_class=6", "--set", "data.synthetic_size=8", "--set", "data.frames=4",
        "--set", "data.val_fraction=0.25", "--set", "model.channels=[4]", "--set", "teacher.epochs=2",
        "--set", "kd.epochs=0.5"]  # test_search's tiny run

C, T, H, W = 3, 4, 8, 8
CPU = torch.device("cpu")
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture
def cpu_only(monkeypatch):
    """The run's default device is the CPU, also on a machine with CUDA (every device choice
    goes through ``torch.cuda.is_available``): the CPU-only behaviour is checked there too."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture(scope="module")
def setup():
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 2, (C * 8, T, 2, H, W), generator=g).float()
    y = torch.arange(C).repeat_interleave(8)
    for i, c in enumerate(y.tolist()):
        x[i, :, 1, 2 * c:2 * c + 3, :] += 3.0
    train, val = FrameSet(x, y), FrameSet(x.clone(), y.clone())
    cfg = load_config("synthetic", overrides=["model.channels=[4]", "kd.epochs=2", "kd.batch_size=8", "kd.lr=0.01"])
    torch.manual_seed(0)
    teacher = build_model(cfg.model, (T, 2, H, W), C)
    train_steps(teacher, train, epochs=4, batch_size=8, lr=0.02, loss_fn=ce_loss, seed=0)
    layers = tuple(prunable_layers(teacher))
    ctx = FitnessContext(cfg, train, val, (T, 2, H, W), C, {k: v.detach().clone() for k, v in teacher.state_dict().items()}, layers)
    genome = GenomeOps(weight_magnitudes(teacher, layers), cfg.genome).magnitude([0.5] * len(layers))
    return ctx, genome


def _with(ctx, **sections):
    cfg = ctx.cfg
    for name, values in sections.items():
        cfg = replace(cfg, **{name: replace(getattr(cfg, name), **values)})
    return replace(ctx, cfg=cfg)


# ---------------------------------------------------------------------- config
def test_defaults_change_nothing_and_bad_values_are_config_errors():
    cfg = load_config("synthetic")
    assert (cfg.train.amp, cfg.train.channels_last, cfg.model.neuron_backend, cfg.search.measure_teacher) == ("none", False, "auto", False)
    ok = load_config("synthetic", overrides=["train.amp=bf16", "train.channels_last=true", "model.neuron_backend=torch",
                                             "search.measure_teacher=true"])
    assert (ok.train.amp, ok.train.channels_last, ok.model.neuron_backend, ok.search.measure_teacher) == ("bf16", True, "torch", True)
    with pytest.raises(ConfigError, match="train.amp must be one of"):
        load_config("synthetic", overrides=["train.amp=fp8"])
    with pytest.raises(ConfigError, match="model.neuron_backend must be one of"):
        load_config("synthetic", overrides=["model.neuron_backend=opencl"])
    with pytest.raises(ConfigError, match="train.channels_last must be true or false, got 1"):
        load_config("synthetic", overrides=["train.channels_last=1"])


# ---------------------------------------------------------------------- AMP
def test_kd_loss_is_float32_for_bf16_logits():
    g = torch.Generator().manual_seed(1)
    z_s, z_t = torch.randn(6, 5, generator=g).bfloat16(), torch.randn(6, 5, generator=g).bfloat16()
    y = torch.randint(0, 5, (6,), generator=g)
    loss = KDLoss(0.7, 3.0)(z_s, z_t, y)
    assert loss.dtype == torch.float32
    assert loss.item() == KDLoss(0.7, 3.0)(z_s.float(), z_t.float(), y).item()


def test_autocast_runs_the_forward_in_bf16_and_none_is_float32(setup):
    ctx, _ = setup
    net = build_model(ctx.cfg.model, ctx.frame_shape, C)
    x_seq = ctx.train.to_seq(ctx.train.frames[:4])
    with autocast("bf16", CPU):
        z = net(x_seq)
    functional.reset_net(net)
    with autocast("none", CPU):
        z32 = net(x_seq)
    functional.reset_net(net)
    assert (z.dtype, z32.dtype) == (torch.bfloat16, torch.float32)
    with pytest.raises(ValueError, match="unknown amp mode"):
        autocast("fp8", CPU)


def test_bf16_kd_training_is_close_to_float32_and_keeps_pruned_weights_zero(setup):
    ctx, genome = setup
    fp32 = GenomeFitness(ctx, CPU)(genome, seed=5)
    again = GenomeFitness(_with(ctx, train={"amp": "none"}), CPU)(genome, seed=5)
    bf16 = GenomeFitness(_with(ctx, train={"amp": "bf16"}), CPU)(genome, seed=5)
    assert math.isfinite(bf16.metrics["train_loss"]) and abs(bf16.metrics["train_loss"] - fp32.metrics["train_loss"]) < 0.1
    assert bf16.metrics["sparsity"] == fp32.metrics["sparsity"] == pytest.approx(genome.sparsity)
    masks = genome.mask_dict()
    for name in ctx.layers:
        key = name + ".weight"
        w32, w16, w0 = fp32.student_state[key], bf16.student_state[key], ctx.teacher_state[key]
        assert w16.dtype == torch.float32  # weights (and Adam's state) stay float32
        assert torch.equal(again.student_state[key], w32)  # amp 'none' is the default path exactly
        pruned = torch.from_numpy(~masks[name])
        assert (w16[pruned] == 0).all() and (w32[pruned] == 0).all()
        gap, moved = (w16 - w32).norm().item(), (w32 - w0 * ~pruned).norm().item()
        # bf16 changed the training (measured here: 1-2 % of the weights' norm, 10-20 % of what training moved them)
        assert 0 < gap < 0.05 * w32.norm().item() and gap < 0.5 * moved, name


def test_bf16_teacher_training_is_close_to_float32(setup):
    ctx, _ = setup
    nets = {}
    for amp in ("none", "bf16"):
        torch.manual_seed(0)
        nets[amp] = build_model(ctx.cfg.model, ctx.frame_shape, C)
        loss = train_steps(nets[amp], ctx.train, epochs=1, batch_size=8, lr=0.01, loss_fn=ce_loss, seed=0, hot_path=TrainConfig(amp=amp))
        assert math.isfinite(loss)
    w32, w16 = (torch.cat([p.detach().flatten() for p in nets[a].parameters()]) for a in ("none", "bf16"))
    assert all(p.dtype == torch.float32 for p in nets["bf16"].parameters())
    assert 0 < (w16 - w32).norm() < 0.05 * w32.norm()


def test_fp16_needs_cuda_and_exits_2_on_the_cpu(tmp_path, capsys, cpu_only):
    with pytest.raises(ConfigError, match="fp16' needs a CUDA device"):
        check_hot_path(TrainConfig(amp="fp16"), CPU)
    check_hot_path(TrainConfig(amp="bf16"), CPU)  # bf16 autocast runs on the CPU
    rc = main(["--dataset", "synthetic", "--out", str(tmp_path / "r"), "--no-progress", *TINY, "--set", "train.amp=fp16"])
    assert rc == 2 and "train.amp 'fp16' needs a CUDA device" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


# ---------------------------------------------------------------------- channels_last
def test_channels_last_seq_reaches_the_convs_as_channels_last():
    x = torch.rand(3, 2, 4, 5, 6)
    x_cl = channels_last_seq(x)
    assert torch.equal(x_cl, x) and x_cl.shape == x.shape and not x_cl.is_contiguous()
    assert x_cl.flatten(0, 1).is_contiguous(memory_format=torch.channels_last)  # what layer.Conv2d sees in step mode 'm'
    frame = x[0]
    assert channels_last_seq(frame) is frame  # not [T, N, C, H, W]: left alone


@pytest.mark.parametrize("name", ["conv_snn", "resnet18_tiny"])
def test_channels_last_gives_the_default_layouts_outputs_and_training(setup, name):
    """float64, so that no membrane potential sits within rounding of the threshold (a
    spike flip is the one way the layouts could differ by more than rounding)."""
    ctx, _ = setup
    cfg = ModelConfig(name=name, channels=(4, 8))
    x_seq = ctx.train.to_seq(ctx.train.frames[:8]).double()
    torch.manual_seed(0)
    ref = build_model(cfg, ctx.frame_shape, C).double()
    cl = channels_last(build_model(cfg, ctx.frame_shape, C).double())
    cl.load_state_dict(ref.state_dict())
    convs = [m.weight for m in cl.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
    assert not all(w.is_contiguous() for w in convs)  # (a 1x1 kernel is both)
    seen = []
    hook = next(m for m in cl.modules() if isinstance(m, torch.nn.Conv2d)).register_forward_hook(lambda m, i, o: seen.append(o))
    z_ref, z_cl = ref(x_seq), cl(channels_last_seq(x_seq))
    hook.remove()
    functional.reset_net(ref)
    functional.reset_net(cl)
    assert seen[0].dim() == 5 and seen[0].flatten(0, 1).is_contiguous(memory_format=torch.channels_last)  # kept through the [T*N, ...] conv
    torch.testing.assert_close(z_cl, z_ref, rtol=1e-10, atol=1e-10)
    # training: train_steps converts model and batches; same weights as the default layout
    fs = FrameSet(ctx.train.frames, ctx.train.labels, lambda x, train, generator: x.transpose(0, 1).double())  # float64 x_seq
    a, b = build_model(cfg, ctx.frame_shape, C).double(), build_model(cfg, ctx.frame_shape, C).double()
    b.load_state_dict(a.state_dict())
    train_steps(a, fs, epochs=1, batch_size=8, lr=0.01, loss_fn=ce_loss, seed=0)
    train_steps(b, fs, epochs=1, batch_size=8, lr=0.01, loss_fn=ce_loss, seed=0, hot_path=TrainConfig(channels_last=True))
    assert any(p.dim() == 4 and not p.is_contiguous() for p in b.parameters())  # b was converted
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(vb, va, rtol=1e-9, atol=1e-12, msg=k)


def test_channels_last_fitness_matches_the_default(setup):
    ctx, genome = setup
    ref = GenomeFitness(ctx, CPU)(genome, seed=5)
    cl = GenomeFitness(_with(ctx, train={"channels_last": True}), CPU)(genome, seed=5)
    assert cl.metrics["sparsity"] == ref.metrics["sparsity"]
    assert cl.metrics["teacher_accuracy"] == ref.metrics["teacher_accuracy"]
    assert abs(cl.metrics["train_loss"] - ref.metrics["train_loss"]) < 1e-3
    for k, v in ref.student_state.items():  # float32: rounding differs, a rare spike may flip
        torch.testing.assert_close(cl.student_state[k], v, rtol=1e-2, atol=1e-3, msg=k)


# ---------------------------------------------------------------------- neuron backend
def test_neuron_backend_on_the_cpu(setup):
    ctx, _ = setup
    net = build_model(ctx.cfg.model, ctx.frame_shape, C)
    assert select_backend(net, CPU) == select_backend(net, CPU, "auto") == select_backend(net, CPU, "torch") == "torch"
    for name in ("cupy", "cuda", "triton"):
        with pytest.raises(ConfigError, match=f"'{name}' needs a CUDA device"):
            select_backend(net, CPU, name)
    with pytest.raises(ConfigError, match="must be one of"):
        check_backend_request("opencl", CPU)
    assert GenomeFitness(ctx, CPU).backend == "torch"
    with pytest.raises(ConfigError, match="needs a CUDA device"):
        GenomeFitness(_with(ctx, model={"neuron_backend": "cupy"}), CPU)


def test_search_asking_for_cupy_on_the_cpu_exits_2_before_writing(tmp_path, capsys, cpu_only):
    rc = main(["--dataset", "synthetic", "--out", str(tmp_path / "r"), "--no-progress", *TINY,
               "--set", "model.neuron_backend=cupy"])
    assert rc == 2
    err = capsys.readouterr().err
    assert err.startswith("error: model.neuron_backend 'cupy' needs a CUDA device") and "Traceback" not in err
    assert not (tmp_path / "r").exists()


# ---------------------------------------------------------------------- to_device
def test_to_device_on_the_cpu_is_the_same_tensor_unpinned():
    x = torch.arange(12.0).view(3, 4)
    out = to_device(x, "cpu")
    assert out is x and torch.equal(out, torch.arange(12.0).view(3, 4)) and not out.is_pinned()
    y = torch.tensor([1, 2, 3])
    assert to_device(y, torch.device("cpu")) is y


# ---------------------------------------------------------------------- measure_teacher
def test_measure_teacher_false_skips_only_the_teacher_pass(setup, monkeypatch):
    ctx, genome = setup
    on = GenomeFitness(_with(ctx, search={"measure_teacher": True}), CPU)(genome, seed=5)
    fit = GenomeFitness(_with(ctx, search={"measure_teacher": False}), CPU)
    calls = []
    monkeypatch.setattr("evo_snn.evaluation.fitness.accuracy", lambda *a, **k: calls.append(a[0]) or 0.5)
    off = fit(genome, seed=5)
    assert len(calls) == 1  # the student's validation pass only
    monkeypatch.undo()
    off = fit(genome, seed=5)
    assert on.metrics["teacher_accuracy"] is not None and off.metrics["teacher_accuracy"] is None
    assert {k: v for k, v in off.metrics.items() if k not in ("teacher_accuracy", "wall_s", "worker")} == \
        {k: v for k, v in on.metrics.items() if k not in ("teacher_accuracy", "wall_s", "worker")}
    for k, v in on.student_state.items():
        assert torch.equal(off.student_state[k], v)
    grouped = fit.group([(genome, 5), (genome, 6)])
    assert [r.metrics["teacher_accuracy"] for r in grouped] == [None, None]
    assert all(0 <= r.metrics["accuracy"] <= 1 and r.metrics["group_size"] == 2 for r in grouped)


def test_a_search_without_teacher_accuracy_writes_every_output_and_exports_the_same_numbers(tmp_path):
    runs = {}
    for measure in (True, False):
        out = tmp_path / str(measure)
        rc = main(["--dataset", "synthetic", "--population", "4", "--generations", "1", "--seed", "3", "--out", str(out),
                   "--no-progress", *TINY, "--set", f"search.measure_teacher={str(measure).lower()}"])
        assert rc == 0
        rows = [json.loads(line) for line in (out / "evaluations.jsonl").read_text().splitlines()]
        front = pd.read_csv(out / "pareto.csv")
        exported = {d.name: json.loads((d / "metrics.json").read_text()) for d in sorted((out / "exported").iterdir())}
        assert rows and exported and (out / "plots" / "pareto.png").is_file()
        if measure:
            assert all(0 <= r["teacher_accuracy"] <= 1 for r in rows) and front["teacher_accuracy"].notna().all()
        else:
            assert all(r["teacher_accuracy"] is None for r in rows) and front["teacher_accuracy"].isna().all()
        runs[measure] = rows, exported, {u: (out / "exported" / u / "MODEL_CARD.md").read_text() for u in exported}
    (on_rows, on_exp, on_cards), (off_rows, off_exp, off_cards) = runs[True], runs[False]
    drop = ("teacher_accuracy", "wall_s", "worker", "eval_wall_s")
    assert [{k: v for k, v in r.items() if k not in drop} for r in off_rows] == \
        [{k: v for k, v in r.items() if k not in drop} for r in on_rows]  # the search never reads it
    assert sorted(off_exp) == sorted(on_exp)
    for uid, rec in off_exp.items():  # measured at export instead: the same sparse teacher, the same number
        assert rec["teacher_accuracy_measured"] == "at export" and "teacher_accuracy_measured" not in on_exp[uid]
        assert rec["teacher_accuracy"] == on_exp[uid]["teacher_accuracy"]
        assert "measured at export" in off_cards[uid] and "measured at export" not in on_cards[uid]
    # the neuron backend the run used: 'torch' on the CPU; on CUDA whatever 'auto' chose there
    manifest = json.loads((tmp_path / "True" / "manifest.json").read_text())
    assert manifest["malloc_thresholds"] == malloc.APPLIED  # evo_snn.malloc, as set at import
    used = manifest["backend"]
    assert used == "torch" if not torch.cuda.is_available() else used in ("cuda", "triton", "torch")


# ---------------------------------------------------------------------- CUDA only
@CUDA
def test_to_device_pins_and_copies_to_cuda():
    x = torch.arange(12.0).view(3, 4)
    out = to_device(x, "cuda")
    torch.cuda.synchronize()
    assert out.is_cuda and torch.equal(out.cpu(), x)


@CUDA
@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_amp_kd_training_on_cuda(setup, amp):
    ctx, genome = setup
    dev = torch.device("cuda")
    ref = GenomeFitness(ctx, dev)(genome, seed=5)
    res = GenomeFitness(_with(ctx, train={"amp": amp, "channels_last": True}), dev)(genome, seed=5)
    assert math.isfinite(res.metrics["train_loss"]) and res.metrics["sparsity"] == ref.metrics["sparsity"]
    masks = genome.mask_dict()
    for name in ctx.layers:
        assert (res.student_state[name + ".weight"][torch.from_numpy(~masks[name])] == 0).all()


@CUDA
def test_auto_neuron_backend_on_cuda_is_not_torch(setup):
    ctx, _ = setup
    net = build_model(ctx.cfg.model, ctx.frame_shape, C).cuda()
    assert select_backend(net, "cuda") in ("cuda", "triton", "torch")  # whatever spikingjelly loaded, recorded
    assert select_backend(net, "cuda", "torch") == "torch"
    with pytest.raises(ConfigError, match="no CuPy backend"):
        select_backend(net, "cuda", "cupy")


def test_eval_batch_size_changes_no_accuracy_or_energy_count(tmp_path):
    """train.eval_batch_size (issue 26): the validation passes of the teacher and of every
    evaluation at batch 7 give exactly the metrics of the default batch (64 on the CPU)."""
    import json

    from evo_snn.search.run import main
    from test_search import TINY

    def rows(out, *extra):
        assert main(["--dataset", "synthetic", "--population", "4", "--generations", "1", "--no-progress", *TINY,
                     *extra, "--out", str(out)]) == 0
        keep = ("accuracy", "teacher_accuracy", "energy_pj", "energy_fraction", "synops", "firing_rate", "genome_key")
        return [{k: r.get(k) for k in keep} for r in map(json.loads, (out / "evaluations.jsonl").read_text().splitlines())]

    default = rows(tmp_path / "a")
    small = rows(tmp_path / "b", "--set", "train.eval_batch_size=7")
    assert small == default
    assert any(r["energy_pj"] is not None for r in default)
    teacher = [json.loads((tmp_path / d / "teacher" / "metrics.json").read_text())["val_curve"] for d in "ab"]
    assert teacher[0] == teacher[1]
