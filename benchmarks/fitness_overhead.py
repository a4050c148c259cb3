"""Overhead of one fitness evaluation against a plain spikingjelly loop, and where it goes.

    OMP_NUM_THREADS=1 python benchmarks/fitness_overhead.py [--rounds 5] [--threads 1]
        [--datasets synthetic nmnist] [--data-root ../shared/data/nmnist_subset]
        [--amp bf16] [--channels-last] [--no-teacher-acc] [--each] [--no-stages]

    OMP_NUM_THREADS=1 python benchmarks/fitness_overhead.py --breakdown --datasets nmnist cifar10 [--rounds 3]
        [--changes 'adam single' 'hook per weight'] [--compile]

``--breakdown`` (issue 26): per stage (data, training steps, validation, energy, teacher
validation, copies; see ``stages``) the median seconds of today's defaults, and, timed
in the same rounds interleaved, the ratio of each change on its own (``change``: the
code before one issue 26 change, or ``--compile``: train.compile=true), < 1 = faster
than the defaults, for each data set's shipped space (CIFAR-10 from ``--cifar-root``).

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
import contextlib
import copy
import functools
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
    prunable_layers,
    sparse_copy,
    weight_magnitudes,
    weight_sparsity,
)
import evo_snn.evaluation.fitness as fitness_mod
import evo_snn.training.train as train_mod
from evo_snn.training.train import (accuracy, autocast, channels_last, channels_last_seq, cpu_state, eval_batch_size, loader,
                                    to_device, train_steps)

DEFAULT_NMNIST = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "nmnist_subset"
DEFAULT_CIFAR = DEFAULT_NMNIST.parent / "cifar10_jpeg"


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
    """Seconds of each stage of ``GenomeFitness.__call__`` (same calls, in the same order),
    under the issue 26 names: copies (sparse teacher, student, masks, the state to the
    host), teacher validation, data (the training batches alone: DataLoader + ``to_seq``),
    training steps (``train_steps`` less its data), validation (the student's pass without
    hooks) and energy (the same pass with the energy hooks, less the plain one)."""
    ctx, kd, out = fit.ctx, fit.ctx.cfg.kd, {}
    torch.manual_seed(seed)
    masks = genome.mask_dict()
    t_copy, teacher = timed(sparse_copy, fit.teacher, masks)
    fit._teacher_acc.clear()
    out["teacher validation"], _ = timed(fit.teacher_accuracy, teacher, genome.key)  # None, at once, without measure_teacher
    t0 = time.perf_counter()
    student = copy.deepcopy(teacher).requires_grad_(True)
    hooks = fitness_mod.fold_masks(student, masks, per_weight=False)
    t_copy += time.perf_counter() - t0
    loss = student_loss(kd, ctx.num_classes, teacher)
    t_train, _ = timed(lambda: train_steps(student, ctx.train, epochs=kd.epochs, batch_size=kd.batch_size, lr=kd.lr,
                                           loss_fn=loss, seed=seed, hot_path=fit.hot_path, grad_masks=hooks))
    out["data"] = batches_only(fit, seed)
    out["training steps"] = t_train - out["data"]
    e = ctx.cfg.energy
    t0 = time.perf_counter()
    with EnergyCounter(student, e.e_ac_pj, e.e_mac_pj) as counter:
        accuracy(student, ctx.val, eval_batch_size(fit.hot_path, fit.device), channels_last=fit.hot_path.channels_last)
    counter.report().metrics()
    with_hooks = time.perf_counter() - t0
    out["validation"], _ = timed(accuracy, student, ctx.val, eval_batch_size(fit.hot_path, fit.device))
    out["energy"] = with_hooks - out["validation"]
    t, _ = timed(lambda: (weight_sparsity(student, ctx.layers), cpu_state(student)))
    out["copies"] = t_copy + t
    return out


def batches_only(fit: GenomeFitness, seed: int) -> float:
    """Seconds to make the training batches of one evaluation (DataLoader + ``to_seq``, no model)."""
    ctx, kd = fit.ctx, fit.ctx.cfg.kd
    t0 = time.perf_counter()
    dl = loader(ctx.train, kd.batch_size, shuffle=True, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    steps = max(1, math.ceil(kd.epochs * len(dl)))
    for i, (x, y) in enumerate(dl):
        ctx.train.to_seq(to_device(x, fit.device), train=True, generator=g)
        if i + 1 >= steps:
            break
    return time.perf_counter() - t0


@contextlib.contextmanager
def change(name: str):
    """Today's defaults with one issue 26 change undone (the code before it, still
    reachable): 'adam single' (the per-parameter Adam loop instead of foreach / fused),
    'hook per weight' (one gradient hook per masked weight instead of one
    ``torch._foreach_mul_``); 'defaults' changes nothing."""
    saved = (train_mod.adam, fitness_mod.fold_masks)
    if name == "adam single":
        train_mod.adam = functools.partial(saved[0], impl="single")
    elif name == "hook per weight":
        fitness_mod.fold_masks = lambda model, masks, per_weight=True: saved[1](model, masks, per_weight=True)
    elif name != "defaults":
        raise ValueError(f"unknown change {name!r}")
    try:
        yield
    finally:
        train_mod.adam, fitness_mod.fold_masks = saved


def breakdown(dataset: str, data_root: Path | None, rounds: int, seed: int, device: torch.device,
              changes: list[str], compiled: bool = False) -> None:
    """The stage breakdown of today's defaults and, interleaved in the same rounds, of each
    change on its own (``change``; ``compiled``: ``train.compile=true`` too): medians, and
    each one's whole-evaluation and per-stage ratio to the defaults (< 1 = faster)."""
    ctx, _ = context(dataset, data_root)
    fits = {name: GenomeFitness(ctx, device) for name in ["defaults", *changes]}
    if compiled:
        fits["compile"] = GenomeFitness(context(dataset, data_root, ["train.compile=true"])[0], device)
    genome = GenomeOps(weight_magnitudes(fits["defaults"].teacher, ctx.layers), ctx.cfg.genome).global_magnitude(0.5)
    names = list(fits)
    for name in names:  # warm-up (first-call costs, compilation)
        with change(name if name != "compile" else "defaults"):
            fits[name](genome, seed)
    whole = {n: [] for n in names}
    st = {n: [] for n in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            with change(name if name != "compile" else "defaults"):
                fits[name]._teacher_acc.clear()
                whole[name].append(timed(fits[name], genome, seed)[0])
                st[name].append(stages(fits[name], genome, seed))
    med = {n: statistics.median(whole[n]) for n in names}
    print(f"\n== {dataset}: stage breakdown, device {device}, threads {torch.get_num_threads()}, {rounds} rounds "
          f"interleaved (medians; each change on its own against the defaults)")
    print(f"{'stage':20s} {'defaults s':>10s} " + " ".join(f"{n:>16s}" for n in names[1:]))
    for stage in st["defaults"][0]:
        base = statistics.median(row[stage] for row in st["defaults"])
        ratios = [statistics.median(row[stage] for row in st[n]) / base if base > 0 else float("nan") for n in names[1:]]
        print(f"{stage:20s} {base:10.3f} " + " ".join(f"{r:16.3f}" for r in ratios))
    print(f"{'whole evaluation':20s} {med['defaults']:10.3f} " + " ".join(f"{med[n] / med['defaults']:16.3f}" for n in names[1:]))


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

    out["batches alone (DataLoader + to_seq)"] = batches_only(fit, seed)
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
    ap.add_argument("--cifar-root", type=Path, default=DEFAULT_CIFAR, help="CIFAR-10 root (skipped when absent)")
    ap.add_argument("--breakdown", action="store_true", help="issue 26: the stage breakdown of the defaults and of each "
                    "change on its own (--changes, --compile), as ratios, instead of the fitness / plain comparison")
    ap.add_argument("--changes", nargs="*", default=["adam single", "hook per weight"],
                    help="with --breakdown: the changes undone one at a time (see change())")
    ap.add_argument("--compile", action="store_true", help="with --breakdown: also train.compile=true")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    for ds in args.datasets:
        root = {"synthetic": None, "cifar10": args.cifar_root}.get(ds, args.data_root)
        if root is not None and not root.exists():
            print(f"\n== {ds}: skipped, data root {root} is absent")
            continue
        if args.breakdown:
            breakdown(ds, root, args.rounds, args.seed, torch.device(args.device), args.changes, args.compile)
            continue
        run(ds, root, args.rounds, args.seed, args.profile, variants_of(args), not args.no_stages, torch.device(args.device))


if __name__ == "__main__":
    main()
