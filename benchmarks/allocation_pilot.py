"""The allocation pilot of issue 23, reproduced with the project's own code.

    python benchmarks/allocation_pilot.py --dataset cifar10 --data-root ../shared/data/cifar10_jpeg \\
        [--teacher RUN/teacher/teacher.pt | --teacher-epochs 8 --save-teacher DIR] \\
        [--sparsities 0.85,0.95] [--random-moves 4] [--seeds 2] [--finetune-steps N] \\
        [--val-images 1000] [--bn-batches 20] [--test-images N] [--out pilot.json]

1. The dense teacher: trained with ``evo_snn.training.teacher.train_teacher`` on the data set's
   search space (``search_spaces/<dataset>.yaml``; ``--teacher-epochs`` replaces
   teacher.epochs), or loaded with ``--teacher PATH`` (a run's ``teacher/teacher.pt``;
   its ``split.json`` is checked as ``--teacher`` of the search does).
2. At each sparsity s, allocations with exactly round(s * N) pruned weights and magnitude
   pruning within each layer (``evo_snn.structure.allocation``): global, uniform, lamp, erk,
   energy_aware (SynOps per weight measured on the teacher, as ``evo_snn.analysis.baselines``), and
   ``--random-moves`` K allocations that move 5-30 % of the pruned budget between random
   layers, starting from global, keeping the total exact.
3. Proxies of each allocation's masked teacher, on a fixed subset of ``--val-images``
   validation images: NLL, accuracy and KL(dense teacher || masked net), without and with
   BN recalibration (a copy of the masked net, BN running statistics reset, momentum None
   = cumulative average, train-mode forwards without gradient on ``--bn-batches`` fixed
   training batches without augmentation; the dense teacher and the validation images are
   never used for it).
4. Truth: the ``global_long`` fine-tuning recipe (``GenomeFitness``: the student starts
   from the sparse teacher, the genome's masks kept, the search space's kd settings - kd
   mode ``none``, cross-entropy, on CIFAR-10 - for ``--finetune-steps`` steps; by default as
   many as ``evo_snn.analysis.baselines`` gives ``global_long`` for a search of the config's size),
   then accuracy on the test split (or its first ``--test-images`` of a fixed permutation),
   for ``--seeds`` fine-tune seeds. The test split is read only here, never for a proxy.
5. The table: seed noise, spread across allocations, ERK / LAMP / energy_aware - global per
   seed, Spearman of each proxy with the mean truth, the cost of a proxy vs a fine-tune,
   the SynOps kept per method. JSON written atomically (``--out``), markdown on stdout.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from spikingjelly.activation_based import functional

from evo_snn.evaluation import energy
from evo_snn.structure import allocation
from evo_snn.analysis.baselines import DEFAULT_RATIOS
from evo_snn.config import load_config
from evo_snn.data import load_splits
from evo_snn.evaluation.fitness import FitnessContext, GenomeFitness, default_device, with_epochs
from evo_snn.structure.genome import Genome, allocation_genome
from evo_snn.structure.pruning import prunable_layers, sparse_copy, weight_magnitudes
from evo_snn.training.teacher import check_split, load_teacher, split_fingerprint, train_teacher
from evo_snn.training.train import cpu_state, predict_logits, samples_processed

PROXIES = ("nll_bn", "acc_bn", "kl_bn", "nll_raw", "acc_raw", "kl_raw")
# a proxy's sign: + when larger means a better allocation (Spearman with truth is then + for a good proxy)
PROXY_SIGN = {"nll_bn": -1, "acc_bn": 1, "kl_bn": -1, "nll_raw": -1, "acc_raw": 1, "kl_raw": -1}
HEURISTICS = ("global", "uniform", "lamp", "erk", "energy_aware")


# ------------------------------------------------------------------ allocations
def random_move(counts: np.ndarray, sizes: np.ndarray, rng: np.random.Generator, lo: float = 0.05,
                hi: float = 0.30, max_ratio: float = 0.95) -> tuple[np.ndarray, float]:
    """A copy of ``counts`` (pruned per layer) with a fraction f ~ U(lo, hi) of the pruned total
    moved between random layers: repeatedly a random layer with pruned weights gives to a
    random other layer with room, until round(f * total) weights have moved (or nothing can
    move). A receiving layer is filled to at most max(max_ratio, its ratio before) of its
    weights (``genome.ratio_max`` of the search space, 0.95 on CIFAR-10: the search never
    empties a layer, and a move that empties one only measures a dead net). The total is
    unchanged and 0 <= z_l <= n_l. Returns (counts, f)."""
    z = np.asarray(counts, dtype=np.int64).copy()
    n = np.asarray(sizes, dtype=np.int64)
    cap = np.maximum(np.floor(max_ratio * n).astype(np.int64), z)
    f = float(rng.uniform(lo, hi))
    left = int(round(f * int(z.sum())))
    for _ in range(10_000):
        if left <= 0:
            break
        src_ok, dst_ok = np.flatnonzero(z > 0), np.flatnonzero(z < cap)
        if src_ok.size == 0 or dst_ok.size == 0 or (src_ok.size == 1 and dst_ok.size == 1 and src_ok[0] == dst_ok[0]):
            break
        src = int(rng.choice(src_ok))
        dst_ok = dst_ok[dst_ok != src]
        if dst_ok.size == 0:
            continue
        dst = int(rng.choice(dst_ok))
        d = min(left, int(z[src]), int(cap[dst] - z[dst]))
        z[src] -= d
        z[dst] += d
        left -= d
    return z, f


def build_allocations(teacher_abs: dict[str, np.ndarray], sparsity: float, synops_pw: dict[str, float],
                      n_random: int, rng: np.random.Generator, methods=HEURISTICS,
                      max_ratio: float = 0.95) -> tuple[dict[str, Genome], dict[str, float]]:
    """({name: Genome}, {random name: moved fraction}) of the heuristics and ``n_random`` random
    moves from global at ``sparsity``; every genome prunes exactly round(s * N) weights,
    magnitude within each layer."""
    out = {m: allocation_genome(m, teacher_abs, sparsity, synops_per_weight=synops_pw) for m in methods}
    sizes = np.array([a.size for a in teacher_abs.values()])
    base = allocation.global_magnitude(teacher_abs, sparsity)
    moved = {}
    for k in range(n_random):
        z, f = random_move(base, sizes, rng, max_ratio=max_ratio)
        masks = allocation.masks_from_counts(teacher_abs, z)
        out[f"random{k}"] = Genome(tuple(teacher_abs), tuple(int(c) / s for c, s in zip(z, sizes)), tuple(masks))
        moved[f"random{k}"] = f
    return out, moved


def from_rounded_ratios(teacher_abs: dict[str, np.ndarray], layers, ratios, pruned: int) -> Genome:
    """The magnitude genome of per-layer ``ratios`` as a results JSON stores them (4 decimals),
    at exactly ``pruned`` weights in all: counts round(ratio x n_l), the rounding remainder taken
    from or given to the largest layers (a few weights at most: the rounding of the ratios)."""
    sizes = np.array([teacher_abs[n].size for n in layers], dtype=np.int64)
    counts = np.minimum(np.round(np.asarray(ratios, dtype=np.float64) * sizes).astype(np.int64), sizes)
    for i in np.argsort(-sizes):
        d = int(pruned) - int(counts.sum())
        if d == 0:
            break
        counts[i] = int(np.clip(counts[i] + d, 0, sizes[i]))
    masks = tuple(allocation.masks_from_counts([teacher_abs[n] for n in layers], counts))
    return Genome(tuple(layers), tuple(int(c) / int(z) for c, z in zip(counts, sizes)), masks)


def pruned_count(g: Genome) -> int:
    return int(sum(int((~m).sum()) for m in g.masks))


# ------------------------------------------------------------------ proxies
def bn_recalibrated(net: nn.Module, batches: list[torch.Tensor]) -> nn.Module:
    """A copy of ``net`` whose BatchNorm running statistics are re-estimated on ``batches``
    (x_seq tensors): stats reset, momentum None (cumulative average), train-mode forwards
    without gradient; returned in eval mode. ``net`` itself is not touched."""
    net = copy.deepcopy(net)
    bns = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    net.train()
    with torch.no_grad():
        for x_seq in batches:
            net(x_seq)
            functional.reset_net(net)
    return net.eval()


def proxy_scores(logits: torch.Tensor, labels: torch.Tensor, teacher_logp: torch.Tensor) -> dict[str, float]:
    """NLL, accuracy and KL(teacher || net) (mean per image) of ``logits`` [N, C]."""
    logp = F.log_softmax(logits.float(), 1)
    return {"nll": float(F.nll_loss(logp, labels).item()),
            "acc": float((logits.argmax(1) == labels).float().mean().item()),
            "kl": float(F.kl_div(logp, teacher_logp, log_target=True, reduction="batchmean").item())}


# ------------------------------------------------------------------ statistics
def spearman(a, b) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    try:
        from scipy.stats import spearmanr

        return float(spearmanr(a, b).statistic)
    except ImportError:  # pandas' rank correlation
        import pandas as pd

        return float(pd.Series(a).corr(pd.Series(b), method="spearman"))


def spearman_ci(a, b, n_boot: int = 1000, seed: int = 0) -> list[float]:
    """Bootstrap 95 % interval of the Spearman correlation (resampling allocations)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(n_boot):
        i = rng.integers(0, len(a), len(a))
        v = spearman(a[i], b[i])
        if np.isfinite(v):
            vals.append(v)
    return [float(np.percentile(vals, 2.5)), float(np.percentile(vals, 97.5))] if vals else [float("nan")] * 2


def summarise(rows: list[dict], n_seeds: int, n_classes: int = 10, chance_factor: float = 1.5) -> dict:
    """The pilot's statistics over one sparsity's rows (one per allocation)."""
    truth = np.array([r["test_mean"] for r in rows])
    by = {r["method"]: r for r in rows}
    gaps = [abs(r["test"][0] - r["test"][1]) for r in rows if n_seeds >= 2]
    out = {
        "seed_noise_median_gap": float(np.median(gaps)) if gaps else None,
        "spread": float(truth.max() - truth.min()),
        "minus_global": {m: [by[m]["test"][i] - by["global"]["test"][i] for i in range(n_seeds)]
                         for m in ("erk", "lamp", "energy_aware", "uniform") if m in by},
        "random_minus_global": [r["test_mean"] - by["global"]["test_mean"] for r in rows if r["method"].startswith("random")],
        "spearman": {}, "spearman_ci": {},
    }
    # the allocations that still learn: a dead net (an emptied path, no spikes) ends at chance
    # whatever the proxy says, and ties at chance weigh on the rank correlation (selected on truth:
    # a secondary view, not a screening rule)
    live = truth > chance_factor / max(n_classes, 1)
    out["live"], out["spearman_live"] = int(live.sum()), {}
    for p in PROXIES:
        x = PROXY_SIGN[p] * np.array([r[p] for r in rows])
        out["spearman"][p] = spearman(x, truth)
        out["spearman_ci"][p] = spearman_ci(x, truth)
        out["spearman_live"][p] = spearman(x[live], truth[live])
    return out


# ------------------------------------------------------------------ the pilot
def get_teacher(args, cfg, splits, device):
    if args.teacher:
        warning = check_split(args.teacher, split_fingerprint(cfg, splits))
        if warning:
            print(f"warning: {warning}", file=sys.stderr)
        model, metrics = load_teacher(args.teacher, cfg, splits, device)
        saved = Path(args.teacher).parent / "metrics.json"  # how it was trained (written by --save-teacher / a run)
        if saved.is_file():
            metrics = {**json.loads(saved.read_text()), **metrics}
        return model, metrics
    model, metrics = train_teacher(cfg, splits, cfg.search.seed, device, progress=args.progress)
    if args.save_teacher:
        d = Path(args.save_teacher)
        d.mkdir(parents=True, exist_ok=True)
        tmp = d / "teacher.pt.tmp"
        torch.save(cpu_state(model), tmp)
        os.replace(tmp, d / "teacher.pt")
        write_json(d / "split.json", split_fingerprint(cfg, splits))
        write_json(d / "metrics.json", metrics)
    return model, metrics


def write_json(path: Path, doc) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1, default=float))
    os.replace(tmp, path)


def default_finetune_steps(cfg, n_train: int) -> int:
    """The training steps ``evo_snn.analysis.baselines`` gives each ratio of ``global_long`` for a search
    of this config's size: (population x (1 + generations)) evaluations of kd.epochs each,
    shared among the ``DEFAULT_RATIOS``."""
    evals = cfg.search.population * (1 + cfg.search.generations)
    search_samples = evals * samples_processed(n_train, cfg.kd.batch_size, cfg.kd.epochs)
    epochs = max(search_samples, 1) / (len(DEFAULT_RATIOS) * max(n_train, 1))
    return max(1, math.ceil(epochs * math.ceil(n_train / cfg.kd.batch_size)))


def run(args) -> dict:
    t_start = time.perf_counter()
    overrides = list(args.set or [])
    if args.teacher_epochs is not None:
        overrides.append(f"teacher.epochs={args.teacher_epochs}")
    overrides.append("search.measure_teacher=false")  # the fine-tune's sparse-teacher pass: measured here as a proxy
    cfg = load_config(args.dataset, args.config, overrides)
    splits = load_splits(cfg.dataset, args.data_root, cfg.data, seed=cfg.split_seed(), progress=args.progress)
    device = default_device()
    teacher, tmetrics = get_teacher(args, cfg, splits, device)
    teacher.requires_grad_(False).eval()
    if args.teacher_only:
        return {"teacher": tmetrics}
    layers = tuple(prunable_layers(teacher, cfg.genome.prunable))
    teacher_abs = weight_magnitudes(teacher, layers)
    n_total = int(sum(a.size for a in teacher_abs.values()))
    x0 = torch.zeros((splits.frame_shape[0], 1, *splits.frame_shape[1:]), device=device)
    synops_pw = energy.synops_per_weight(teacher, x0, layers)
    dense_synops = sum(synops_pw[n] * teacher_abs[n].size for n in layers)

    # fixed subsets: validation images (proxies), training batches (BN), test images (truth)
    rng = np.random.default_rng([cfg.search.seed, 23])
    val_idx = np.sort(rng.permutation(len(splits.val))[: min(args.val_images, len(splits.val))])
    val = splits.val.subset(val_idx)
    bn_idx = rng.permutation(len(splits.train))[: args.bn_batches * args.bn_batch_size]
    bn_batches = []
    for i in range(0, len(bn_idx), args.bn_batch_size):
        x, _ = splits.train[list(bn_idx[i:i + args.bn_batch_size])]
        bn_batches.append(splits.train.to_seq(x, train=False).to(device))
    test = splits.test
    if args.test_images and args.test_images < len(test):
        test = test.subset(np.sort(np.random.default_rng([cfg.search.seed, 2023]).permutation(len(test))[: args.test_images]))
    teacher_logits = predict_logits(teacher, val)
    teacher_logp = F.log_softmax(teacher_logits, 1)
    teacher_val_acc = float((teacher_logits.argmax(1) == val.labels).float().mean())
    teacher_test_acc = float((predict_logits(teacher, test).argmax(1) == test.labels).float().mean())

    steps = args.finetune_steps or default_finetune_steps(cfg, len(splits.train))
    per_epoch = math.ceil(len(splits.train) / cfg.kd.batch_size)
    epochs = (steps - 0.5) / per_epoch  # train_steps runs ceil(epochs * per_epoch) = steps steps
    ctx = FitnessContext(cfg, splits.train, val, splits.frame_shape, splits.num_classes, cpu_state(teacher), layers)
    fitness = GenomeFitness(with_epochs(ctx, epochs), device)

    doc = {"settings": {"dataset": cfg.dataset, "data_root": args.data_root, "model": dataclasses.asdict(cfg.model),
                        "frames": cfg.data.frames, "teacher_epochs": tmetrics.get("epochs", None if args.teacher else cfg.teacher.epochs), "teacher": args.teacher or "trained",
                        "kd_mode": cfg.kd.mode, "kd_lr": cfg.kd.lr, "batch_size": cfg.kd.batch_size,
                        "finetune_steps": steps, "seeds": args.seeds, "random_moves": args.random_moves,
                        "sparsities": args.sparsities, "val_images": len(val), "bn_batches": len(bn_batches),
                        "bn_batch_size": args.bn_batch_size, "test_images": len(test), "train_size": len(splits.train),
                        "prunable_layers": len(layers), "num_classes": splits.num_classes, "prunable_weights": n_total, "threads": torch.get_num_threads(),
                        "device": str(device)},
           "teacher": {**{k: v for k, v in tmetrics.items() if k != "val_curve"}, "val_curve": tmetrics.get("val_curve"),
                       "val_subset_accuracy": teacher_val_acc, "test_accuracy": teacher_test_acc},
           "rows": [], "summary": {}, "cost": {}}
    proxy_s, bn_s, tune_s, test_s, alloc_s = [], [], [], [], []
    # the heuristics at every sparsity first, then the random moves, one of each sparsity in
    # turn: a run stopped early (or by --time-budget-s) still has a table over what it measured
    jobs, random_jobs = [], []
    for si, s in enumerate(args.sparsities):
        allocs, moved = build_allocations(teacher_abs, s, synops_pw, args.random_moves,
                                          np.random.default_rng([cfg.search.seed, 23, si]), args.methods,
                                          cfg.genome.ratio_max)
        for name, g in allocs.items():
            (random_jobs if name in moved else jobs).append((si, s, name, g, moved.get(name)))
    random_jobs.sort(key=lambda j: (int(j[2][len("random"):]), j[0]))
    jobs += random_jobs
    skipped, reused = [], 0
    prior = {}
    if args.reuse:
        old = json.loads(Path(args.reuse).read_text())
        same = ("finetune_steps", "seeds", "val_images", "bn_batches", "bn_batch_size", "test_images", "teacher", "prunable_weights")
        diff = [k for k in same if old["settings"].get(k) != doc["settings"][k]]
        if diff:
            raise SystemExit(f"--reuse {args.reuse}: other settings ({', '.join(diff)})")
        prior = {(r["sparsity"], r["method"], tuple(r["ratios"])): r for r in old["rows"]}
        doc["cost"] = old.get("cost", {})
    truth = {}
    if args.truth_from:  # other proxy settings, the same truth: re-score the proxies, keep the fine-tuned test accuracies
        old = json.loads(Path(args.truth_from).read_text())
        same = ("finetune_steps", "seeds", "test_images", "teacher", "prunable_weights")
        diff = [k for k in same if old["settings"].get(k) != doc["settings"][k]]
        if diff:
            raise SystemExit(f"--truth-from {args.truth_from}: other settings ({', '.join(diff)})")
        truth = {(r["sparsity"], r["method"], tuple(r["ratios"])): r for r in old["rows"]}
        have = {(s, name, tuple(round(r, 4) for r in g.ratios)) for _, s, name, g, _ in jobs}
        jobs += [(args.sparsities.index(r["sparsity"]), r["sparsity"], r["method"], None, r.get("move_fraction"))
                 for k, r in truth.items() if k not in have and r["sparsity"] in args.sparsities]  # random moves rebuilt from their ratios
        doc["settings"]["truth_from"] = str(args.truth_from)
    for si, s, name, g, move_fraction in jobs:
        truth_key = None
        if g is None:  # a row of --truth-from (a random move): its allocation rebuilt from its ratios
            truth_key, r = next((k, r) for k, r in truth.items() if k[0] == s and k[1] == name)
            g = from_rounded_ratios(teacher_abs, layers, r["ratios"], r["pruned"])
        key = truth_key or (s, name, tuple(round(r, 4) for r in g.ratios))
        if key in prior:  # the same allocation, measured with the same settings by an earlier run
            doc["rows"].append({**prior[key], "reused_from": str(args.reuse)})
            reused += 1
            continue
        elapsed = time.perf_counter() - t_start
        if not truth and args.time_budget_s and move_fraction is not None and alloc_s and elapsed + max(alloc_s) > args.time_budget_s:
            skipped.append(f"{s}:{name}")
            continue
        target = allocation.target_count(s, n_total)
        row = {"sparsity": s, "method": name, "pruned": pruned_count(g), "target": target,
               "ratios": [round(r, 4) for r in g.ratios],
               "synops_kept": float(sum(synops_pw[n] * m.sum() for n, m in zip(layers, g.masks)) / dense_synops)}
        if move_fraction is not None:
            row["move_fraction"] = move_fraction
        t0 = time.perf_counter()
        sparse = sparse_copy(teacher, g.mask_dict())
        raw = proxy_scores(predict_logits(sparse, val), val.labels, teacher_logp)
        t1 = time.perf_counter()
        recal = bn_recalibrated(sparse, bn_batches)
        t2 = time.perf_counter()
        bn = proxy_scores(predict_logits(recal, val), val.labels, teacher_logp)
        t3 = time.perf_counter()
        proxy_s.append(t3 - t1)
        bn_s.append(t2 - t1)
        row.update({f"{k}_raw": v for k, v in raw.items()})
        row.update({f"{k}_bn": v for k, v in bn.items()})
        row["test"], row["finetune_val"] = [], []
        if truth:
            if key not in truth:
                raise SystemExit(f"--truth-from {args.truth_from}: no row for {s}:{name}")
            row["test"], row["finetune_val"] = list(truth[key]["test"]), list(truth[key]["finetune_val"])
        for seed in range(0 if truth else args.seeds):
            t4 = time.perf_counter()
            res = fitness(g, 1000 * si + seed)  # the same seeds for every allocation at a sparsity: paired
            t5 = time.perf_counter()
            student = fitness.build()
            student.load_state_dict(res.student_state)
            student.eval()
            acc = float((predict_logits(student, test).argmax(1) == test.labels).float().mean())
            t6 = time.perf_counter()
            tune_s.append(t5 - t4)
            test_s.append(t6 - t5)
            row["test"].append(acc)
            row["finetune_val"].append(float(res.metrics["accuracy"]))
        row["test_mean"] = float(np.mean(row["test"]))
        alloc_s.append(time.perf_counter() - t0)
        doc["rows"].append(row)
        if args.progress:
            print(f"s={s} {name:>12}: pruned {row['pruned']} (target {target}) acc_bn {row['acc_bn']:.3f} "
                  f"nll_bn {row['nll_bn']:.3f} acc_raw {row['acc_raw']:.3f} test {row['test']} "
                  f"({alloc_s[-1]:.0f} s; {(time.perf_counter() - t_start) / 60:.1f} min in all)", file=sys.stderr, flush=True)
        doc["summary"] = {str(x): summarise([r for r in doc["rows"] if r["sparsity"] == x], args.seeds,
                                                          splits.num_classes)
                          for x in args.sparsities if any(r["sparsity"] == x for r in doc["rows"])}
        doc["cost"] = {"proxy_bn_s": float(np.median(proxy_s)), "bn_recalibration_s": float(np.median(bn_s)),
                       "finetune_s": float(np.median(tune_s)), "test_s": float(np.median(test_s)),
                       "wall_s": time.perf_counter() - t_start}
        if args.out:
            write_json(args.out, doc)  # partial results survive an interrupted run
    doc["skipped"], doc["reused"] = skipped, reused
    if not doc["summary"] or reused:
        doc["summary"] = {str(x): summarise([r for r in doc["rows"] if r["sparsity"] == x], args.seeds,
                                                          splits.num_classes)
                          for x in args.sparsities if any(r["sparsity"] == x for r in doc["rows"])}
    if skipped:
        print(f"--time-budget-s: skipped {len(skipped)} random allocation(s): {', '.join(skipped)}", file=sys.stderr)
    doc["cost"]["wall_s"] = time.perf_counter() - t_start
    if args.out:
        write_json(args.out, doc)
    return doc


def fmt(v, d=3, sign=False) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    return f"{v:+.{d}f}" if sign else f"{v:.{d}f}"


def markdown(doc: dict) -> str:
    ss = list(doc["summary"])
    lines = ["| | " + " | ".join(f"s = {s}" for s in ss) + " |", "|---|" + "---|" * len(ss)]

    def add(label, f):
        lines.append(f"| {label} | " + " | ".join(f(doc["summary"][s]) for s in ss) + " |")

    add("seed noise (median gap between seeds)", lambda x: fmt(x["seed_noise_median_gap"], 4))
    add("spread across allocations", lambda x: fmt(x["spread"], 3))
    for m in ("erk", "lamp", "energy_aware", "uniform"):
        add(f"{m} − global, per seed", lambda x, m=m: " / ".join(fmt(v, 3, True) for v in x["minus_global"].get(m, [])))
    add("random moves − global (mean truth)", lambda x: (f"{fmt(min(x['random_minus_global']), 3, True)} to "
                                                         f"{fmt(max(x['random_minus_global']), 3, True)}")
        if x["random_minus_global"] else "n/a")
    names = {"nll_bn": "NLL after BN recalibration", "acc_bn": "accuracy after BN recalibration",
             "kl_bn": "KL to dense teacher after BN recalibration", "nll_raw": "NLL, no recalibration",
             "acc_raw": "accuracy, no recalibration", "kl_raw": "KL, no recalibration"}
    for p in PROXIES:
        add(f"Spearman with truth: {names[p]}",
            lambda x, p=p: f"{fmt(x['spearman'][p], 2, True)} [{fmt(x['spearman_ci'][p][0], 2, True)}, "
                           f"{fmt(x['spearman_ci'][p][1], 2, True)}]")
    for p in ("nll_bn", "acc_bn", "kl_bn", "acc_raw"):
        add(f"Spearman, allocations above 1.5 × chance only: {names[p]}",
            lambda x, p=p: f"{fmt(x.get('spearman_live', {}).get(p), 2, True)} (n = {x.get('live', 'n/a')})")
    c = doc["cost"]
    out = ["\n".join(lines), "",
           f"Cost per allocation ({doc['settings']['threads']} thread(s)): BN-recalibrated proxy {c['proxy_bn_s']:.1f} s "
           f"(of which recalibration {c['bn_recalibration_s']:.1f} s); one fine-tune {c['finetune_s']:.1f} s "
           f"+ {c['test_s']:.1f} s of test ({doc['settings']['test_images']} images); whole run {c['wall_s'] / 60:.1f} min.", ""]
    rows = doc["rows"]
    have = [m for m in HEURISTICS if any(r["method"] == m for r in rows)]
    out += ["SynOps kept, as a fraction of the dense net's (dense SynOps per weight x kept weights, equal firing rates):", "",
            "| | " + " | ".join(have) + " |", "|---|" + "---|" * len(have)]
    for s in ss:
        by = {r["method"]: r for r in rows if str(r["sparsity"]) == s}
        out.append(f"| s = {s} | " + " | ".join(f"{by[m]['synops_kept']:.3f}" if m in by else "n/a" for m in have) + " |")
    out.append("")
    hdr = "| s | method | pruned (= target) | SynOps kept | acc raw | acc BN | NLL BN | KL BN | test per seed | test mean |"
    out += [hdr, "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['sparsity']} | {r['method']} | {r['pruned']} ({'=' if r['pruned'] == r['target'] else '≠'}) | "
                   f"{r['synops_kept']:.3f} | {r['acc_raw']:.3f} | {r['acc_bn']:.3f} | {r['nll_bn']:.3f} | "
                   f"{r['kl_bn']:.3f} | {' / '.join(f'{v:.4f}' for v in r['test'])} | {r['test_mean']:.4f} |")
    return "\n".join(out)


def floats(s: str) -> list[float]:
    return [float(v) for v in s.split(",") if v.strip()]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="cifar10")
    p.add_argument("--data-root", default=None)
    p.add_argument("--config", default=None, help="a search-space YAML (default search_spaces/<dataset>.yaml)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="config override, repeatable")
    p.add_argument("--teacher", default=None, help="a dense teacher state_dict (a run's teacher/teacher.pt)")
    p.add_argument("--teacher-epochs", type=int, default=None, help="replaces teacher.epochs when training one")
    p.add_argument("--save-teacher", default=None, help="save the trained teacher (teacher.pt, split.json) in DIR")
    p.add_argument("--teacher-only", action="store_true", help="train (and save) the teacher, then stop")
    p.add_argument("--sparsities", type=floats, default=[0.85, 0.95])
    p.add_argument("--methods", type=lambda v: [m for m in v.split(",") if m], default=list(HEURISTICS),
                   help=f"allocation rules, from {','.join(HEURISTICS)} (global is needed for the table)")
    p.add_argument("--random-moves", type=int, default=4, help="K random allocations per sparsity")
    p.add_argument("--seeds", type=int, default=2, help="fine-tune seeds per allocation")
    p.add_argument("--finetune-steps", type=int, default=None,
                   help="default: global_long's steps per ratio for a search of the config's size (102 for the CIFAR-10 space before issue 23, 84 KD evaluations: pass --finetune-steps 102 to rerun the pilot of RESULTS.md)")
    p.add_argument("--val-images", type=int, default=1000)
    p.add_argument("--bn-batches", type=int, default=20)
    p.add_argument("--bn-batch-size", type=int, default=64)
    p.add_argument("--test-images", type=int, default=0, help="a fixed subset of the test split (0 = all)")
    p.add_argument("--time-budget-s", type=float, default=0,
                   help="skip the remaining random moves once the next one would end past this many seconds (0 = off)")
    p.add_argument("--out", default=None, help="results JSON (written atomically)")
    p.add_argument("--reuse", default=None, metavar="JSON",
                   help="take the rows of an earlier run's JSON whose allocation (sparsity, method, ratios) and settings match")
    p.add_argument("--truth-from", default=None, metavar="JSON",
                   help="re-score only the proxies (other --val-images / --bn-batches) of an earlier run's allocations "
                        "and take their fine-tuned test accuracies from its JSON (same teacher, steps, seeds, test images)")
    p.add_argument("--render", default=None, metavar="JSON", help="print the tables of an earlier run's JSON and stop")
    p.add_argument("--quiet", dest="progress", action="store_false")
    return p


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    if args.render:
        doc = json.loads(Path(args.render).read_text())
        n_classes = int(doc["settings"].get("num_classes", 10))
        doc["summary"] = {s: summarise([r for r in doc["rows"] if str(r["sparsity"]) == s], doc["settings"]["seeds"], n_classes)
                          for s in doc["summary"]}  # recomputed from the rows (this version's statistics)
        print(markdown(doc))
        return doc
    if args.seeds < 1:
        raise SystemExit("--seeds must be >= 1")
    if "global" not in args.methods or set(args.methods) - set(HEURISTICS):
        raise SystemExit(f"--methods: from {','.join(HEURISTICS)}, global included")
    doc = run(args)
    if not args.teacher_only:
        print(markdown(doc))
    return doc


if __name__ == "__main__":
    main()
