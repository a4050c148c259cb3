"""Issue 26's per-step figures for a GPU session (``benchmarks/gpu_session.sh hotpath``).

    python benchmarks/gpu_hotpath.py steps [--net nmnist] [--steps 30]   # per-step ms of each change
    python benchmarks/gpu_hotpath.py sync  [--net nmnist]                # host syncs counted per phase
    python benchmarks/gpu_hotpath.py dvs   [--steps 10]                  # full-size DVS: fp32 vs bf16 + channels_last

``steps``: one student (its search space's net and batch, synthetic uint8 data of the real
shape, masks at 50 %) trained ``--steps`` steps after 5 warm-up steps, per-step ms
(median of 3 interleaved repeats) for: ``baseline`` (the path before issue 26: batches
prepared on the host then copied, torch's default Adam, one gradient hook per weight),
``fused adam`` (fused on CUDA, foreach on CPU), ``one-call masks``, ``device data`` (uint8
frames held on the device), ``all`` (the three: today's default) and ``compiled`` (all +
``torch.compile``), each with its ratio to the baseline, same process, same device.

``sync`` (CUDA only): ``torch.cuda.set_sync_debug_mode('warn')``, the warnings of each phase
of one evaluation counted (data, training steps, validation, energy). ``dvs`` (CUDA only):
the full-size DVS128 net (T=16, 2x128x128, batch 16), per-step ms in fp32 and with
``train.amp=bf16`` + ``train.channels_last``. Without CUDA, ``sync`` and ``dvs`` print why
they are skipped and exit 0. Not a test.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import numpy as np
import torch

from evo_snn.config import TrainConfig, load_config
from evo_snn.data import FrameSet
from evo_snn.data.augment import SeqTransform
from evo_snn.models import build_model
from evo_snn.structure.genome import GenomeOps
from evo_snn.structure.pruning import fold_masks, prunable_layers, weight_magnitudes
from evo_snn.training.train import ce_loss, train_steps

NETS = {"nmnist": ("nmnist", (8, 2, 34, 34), 10, []), "cifar10": ("cifar10", (2, 3, 32, 32), 10, []),
        "dvs": ("dvs_gesture", (16, 2, 128, 128), 11, ["model.name=dvs_gesture_net", "model.channels=[128,128,128,128,128]",
                                                      "kd.batch_size=16"])}


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def data(net: str, n: int) -> tuple:
    ds, shape, classes, sets = NETS[net]
    cfg = load_config(ds, overrides=sets)
    g = np.random.default_rng(0)
    t, c, h, w = shape
    if ds == "cifar10":
        x = g.integers(0, 256, (n, 1, c, h, w), dtype=np.uint8)
        tf = SeqTransform("direct", steps=t, translate_px=2, hflip=True, mean=(0.5,) * c, std=(0.25,) * c)
    else:
        x = g.integers(0, 3, (n, t, c, h, w), dtype=np.uint8)
        tf = SeqTransform("events")
    return cfg, FrameSet(torch.from_numpy(x), torch.from_numpy(g.integers(0, classes, n)), tf), shape, classes


def per_step_ms(cfg, fs, shape, classes, mode: str, steps: int, dev: torch.device, hot_path: TrainConfig | None = None) -> float:
    """Milliseconds per training step of one student under ``mode`` (see the module doc)."""
    torch.manual_seed(0)
    net = build_model(cfg.model, shape, classes).to(dev)
    layers = tuple(prunable_layers(net))
    masks = GenomeOps(weight_magnitudes(net, layers), cfg.genome).magnitude([0.5] * len(layers)).mask_dict()
    one_call = mode in ("one-call masks", "all", "compiled")
    hooks = fold_masks(net, masks, per_weight=not one_call)
    train = fs.to(dev) if mode in ("device data", "all", "compiled") else fs
    impl = None if mode in ("fused adam", "all", "compiled") else ("single" if dev.type == "cpu" else "foreach")
    model = torch.compile(net) if mode == "compiled" else net
    bs = cfg.kd.batch_size
    kw = dict(batch_size=bs, lr=1e-3, loss_fn=ce_loss, seed=0, hot_path=hot_path, adam_impl=impl,
              grad_masks=hooks if one_call else None)
    if mode not in ("device data", "all", "compiled"):
        train = _HostPrepared(train, dev)  # the pre-issue-26 order: to_seq on the host, then copied
    train_steps(model, train, epochs=5 * bs / len(fs), **kw)  # warm-up (and compilation)
    sync()
    t0 = time.perf_counter()
    train_steps(model, train, epochs=steps * bs / len(fs), **kw)
    sync()
    hooks.remove()
    return 1000 * (time.perf_counter() - t0) / steps


class _HostPrepared(FrameSet):
    """A FrameSet whose ``to_seq`` runs on the host (the batch moved back first, if it was
    sent): the batches of the loop before issue 26, then copied to ``dev`` by the loop."""

    def __init__(self, fs: FrameSet, dev: torch.device):
        self.__dict__.update(fs.__dict__)
        self._dev = dev

    def to_seq(self, x, *, train=False, generator=None):
        return super().to_seq(x.cpu(), train=train, generator=generator).to(self._dev)


def cmd_steps(args) -> None:
    dev = device()
    cfg, fs, shape, classes = data(args.net, args.samples)
    modes = ["baseline", "fused adam", "one-call masks", "device data", "all", "compiled"]
    if args.no_compile:
        modes.remove("compiled")
    times = {m: [] for m in modes}
    for r in range(3):
        for m in modes[r % len(modes):] + modes[:r % len(modes)]:
            times[m].append(per_step_ms(cfg, fs, shape, classes, m, args.steps, dev))
    base = statistics.median(times["baseline"])
    print(f"== per-step ms, {args.net} {shape} batch {cfg.kd.batch_size}, device {dev} "
          f"({torch.cuda.get_device_name() if dev.type == 'cuda' else 'cpu'}), {args.steps} steps, median of 3 interleaved")
    for m in modes:
        v = statistics.median(times[m])
        print(f"{m:16s} {v:9.2f} ms   ratio to baseline {v / base:.3f}")


def cmd_sync(args) -> None:
    if not torch.cuda.is_available():
        print("== sync audit: skipped, no CUDA device (torch.cuda.set_sync_debug_mode needs one)")
        return
    from evo_snn.evaluation.energy import EnergyCounter
    from evo_snn.training.train import loader, predict_logits

    dev = device()
    cfg, fs, shape, classes = data(args.net, args.samples)
    torch.manual_seed(0)
    net = build_model(cfg.model, shape, classes).to(dev)
    layers = tuple(prunable_layers(net))
    hooks = fold_masks(net, GenomeOps(weight_magnitudes(net, layers), cfg.genome).magnitude([0.5] * len(layers)).mask_dict(),
                       per_weight=False)
    train, bs = fs.to(dev), cfg.kd.batch_size
    gen = torch.Generator().manual_seed(1)

    def batches():
        for i, (x, _) in enumerate(loader(train, bs, shuffle=True, seed=0)):
            train.to_seq(x, train=True, generator=gen)
            if i >= 4:
                break

    def energy():
        with EnergyCounter(net) as counter:
            predict_logits(net, train, 512)
        counter.report()

    phases = {"data (5 batches)": batches,
              "training steps (5)": lambda: train_steps(net, train, epochs=5 * bs / len(fs), batch_size=bs, lr=1e-3,
                                                        loss_fn=ce_loss, seed=0, grad_masks=hooks),
              "validation pass": lambda: predict_logits(net, train, 512), "energy pass": energy}
    for fn in phases.values():  # warm-up: lazy initialisation syncs once
        fn()
    print(f"== host syncs per phase ({args.net}, {torch.cuda.get_device_name()}, set_sync_debug_mode('warn'))")
    for name, fn in phases.items():
        print(f"{name:22s} {audit(fn):5d} sync warnings")


def cmd_dvs(args) -> None:
    if not torch.cuda.is_available():
        print("== full-size DVS fp32 vs bf16 + channels_last: skipped, no CUDA device (a step is ~seconds on a CPU)")
        return
    cfg, fs, shape, classes = data("dvs", args.samples)
    dev = device()
    out = {}
    for r in range(2):
        for name, hp in (("fp32", TrainConfig()), ("bf16 + channels_last", TrainConfig(amp="bf16", channels_last=True))):
            out.setdefault(name, []).append(per_step_ms(cfg, fs, shape, classes, "all", args.steps, dev, hp))
    base = statistics.median(out["fp32"])
    print(f"== full-size DVS {shape} batch {cfg.kd.batch_size}, {torch.cuda.get_device_name()}, {args.steps} steps")
    for name, v in out.items():
        print(f"{name:22s} {statistics.median(v):9.2f} ms   ratio to fp32 {statistics.median(v) / base:.3f}")


def audit(fn) -> int:
    """The number of host-sync warnings ``fn()`` raises under set_sync_debug_mode('warn')."""
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fn()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("what", choices=["steps", "sync", "dvs"])
    ap.add_argument("--net", default="nmnist", choices=["nmnist", "cifar10"])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--samples", type=int, default=512)
    ap.add_argument("--no-compile", action="store_true", help="steps: leave out the compiled module")
    args = ap.parse_args(argv)
    {"steps": cmd_steps, "sync": cmd_sync, "dvs": cmd_dvs}[args.what](args)


if __name__ == "__main__":
    main()
