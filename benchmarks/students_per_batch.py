"""Evaluations per second with K students per forward (``search.students_per_batch``).

    OMP_NUM_THREADS=2 python benchmarks/students_per_batch.py                 # the full figure
    OMP_NUM_THREADS=1 python benchmarks/students_per_batch.py --ks 1 2 --train-samples 64 \\
        --val-samples 32 --rounds 1                                           # a smoke check

For each net and each K in ``--ks`` (default 1 2 4 8), ``GenomeFitness.group`` evaluates K
genomes (global magnitude pruning at sparsities spread over 0.2-0.9, as a search's
members differ) with K students trained as one grouped network (K = 1: the solo
``GenomeFitness.__call__``, today's path), ``--rounds`` times, interleaved over K; the
median wall time gives evaluations/s = K / time, printed side by side with the ratio to
K = 1, and the peak resident memory growth of the process (a rough CPU figure of the
memory per student).

Nets (each its search space's settings: model, T, KD budget and batch):

- ``nmnist``: ``search_spaces/nmnist.yaml`` (conv_snn 16-32, T=8, 2x34x34): the N-MNIST
  subset from ``--nmnist-root`` when present, else synthetic count frames of that shape;
- ``cifar10``: ``search_spaces/cifar10.yaml`` (resnet18_tiny at width 2, T=2, 3x32x32):
  synthetic uint8 images of the real shape (the timing does not depend on the pixels), as
  many as the shared CIFAR-10's split (18,000 training, 2,000 validation) unless given;
- ``dvs_gesture``: the full-size DVS128 Gesture net of issue 12 (``dvs_gesture_net`` with
  128 channels in every conv block, T=16, 2x128x128, batch 16, kd.epochs 1): synthetic
  event-count frames of the real shape, 1,077 training and 100 validation samples unless
  given (the real training split is 1,077 clips before the validation cut).

``--device`` (default: CUDA when there is one, else the CPU) is where the students train.
The teacher is the net at its initialisation (every op is dense on a CPU). Not a test.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from evo_snn.config import load_config
from evo_snn.data import FrameSet, load_splits
from evo_snn.data.augment import SeqTransform
from evo_snn.evaluation.fitness import FitnessContext, GenomeFitness, default_device
from evo_snn.structure.genome import GenomeOps
from evo_snn.models import build_model
from evo_snn.structure.pruning import prunable_layers, weight_magnitudes
from evo_snn.training.train import cpu_state

NMNIST_ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "nmnist_subset"


def _random_set(n: int, shape: tuple, classes: int, dtype, high: int, transform, seed: int) -> FrameSet:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, high, (n, *shape), generator=g).to(dtype)
    return FrameSet(x, torch.randint(0, classes, (n,), generator=g), transform)


def data(net: str, args) -> tuple:
    """(cfg, train, val, frame_shape, num_classes, where the data came from)."""
    if net == "nmnist":
        cfg = load_config("nmnist")
        if args.nmnist_root.exists():
            s = load_splits("nmnist", args.nmnist_root, cfg.data, seed=0)
            train, val, source = s.train, s.val, f"N-MNIST subset {args.nmnist_root}"
        else:
            tf = SeqTransform("events")
            train = _random_set(900, (8, 2, 34, 34), 10, torch.uint8, 3, tf, 0)
            val = _random_set(100, (8, 2, 34, 34), 10, torch.uint8, 3, tf, 1)
            source = f"synthetic frames of N-MNIST's shape ({args.nmnist_root} absent)"
        frame_shape, classes = (8, 2, 34, 34), 10
    elif net == "dvs_gesture":
        cfg = load_config("dvs_gesture", overrides=["model.channels=[128]", "data.downsample=1", "data.frames=16",
                                                     "kd.epochs=1.0", "kd.batch_size=16"])
        tf = SeqTransform("events")
        frame_shape, classes = (16, 2, 128, 128), 11
        train = _random_set(1077, frame_shape, classes, torch.uint8, 3, tf, 0)
        val = _random_set(100, frame_shape, classes, torch.uint8, 3, tf, 1)
        source = "synthetic event-count frames of DVS128 Gesture's full shape"
    else:
        cfg = load_config("cifar10")
        tf = SeqTransform("direct", steps=cfg.data.frames, translate_px=2, hflip=True, mean=(0.49, 0.48, 0.45),
                          std=(0.25, 0.24, 0.26))
        train = _random_set(18000, (1, 3, 32, 32), 10, torch.uint8, 256, tf, 0)
        val = _random_set(2000, (1, 3, 32, 32), 10, torch.uint8, 256, tf, 1)
        frame_shape, classes, source = (cfg.data.frames, 3, 32, 32), 10, "synthetic uint8 images of CIFAR-10's shape"
    if args.train_samples:
        train = train.subset(np.arange(min(args.train_samples, len(train))))
    if args.val_samples:
        val = val.subset(np.arange(min(args.val_samples, len(val))))
    return cfg, train, val, frame_shape, classes, source


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_mib(device: torch.device) -> float:
    """Peak CUDA memory allocated so far on ``device`` (reset before each K), else the
    process's peak resident set, in MiB."""
    if device.type == "cuda":
        mib = torch.cuda.max_memory_allocated(device) / 2**20
        torch.cuda.reset_peak_memory_stats(device)
        return mib
    return peak_rss_mib()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def activation_mib(model: torch.nn.Module, x_seq: torch.Tensor) -> float:
    """MiB of the tensors autograd saves for the backward pass in one training forward of
    ``model`` on ``x_seq`` (``torch.autograd.graph.saved_tensors_hooks``, each storage
    counted once): the memory one student adds per batch, whatever the device."""
    from spikingjelly.activation_based import functional

    seen, total = set(), 0

    def pack(t):
        nonlocal total
        key = (t.untyped_storage().data_ptr(), t.dtype)
        if key not in seen:
            seen.add(key)
            total += t.untyped_storage().nbytes()
        return t

    model.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x_seq)
    functional.reset_net(model)
    return total / 2**20


def run(net: str, args) -> None:
    cfg, train, val, frame_shape, classes, source = data(net, args)
    torch.manual_seed(0)
    teacher = build_model(cfg.model, frame_shape, classes)
    layers = tuple(prunable_layers(teacher, cfg.genome.prunable))
    device = default_device() if args.device == "auto" else torch.device(args.device)
    fit = GenomeFitness(FitnessContext(cfg, train, val, frame_shape, classes, cpu_state(teacher), layers), device)
    ops = GenomeOps(weight_magnitudes(fit.teacher, layers), cfg.genome)
    kmax = max(args.ks)
    genomes = [ops.global_magnitude(s) for s in np.linspace(0.2, 0.9, kmax)]
    jobs = [(g, 100 + i) for i, g in enumerate(genomes)]
    kd = cfg.kd
    print(f"\n== {net}: {cfg.model.name} channels {tuple(cfg.model.channels)} width {cfg.model.width}, frame_shape "
          f"{frame_shape}, {source}; train {len(train)}, val {len(val)}, kd.epochs {kd.epochs}, batch {kd.batch_size}, "
          f"kd.mode {kd.mode}; device {device}{' ' + torch.cuda.get_device_name(device) if device.type == 'cuda' else ''}, "
          f"threads {torch.get_num_threads()}, rounds {args.rounds}")
    x, _ = train[torch.arange(min(kd.batch_size, len(train)))]
    x_seq = train.to_seq(x, train=True)
    per_student = activation_mib(build_model(cfg.model, frame_shape, classes), x_seq)
    print(f"saved activations per student: {per_student:.1f} MiB at batch {x_seq.shape[1]} (T={x_seq.shape[0]})")
    times: dict[int, list[float]] = {k: [] for k in args.ks}
    rss: dict[int, float] = {}
    for k in args.ks:  # warm-up, and the memory each K adds to the peak (measured in increasing K)
        before = peak_mib(device)
        fit.group(jobs[:k]) if k > 1 else fit(*jobs[0])
        after = peak_mib(device)
        rss[k] = after if device.type == "cuda" else after - before  # CUDA: the peak during this K alone
    for r in range(args.rounds):
        for k in (args.ks if r % 2 == 0 else list(reversed(args.ks))):
            sync(device)
            t0 = time.perf_counter()
            out = fit.group(jobs[:k]) if k > 1 else [fit(*jobs[0])]
            sync(device)
            times[k].append(time.perf_counter() - t0)
            bad = [o for o in out if isinstance(o, Exception)]
            if bad:
                raise bad[0]
    base = 1 / statistics.median(times[args.ks[0]]) * args.ks[0]
    mem = "peak CUDA MiB" if device.type == "cuda" else "peak RSS +MiB"
    print(f"{'K':>3} {'s / group':>10} {'evals/s':>9} {'x K=' + str(args.ks[0]):>8} {mem:>14}")
    for k in args.ks:
        t = statistics.median(times[k])
        print(f"{k:>3} {t:10.3f} {k / t:9.3f} {k / t / base:8.2f} {rss[k]:14.1f}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nets", nargs="+", default=["nmnist", "cifar10"], choices=["nmnist", "cifar10", "dvs_gesture"])
    ap.add_argument("--device", default="auto", help="auto (CUDA when there is one, else cpu) | cpu | cuda | cuda:N")
    ap.add_argument("--ks", nargs="+", type=int, default=[1, 2, 4, 8])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--train-samples", type=int, default=0, help="cut the training split (0 = as described)")
    ap.add_argument("--val-samples", type=int, default=0, help="cut the validation split (0 = as described)")
    ap.add_argument("--nmnist-root", type=Path, default=NMNIST_ROOT)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    args.ks = sorted(set(args.ks))
    for net in args.nets:
        run(net, args)


if __name__ == "__main__":
    main()
