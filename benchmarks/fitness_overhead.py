"""Overhead of one fitness evaluation against a plain spikingjelly loop, and where it goes.

    OMP_NUM_THREADS=1 python benchmarks/fitness_overhead.py [--rounds 5] [--threads 1]
        [--datasets synthetic nmnist] [--data-root ../shared/data/nmnist_subset]
        [--amp bf16] [--channels-last] [--no-teacher-acc] [--each] [--no-stages]

Hot-path options (issue 12; ``train.amp``, ``train.channels_last``,
``search.measure_teacher=false``): with any of them the fitness runs with them (the plain
loop with the same AMP and layout, so that ``fitness / plain`` stays the overhead), and a
fitness with the defaults is timed in the same rounds, interleaved: ``ratio fitness(options)
/ fitness(defaults)`` is the option's speed-up (< 1 = faster). ``--each`` also times each
option on its own. ``--no-stages`` skips the per-stage breakdown (faster).

For each data set (its search space's net, T, batch size and KD budget), the same
genome (global magnitude pruning at 50 %) and the same seed are timed, interleaved
over ``--rounds`` rounds (medians reported), as:

- ``fitness``: ``GenomeFitness(ctx)(genome, seed)``, everything a search evaluation does;
- ``plain``: the minimum a fitness needs, written directly against spikingjelly: the sparse
  teacher and the student loaded from the masked state (pre-built modules), the same
  training batches (materialised once as float ``x_seq [T, N, C, H, W]``), per step a
  sparse-teacher forward (no grad), a student forward/backward, the KD loss, Adam with
  the cosine schedule, masks kept by a gradient hook; then one student validation pass
  (its accuracy). ``plain`` has no teacher-accuracy pass and no energy counting.

and then each stage of the fitness on its own (``stage ...`` lines, median seconds and %
of the fitness): sparse teacher (deep copy + masks), the teacher's validation accuracy,
student copy + masks, KD training (``train_steps``), the validation pass with the
energy hooks, the same pass without hooks, sparsity and the CPU copy of the state. Two
controls name the training loop's own overhead: ``train_steps`` with the masks as a
``torch.nn.utils.prune`` re-parametrisation vs folded in with a gradient hook, and the
batches alone (DataLoader + ``to_seq``, no model).

The teacher is the net at its initialisation (not trained): on a CPU every op is dense,
so the time does not depend on the teacher's accuracy (the energy hooks' counts do a
little). Prints one line per figure and the ratio ``fitness / plain``. Not a test.
"""

from __future__ import annotations

import argparse
import copy
import math
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from spikingjelly.activation_based import functional

from evo_snn.config import load_config
from evo_snn.data import load_splits
from evo_snn.evaluation.energy import EnergyCounter
from evo_snn.evaluation.fitness import FitnessContext, GenomeFitness
from evo_snn.structure.genome import GenomeOps
from evo_snn.training.kd import KDLoss, student_loss
from evo_snn.models import build_model
from evo_snn.structure.pruning import (
    apply_masks,
    fold_masks,
    make_permanent,
    prunable_layers,
    sparse_copy,
    weight_magnitudes,
    weight_sparsity,
)
from evo_snn.training.train import accuracy, autocast, channels_last, channels_last_seq, cpu_state, loader, train_steps

DEFAULT_NMNIST = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "nmnist_subset"


def context(dataset: str, data_root: Path | None, overrides: list[str] | None = None) -> tuple[FitnessContext, torch.nn.Module]:
    cfg = load_config(dataset, overrides=overrides)
    splits = load_splits(dataset, data_root, cfg.data, seed=0)
    torch.manual_seed(0)
    teacher = build_model(cfg.model, splits.frame_shape, splits.num_classes)
    layers = tuple(prunable_layers(teacher, cfg.genome.prunable))
    ctx = FitnessContext(cfg, splits.train, splits.val, splits.frame_shape, splits.num_classes, cpu_state(teacher), layers)
    return ctx, teacher


class Plain:
    """The plain loop: modules built once, batches materialised once (float, on the device)."""

    def __init__(self, ctx: FitnessContext, teacher: torch.nn.Module, seed: int, device: torch.device = torch.device("cpu")):
        kd = ctx.cfg.kd
        self.ctx, self.device = ctx, device
        self.dense = {k: v.to(device) for k, v in cpu_state(teacher).items()}
        self.t = build_model(ctx.cfg.model, ctx.frame_shape, ctx.num_classes).to(device).requires_grad_(False).eval()
        self.s = build_model(ctx.cfg.model, ctx.frame_shape, ctx.num_classes).to(device)
        dl = loader(ctx.train, kd.batch_size, shuffle=True, seed=seed)
        g = torch.Generator().manual_seed(seed + 1)
        self.steps = max(1, math.ceil(kd.epochs * len(dl)))
        self.batches = [(ctx.train.to_seq(x, train=True, generator=g).to(device), y.to(device)) for x, y in dl][: self.steps]
        self.val = [(ctx.val.to_seq(x).to(device), y.to(device)) for x, y in loader(ctx.val, 64, shuffle=False)]
        self.kd = KDLoss(kd.alpha, kd.temperature)
        self.amp, self.cl = ctx.cfg.train.amp, ctx.cfg.train.channels_last
        if self.cl:  # the same layout as the fitness (train.channels_last)
            channels_last(self.t)
            channels_last(self.s)
            self.batches = [(channels_last_seq(x), y) for x, y in self.batches]
            self.val = [(channels_last_seq(x), y) for x, y in self.val]

    def __call__(self, masks: dict[str, np.ndarray]) -> float:
        kd = self.ctx.cfg.kd
        m = {n + ".weight": torch.as_tensor(v, dtype=torch.float32, device=self.device) for n, v in masks.items()}
        state = {k: v * m[k] if k in m else v for k, v in self.dense.items()}
        self.t.load_state_dict(state)
        self.s.load_state_dict(state)
        params = dict(self.s.named_parameters())
        hooks = [params[k].register_hook(lambda g, mk=mk: g * mk) for k, mk in m.items()]
        opt = torch.optim.Adam(self.s.parameters(), lr=kd.lr)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=self.steps)
        self.s.train()
        for x, y in self.batches:
            with autocast(self.amp, self.device.type):
                with torch.no_grad():
                    z_t = self.t(x)
                functional.reset_net(self.t)
                loss = self.kd(self.s(x).float(), z_t, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            functional.reset_net(self.s)
        for h in hooks:
            h.remove()
        self.s.eval()
        correct = 0
        with torch.no_grad():
            for x, y in self.val:
                correct += int((self.s(x).argmax(1) == y).sum())
                functional.reset_net(self.s)
        return correct / len(self.ctx.val)


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn, *args):
    _sync()
    t0 = time.perf_counter()
    out = fn(*args)
    _sync()
    return time.perf_counter() - t0, out


def stages(fit: GenomeFitness, genome, seed: int) -> dict[str, float]:
    """Seconds of each stage of ``GenomeFitness.__call__`` (same calls, in the same order)."""
    ctx, kd, out = fit.ctx, fit.ctx.cfg.kd, {}
    torch.manual_seed(seed)
    masks = genome.mask_dict()
    out["sparse teacher (deepcopy + masks)"], teacher = timed(sparse_copy, fit.teacher, masks)
    out["teacher_accuracy pass"], _ = timed(fit.teacher_accuracy, teacher)  # None, at once, with --no-teacher-acc
    t0 = time.perf_counter()
    student = copy.deepcopy(teacher).requires_grad_(True)
    apply_masks(student, masks)
    out["student copy + masks"] = time.perf_counter() - t0
    loss = student_loss(kd, ctx.num_classes, teacher)
    out["train_steps (KD training)"], _ = timed(lambda: train_steps(student, ctx.train, epochs=kd.epochs, batch_size=kd.batch_size,
                                                                    lr=kd.lr, loss_fn=loss, seed=seed, hot_path=fit.hot_path))
    out["make_permanent"], _ = timed(make_permanent, student)
    e = ctx.cfg.energy
    t0 = time.perf_counter()
    with EnergyCounter(student, e.e_ac_pj, e.e_mac_pj) as counter:
        accuracy(student, ctx.val, channels_last=fit.hot_path.channels_last)
    counter.report().metrics()
    out["validation pass with energy hooks"] = time.perf_counter() - t0
    out["(control) validation pass, no hooks"], _ = timed(accuracy, student, ctx.val)
    out["weight_sparsity + cpu_state"], _ = timed(lambda: (weight_sparsity(student, ctx.layers), cpu_state(student)))
    return out


def train_controls(fit: GenomeFitness, genome, seed: int) -> dict[str, float]:
    """train_steps with prune's re-parametrisation vs folded masks + gradient hook; batches alone."""
    ctx, kd, out = fit.ctx, fit.ctx.cfg.kd, {}
    masks = genome.mask_dict()
    teacher = sparse_copy(fit.teacher, masks)
    loss = student_loss(kd, ctx.num_classes, teacher)
    for name, attach in (("train_steps, prune re-parametrisation", apply_masks), ("train_steps, folded masks + grad hook", fold_masks)):
        student = copy.deepcopy(teacher).requires_grad_(True)
        handle = attach(student, masks)
        out[name], _ = timed(lambda student=student: train_steps(student, ctx.train, epochs=kd.epochs, batch_size=kd.batch_size, lr=kd.lr,
                                                 loss_fn=loss, seed=seed, hot_path=fit.hot_path))
        if hasattr(handle, "remove"):
            handle.remove()

    def batches_only():
        dl = loader(ctx.train, kd.batch_size, shuffle=True, seed=seed)
        g = torch.Generator().manual_seed(seed + 1)
        steps = max(1, math.ceil(kd.epochs * len(dl)))
        for i, (x, y) in enumerate(dl):
            ctx.train.to_seq(x, train=True, generator=g)
            if i + 1 >= steps:
                break

    out["batches alone (DataLoader + to_seq)"], _ = timed(batches_only)
    return out


def profile(fit: GenomeFitness, plain: Plain, genome, seed: int, rows: int) -> None:
    """torch.profiler tables (self CPU time, top ``rows`` ops) of one fitness call and one plain loop."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as tprofile

    for name, fn in (("fitness", lambda: fit(genome, seed)), ("plain", lambda: plain(genome.mask_dict()))):
        with tprofile(activities=[ProfilerActivity.CPU]) as prof:
            fn()
        print(f"-- torch.profiler, {name}: top {rows} ops by self CPU time")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows))


def run(dataset: str, data_root: Path | None, rounds: int, seed: int, profile_rows: int = 0,
        variants: list[tuple[str, list[str]]] | None = None, with_stages: bool = True,
        device: torch.device = torch.device("cpu")) -> None:
    """Time the fitness (under the last of ``variants``: (name, config overrides)) against the
    plain loop; with more than one variant, also each other variant's fitness in the same
    rounds (the first is the defaults) and each one's ratio to it."""
    variants = variants or [("defaults", [])]
    ctx, teacher = context(dataset, data_root, variants[-1][1])
    fit = GenomeFitness(ctx, device)
    others = {name: GenomeFitness(context(dataset, data_root, sets)[0], device) for name, sets in variants[:-1]}
    ops = GenomeOps(weight_magnitudes(fit.teacher, ctx.layers), ctx.cfg.genome)
    genome = ops.global_magnitude(0.5)
    plain = Plain(ctx, teacher, seed, device)
    kd, hp = ctx.cfg.kd, ctx.cfg.train
    print(f"\n== {dataset}: model {ctx.cfg.model.name} {tuple(ctx.cfg.model.channels) or ''} width {ctx.cfg.model.width}, "
          f"frame_shape {ctx.frame_shape}, train {len(ctx.train)}, val {len(ctx.val)}, kd.epochs {kd.epochs}, "
          f"batch {kd.batch_size} ({plain.steps} steps), kd.mode {kd.mode}, genome sparsity {genome.sparsity:.3f}, "
          f"device {device}, threads {torch.get_num_threads()}, rounds {rounds}; fitness = {variants[-1][0]!r}: train.amp {hp.amp}, "
          f"train.channels_last {hp.channels_last}, search.measure_teacher {ctx.cfg.search.measure_teacher}")
    fit(genome, seed)  # warm-up (allocator, first-call costs)
    plain(genome.mask_dict())
    for f in others.values():
        f(genome, seed)
    t_fit, t_plain, t_other, st, ctl = [], [], {name: [] for name in others}, [], []
    calls = [("fitness", lambda: fit(genome, seed)), ("plain", lambda: plain(genome.mask_dict()))]
    calls += [(name, lambda f=f: f(genome, seed)) for name, f in others.items()]
    for r in range(rounds):
        order = calls[r % len(calls):] + calls[:r % len(calls)]  # rotated: each position as often
        for name, call in order:
            t = timed(call)[0]
            {"fitness": t_fit, "plain": t_plain}.get(name, t_other.get(name, [])).append(t)
        if with_stages:
            st.append(stages(fit, genome, seed))
            ctl.append(train_controls(fit, genome, seed))
    if profile_rows:
        profile(fit, plain, genome, seed, profile_rows)
    f, p = statistics.median(t_fit), statistics.median(t_plain)
    print(f"fitness      {f:8.3f} s  (median of {rounds}; {variants[-1][0]})")
    print(f"plain loop   {p:8.3f} s")
    print(f"ratio fitness / plain = {f / p:.3f}")
    if others:
        base, w = statistics.median(t_other[variants[0][0]]), max(len(name) for name, _ in variants)
        for name in others:
            print(f"fitness, {name:{w}s} {statistics.median(t_other[name]):8.3f} s")
        print(f"fitness, {variants[-1][0]:{w}s} {f:8.3f} s")
        for name in [*others, variants[-1][0]][1:]:
            o = f if name == variants[-1][0] else statistics.median(t_other[name])
            print(f"ratio fitness({name}) / fitness({variants[0][0]}) = {o / base:.3f}")
    for rows in (st, ctl):
        for k in (rows[0] if rows else []):
            v = statistics.median(row[k] for row in rows)
            print(f"stage {k:42s} {v:8.3f} s  {100 * v / f:5.1f} % of fitness")


def variants_of(args) -> list[tuple[str, list[str]]]:
    """(name, config overrides): the defaults, then with ``--each`` each option alone, then
    all the options given together (the fitness that the plain loop is compared with)."""
    opts = []
    if args.amp != "none":
        opts.append((f"amp {args.amp}", [f"train.amp={args.amp}"]))
    if args.channels_last:
        opts.append(("channels_last", ["train.channels_last=true"]))
    if args.no_teacher_acc:
        opts.append(("no teacher accuracy", ["search.measure_teacher=false"]))
    if not opts:
        return [("defaults", [])]
    out = [("defaults", [])] + (opts if args.each and len(opts) > 1 else [])
    return out + [(" + ".join(n for n, _ in opts), [s for _, sets in opts for s in sets])]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", nargs="+", default=["synthetic", "nmnist"])
    ap.add_argument("--data-root", type=Path, default=DEFAULT_NMNIST, help="N-MNIST root (skipped when absent)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=123)
    ap.add_argument("--profile", type=int, default=0, metavar="ROWS", help="also print torch.profiler's top ROWS ops of each")
    ap.add_argument("--amp", choices=["none", "bf16"], default="none", help="train.amp of the fitness and the plain loop "
                    "(fp16 needs CUDA)")
    ap.add_argument("--device", default="cpu", help="cpu (default) | cuda | cuda:N: where the fitness and the plain loop run")
    ap.add_argument("--channels-last", action="store_true", help="train.channels_last=true (fitness and plain loop)")
    ap.add_argument("--no-teacher-acc", action="store_true", help="search.measure_teacher=false (no sparse-teacher validation pass)")
    ap.add_argument("--each", action="store_true", help="with several options: also time each option alone")
    ap.add_argument("--no-stages", action="store_true", help="skip the per-stage breakdown and the training controls")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    for ds in args.datasets:
        root = None if ds == "synthetic" else args.data_root
        if root is not None and not root.exists():
            print(f"\n== {ds}: skipped, data root {root} is absent")
            continue
        run(ds, root, args.rounds, args.seed, args.profile, variants_of(args), not args.no_stages, torch.device(args.device))


if __name__ == "__main__":
    main()
