"""Forward-only screening (search.screen, evo_snn.evaluation.screening): fixed batches and subset, cached
teacher logits, BN recalibration on copies with training images only, counted compute."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from spikingjelly.activation_based import functional

from evo_snn.config import ConfigError
from evo_snn.evaluation.fitness import FitnessContext, FitnessResult
from evo_snn.structure.genome import GenomeOps
from evo_snn.models import build_model
from evo_snn.search.nsga import StructureSearch
from evo_snn.structure.pruning import prunable_layers, weight_magnitudes
from evo_snn.evaluation.screening import Screener, bn_modules, context_of, counted_compute, recalibrate_bn
from evo_snn.training.train import ce_loss, cpu_state, train_steps

from tinycfg import tiny_config

RATIO = 0.25  # a fixed forward_cost_ratio: the tests count, they do not time


def _ctx(tiny_splits, **sets):
    cfg = tiny_config(**{"search.screen": "nll", "search.screen_bn_batches": "3", "kd.batch_size": "8", **sets})
    torch.manual_seed(0)
    teacher = build_model(cfg.model, tiny_splits.frame_shape, tiny_splits.num_classes)
    train_steps(teacher, tiny_splits.train, epochs=2, batch_size=8, lr=0.01, loss_fn=ce_loss, seed=0)  # distinct logits per image
    layers = tuple(prunable_layers(teacher, cfg.genome.prunable))
    return FitnessContext(cfg, tiny_splits.train, tiny_splits.val, tiny_splits.frame_shape, tiny_splits.num_classes,
                          cpu_state(teacher), layers), teacher


def _ops(ctx, teacher):
    return GenomeOps(weight_magnitudes(teacher, ctx.layers), ctx.cfg.genome)


class Recorder:
    """Every input batch of the top-level net of the screener's class, with whether its BN
    layers were in train mode (recalibration) or not (scoring)."""

    def __init__(self, cls):
        self.cls, self.calls = cls, []

    def __enter__(self):
        def hook(module, args):
            if type(module) is self.cls:
                self.calls.append((any(m.training for m in bn_modules(module)), args[0].detach().clone()))

        self.handle = torch.nn.modules.module.register_module_forward_pre_hook(hook)
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def _rows(fs, index=None):
    """The samples of a frame set as bytes, the way the screener feeds them (to_seq, no augmentation)."""
    x, _ = fs[torch.arange(len(fs)) if index is None else torch.as_tensor(index)]
    seq = fs.to_seq(x, train=False)  # [T, N, ...]
    return {seq[:, i].contiguous().numpy().tobytes() for i in range(seq.shape[1])}


def _batch_rows(x_seq):
    return [x_seq[:, i].contiguous().numpy().tobytes() for i in range(x_seq.shape[1])]


def test_config_keys_and_default_off(tiny_splits):
    cfg = tiny_config()
    assert cfg.search.screen == "none" and cfg.search.screen_bn_batches == 20 and cfg.search.screen_samples == 1000
    with pytest.raises(ConfigError, match="search.screen"):
        tiny_config(**{"search.screen": "magic"})
    with pytest.raises(ConfigError, match="screen_first_share"):
        tiny_config(**{"search.screen_first_share": "0"})
    ctx, teacher = _ctx(tiny_splits, **{"search.screen": "none"})
    search = StructureSearch(_ops(ctx, teacher), lambda g, s: None, ctx.cfg.search, ctx.cfg.genome, progress=False)
    assert search.screener is None and "screen" not in search.state_dict()


def test_fixed_batches_and_subset_from_the_right_splits(tiny_splits):
    ctx, _ = _ctx(tiny_splits, **{"search.screen_samples": "10"})
    a = Screener(ctx, forward_cost_ratio=RATIO)
    b = Screener(ctx, forward_cost_ratio=RATIO)
    assert np.array_equal(a.val_index, b.val_index) and np.array_equal(a.bn_index, b.bn_index)  # fixed per run
    assert len(a.val_index) == 10 and len(set(a.val_index.tolist())) == 10
    assert a.val_index.max() < len(ctx.val) and a.bn_index.max() < len(ctx.train)
    assert len(a.bn_index) == 3 * 8
    whole = Screener(replace(ctx, cfg=tiny_config(**{"search.screen": "nll", "search.screen_samples": "100000"})),
                     forward_cost_ratio=RATIO)
    assert len(whole.val_index) == len(ctx.val)  # the whole split when it is smaller
    assert not hasattr(ctx, "test")  # the test split is not in a FitnessContext


def test_cached_teacher_logits_belong_to_the_subset(tiny_splits):
    ctx, teacher = _ctx(tiny_splits, **{"search.screen": "kl", "search.screen_samples": "9"})
    sc = Screener(ctx, forward_cost_ratio=RATIO)
    teacher.eval()
    x, y = ctx.val[torch.as_tensor(sc.val_index)]
    with torch.no_grad():
        expected = teacher(ctx.val.to_seq(x, train=False))
    functional.reset_net(teacher)
    got = sc.teacher_logits()
    assert (expected - expected.mean(0)).abs().max() > 1e-3  # the images' logits differ: a shuffled cache would show
    torch.testing.assert_close(got, expected)
    # computed once: a second call forwards nothing
    with Recorder(type(sc.teacher)) as rec:
        assert sc.teacher_logits() is got
    assert rec.calls == []
    other = np.setdiff1d(np.arange(len(ctx.val)), sc.val_index)[:9]
    with pytest.raises(ValueError, match="another validation subset"):
        sc.teacher_logits(other)
    # the KL score of a candidate is the KL to exactly these logits on exactly these images
    g = _ops(ctx, teacher).global_magnitude(0.5)
    cand = sc.start(g)
    sc.extend(cand, 9)
    model = sc.candidate_model(g)
    model.load_state_dict(cand.bn_state, strict=False)
    with torch.no_grad():
        z = model(ctx.val.to_seq(x, train=False))
    lt = F.log_softmax(expected, 1)
    kl = (lt.exp() * (lt - F.log_softmax(z, 1))).sum(1).mean().item()
    assert cand.score() == pytest.approx(kl, rel=1e-5, abs=1e-7)
    sc.val_index = other  # a subset changed under the cache is refused
    with pytest.raises(ValueError, match="another validation subset"):
        sc.teacher_logits()


def test_bn_recalibration_on_a_copy_with_training_images_only(tiny_splits):
    ctx, teacher = _ctx(tiny_splits, **{"search.screen_samples": "12"})
    before_ctx = {k: v.clone() for k, v in ctx.teacher_state.items()}
    sc = Screener(ctx, forward_cost_ratio=RATIO)
    before_dense = {k: v.clone() for k, v in sc.teacher.state_dict().items()}
    ops = _ops(ctx, teacher)
    train_rows, val_rows = _rows(ctx.train), _rows(ctx.val)
    bn_expected = [r for x in sc.bn_batches() for r in _batch_rows(x)]
    with Recorder(type(sc.teacher)) as rec:
        for s in (0.3, 0.6):
            cand = sc.start(ops.global_magnitude(s))
            sc.extend(cand, 4)
            sc.extend(cand, 12)
    bn_calls = [r for training, x in rec.calls if training for r in _batch_rows(x)]
    score_calls = [r for training, x in rec.calls if not training for r in _batch_rows(x)]
    assert bn_calls == bn_expected * 2  # exactly the fixed training batches, for each candidate
    assert all(r in train_rows for r in bn_calls)
    assert not any(r in val_rows for r in bn_calls)  # never a validation image
    assert score_calls == [r for _ in range(2) for r in _batch_rows(ctx.val.to_seq(ctx.val[torch.as_tensor(sc.val_index)][0]))]
    # the dense teacher (the screener's and the context's) is never touched
    for k, v in sc.teacher.state_dict().items():
        assert torch.equal(v, before_dense[k]), k
    for k, v in ctx.teacher_state.items():
        assert torch.equal(v, before_ctx[k]), k
    assert sc.teacher.training is False
    # the candidate's statistics were recalibrated: not the teacher's, counted over the fixed batches
    cand = sc.start(ops.global_magnitude(0.3))
    means = [k for k in cand.bn_state if k.endswith("running_mean")]
    assert means and all(not torch.allclose(cand.bn_state[k], before_dense[k]) for k in means)
    assert all(int(v) == 3 for k, v in cand.bn_state.items() if k.endswith("num_batches_tracked"))


def test_recalibrate_bn_is_the_cumulative_mean_of_the_batches():
    bn = torch.nn.BatchNorm1d(3)
    bn.running_mean.fill_(7.0)
    net = torch.nn.Sequential(torch.nn.Dropout(0.9), bn)
    xs = [torch.randn(1, 5, 3), torch.randn(1, 7, 3)]

    class Flat(torch.nn.Module):  # x_seq [T=1, B, 3] -> [B, 3]
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, x):
            return self.net(x[0])

    m = Flat()
    assert recalibrate_bn(m, xs, torch.device("cpu")) == 12
    # cumulative average of the batch means (momentum None); dropout off (eval), so the inputs reach BN as they are
    torch.testing.assert_close(bn.running_mean, (xs[0][0].mean(0) + xs[1][0].mean(0)) / 2)
    assert not m.training and bn.momentum == 0.1  # eval after, momentum restored; dropout stayed off (eval)


class Stub:
    """A KD fitness stand-in: metrics from the genome alone, no net run."""

    def __init__(self):
        self.calls = 0

    def __call__(self, genome, seed, *rest):
        self.calls += 1
        return FitnessResult({"accuracy": 1.0 - genome.sparsity ** 2, "sparsity": genome.sparsity, "train_samples": 100}, {})


class Rows:
    def __init__(self):
        self.rows = []

    def __call__(self, search):
        pass

    def on_evaluation(self, ind, metrics):
        self.rows.append({"gen": ind.gen, "uid": ind.uid, "status": ind.status, **ind.metrics})


def _search(ctx, teacher, screener, fitness, rows, **search):
    cfg = replace(ctx.cfg.search, **{"population": 8, "generations": 2, **search})
    return StructureSearch(_ops(ctx, teacher), fitness, cfg, ctx.cfg.genome, callbacks=[rows], progress=False,
                           screener=screener)


def test_screening_forwards_are_counted(tiny_splits):
    ctx, teacher = _ctx(tiny_splits, **{"search.screen_samples": "12"})
    sc = Screener(ctx, forward_cost_ratio=RATIO)
    rows, fit = Rows(), Stub()
    search = _search(ctx, teacher, sc, fit, rows, screen_promote=2, screen_keep=0.5, screen_first_share=0.25)
    with Recorder(type(sc.teacher)) as rec:
        search.run()
    screen = [r for r in rows.rows if r.get("rung") == "screen"]
    assert screen and all(r["status"] == "screened" for r in screen)
    step0 = [r for r in screen if r["screen_step"] == 0]
    step1 = [r for r in screen if r["screen_step"] == 1]
    assert all(r["forward_samples"] == 3 * 8 + 3 for r in step0)  # BN batches x batch size + 3 of 12 images
    assert all(r["forward_samples"] == 12 - 3 for r in step1)
    for gen in (1, 2):
        n0 = sum(r["gen"] == gen for r in step0)
        assert sum(r["gen"] == gen for r in step1) == max(2, -(-n0 // 2))
        assert sum(bool(r["gen"] == gen and r.get("promoted")) for r in screen) == 2
        assert sum(r["gen"] == gen and r["status"] == "ok" for r in rows.rows) == 2  # only the promoted are KD-trained
    # every forward the screener ran is counted, BN recalibration included
    forwarded = sum(int(x.shape[1]) for _, x in rec.calls)
    assert forwarded == sum(r["forward_samples"] for r in screen) == search.screen_forward_samples
    assert search.screen_compute_samples == pytest.approx(RATIO * forwarded)
    assert all(r["counted_samples"] == pytest.approx(RATIO * r["forward_samples"]) for r in screen)
    kd = sum(r["train_samples"] for r in rows.rows if r["status"] == "ok")
    assert counted_compute(rows.rows) == pytest.approx(kd + RATIO * forwarded)
    assert search.state_dict()["screen"]["compute_samples"] == pytest.approx(RATIO * forwarded)
    # never-promoted children enter neither the archive nor the population
    screened_only = {r["uid"] for r in screen} - {r["uid"] for r in rows.rows if r["status"] == "ok"}
    assert screened_only and not screened_only & {ind.uid for ind in list(search.archive) + search.population}


def test_screening_sees_no_test_image(tiny_splits):
    ctx, teacher = _ctx(tiny_splits, **{"search.screen": "bn_accuracy", "search.screen_samples": "12"})
    sc = Screener(ctx, forward_cost_ratio=RATIO)
    rows = Rows()
    search = _search(ctx, teacher, sc, Stub(), rows, generations=1)
    with Recorder(type(sc.teacher)) as rec:
        search.run()
    seen = {r for _, x in rec.calls for r in _batch_rows(x)}
    assert seen and seen <= _rows(ctx.train) | _rows(ctx.val)
    assert not seen & (_rows(tiny_splits.test) - _rows(ctx.train) - _rows(ctx.val))
    assert all(0.0 <= r["score"] <= 1.0 for r in rows.rows if r.get("rung") == "screen")


def test_inherited_candidate_keeps_the_genomes_zeros(tiny_splits):
    ctx, teacher = _ctx(tiny_splits)
    sc = Screener(ctx, forward_cost_ratio=RATIO)
    ops = _ops(ctx, teacher)
    parent = ops.global_magnitude(0.7)
    state = {k: v.clone() for k, v in ctx.teacher_state.items()}
    for name, m in parent.mask_dict().items():
        state[name + ".weight"] = state[name + ".weight"] * torch.as_tensor(m) * 1.5  # a "trained" student
    child = ops.global_magnitude(0.4)
    model = sc.candidate_model(child, state)
    for name, m in child.mask_dict().items():
        w = dict(model.named_parameters())[name + ".weight"].detach()
        keep = torch.as_tensor(m)
        assert (w[~keep] == 0).all()
        pm = torch.as_tensor(parent.mask_dict()[name])
        torch.testing.assert_close(w[keep & pm], state[name + ".weight"][keep & pm])  # the parent's values
        torch.testing.assert_close(w[keep & ~pm], ctx.teacher_state[name + ".weight"][keep & ~pm])  # regrown: teacher's


def test_search_builds_its_screener_from_the_fitness_context(tiny_splits):
    from evo_snn.evaluation.evaluator import genome_fitness

    ctx, teacher = _ctx(tiny_splits)
    fitness = genome_fitness(ctx)
    assert context_of(fitness) is ctx
    search = StructureSearch(_ops(ctx, teacher), fitness, ctx.cfg.search, ctx.cfg.genome, progress=False)
    assert search.screener is not None and search.screener.forward_cost_ratio > 0  # measured at the start
    with pytest.raises(ValueError, match="needs a Screener"):
        StructureSearch(_ops(ctx, teacher), Stub(), ctx.cfg.search, ctx.cfg.genome, progress=False)


def test_cli_screen_nll_end_to_end(tmp_path):
    out = tmp_path / "run"
    sets = ["data.synthetic_classes=3", "data.synthetic_train_per_class=16", "data.synthetic_test_per_class=6",
            "data.synthetic_size=8", "data.frames=4", "data.val_fraction=0.25", "model.channels=[4]",
            "teacher.epochs=2", "kd.epochs=0.5", "search.population=4", "search.generations=1",
            "search.screen=nll", "search.screen_bn_batches=2"]
    cmd = [sys.executable, "-m", "evo_snn.search", "--dataset", "synthetic", "--out", str(out), "--no-progress"]
    for s in sets:
        cmd += ["--set", s]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr[-3000:]
    rows = [json.loads(line) for line in (out / "evaluations.jsonl").read_text().splitlines()]
    screen = [r for r in rows if r.get("rung") == "screen"]
    assert screen and all(r["status"] == "screened" and r["forward_samples"] > 0 and r["seconds"] >= 0
                          and r["forward_cost_ratio"] > 0 and "score" in r for r in screen)
    assert sum(r["gen"] == 1 and r["status"] == "ok" for r in rows) == 1  # population // 4 promoted


@pytest.mark.parametrize("mode", ["nll", "kl", "bn_accuracy"])
def test_grouped_screening_equals_one_at_a_time(tiny_splits, mode):
    """search.screen_group: K candidates as one grouped net give each candidate's solo BN
    statistics and scores (float rounding), and the same counted forwards."""
    ctx, teacher = _ctx(tiny_splits, **{"search.screen_samples": "12", "search.screen": mode})
    sc = Screener(ctx, forward_cost_ratio=RATIO)
    ops = _ops(ctx, teacher)
    rng = np.random.default_rng(5)
    genomes = [ops.random(rng) for _ in range(3)]
    solo = [sc.start(g) for g in genomes]
    for c in solo:
        sc.extend(c, 5)
    grouped = sc.start_group(genomes)
    sc.extend_group(grouped, 5)
    for a, b in zip(solo, grouped):
        assert a.bn_state.keys() == b.bn_state.keys() and a.bn_state
        for k in a.bn_state:
            assert torch.allclose(a.bn_state[k].float(), b.bn_state[k].float(), atol=1e-5), k
        assert (a.scored, a.forward_samples) == (b.scored, b.forward_samples) == (5, 3 * 8 + 5)
        assert torch.allclose(torch.cat(a.losses), torch.cat(b.losses), atol=1e-4)
    sc.extend_group(grouped[:2], 12)  # step 1 on a subset of them, as the multi-step selection does
    for c in solo[:2]:
        sc.extend(c, 12)
    for a, b in zip(solo[:2], grouped[:2]):
        assert b.scored == 12 and a.score() == pytest.approx(b.score(), abs=1e-5)
    with pytest.raises(ValueError, match="different prefixes"):
        sc.extend_group(grouped, 12)


def test_a_search_with_grouped_screening_screens_and_promotes_alike(tiny_splits):
    ctx, teacher = _ctx(tiny_splits, **{"search.screen_samples": "12"})
    out = []
    for size in (1, 3):
        rows = Rows()
        search = _search(ctx, teacher, Screener(ctx, forward_cost_ratio=RATIO), Stub(), rows, screen_promote=2,
                         screen_keep=0.5, screen_first_share=0.25, screen_group=size)
        search.run()
        out.append([(r["uid"], r["screen_step"], r["forward_samples"], round(r["score"], 4), r.get("promoted"))
                    for r in rows.rows if r.get("rung") == "screen"])
    assert out[0] and out[0] == out[1]


def test_screen_group_must_be_a_positive_integer():
    with pytest.raises(ConfigError, match="search.screen_group must be an integer >= 1"):
        tiny_config(**{"search.screen_group": "0"}).validate()
