"""Counted cost of a forward-only screened candidate against one KD evaluation (issue 23).

    python benchmarks/screening_cost.py --dataset cifar10 --data-root ../shared/data/cifar10_jpeg \\
        [--teacher RUN/teacher/teacher.pt | --teacher-epochs N] [--screen nll] \\
        [--candidates 12] [--kd-evals 2] [--set search.screen_samples=1000 ...] [--out cost.json]
    python benchmarks/screening_cost.py --dataset synthetic            # seconds

In one run, on the data set's search space (``search_spaces/<dataset>.yaml`` or ``--config``):

1. A dense teacher: ``--teacher PATH`` (a run's teacher/teacher.pt), or trained for
   ``--teacher-epochs`` N > 0 with ``evo_snn.training.teacher.train_teacher``, or (the default, N = 0)
   a fresh untrained one. The cost counted here does not depend on accuracy (the same
   forwards and training steps happen whatever the weights), so an untrained teacher is
   acceptable for the cost; the table says which teacher it used.
2. ``Screener`` (``evo_snn.evaluation.screening``, as the search builds it) measures
   ``forward_cost_ratio`` (a timed forward batch against a timed training batch) and draws
   its fixed BN batches and validation subset.
3. ``--candidates`` P random genomes (``GenomeOps.random``, one generation's children) are
   screened with the multi-step selection of ``StructureSearch.screen``: every candidate
   is BN-recalibrated and scored on the first ``search.screen_first_share`` of the subset;
   the best ``k_keep = max(promote, ceil(screen_keep x P))`` (by screening quality: only how
   many are kept changes the cost) on the rest. Per candidate: forward samples (BN
   recalibration included), counted samples (forward samples x forward_cost_ratio,
   training-sample equivalents, as evaluations.jsonl's ``counted_samples``) and seconds.
4. ``--kd-evals`` KD evaluations (``GenomeFitness``: kd.epochs x train size samples of KD
   training, then its validation pass, as the search runs it) of other random genomes: the
   counted samples (``train_samples``) and seconds of each.

Prints, side by side, the average counted cost and seconds of a screened candidate and of
a KD evaluation, their ratios, and per generation of P children the cost with screening
(P screens + screen_promote KD evaluations) against P KD evaluations. ``--out`` writes
the numbers as JSON. The test split is never read.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from evo_snn.config import load_config  # noqa: E402
from evo_snn.data import load_splits  # noqa: E402
from evo_snn.evaluation.fitness import FitnessContext, GenomeFitness, default_device  # noqa: E402
from evo_snn.structure.genome import GenomeOps  # noqa: E402
from evo_snn.models import build_model  # noqa: E402
from evo_snn.structure.pruning import prunable_layers, weight_magnitudes  # noqa: E402
from evo_snn.evaluation.screening import Screener, promote_count  # noqa: E402
from evo_snn.training.train import cpu_state, samples_processed  # noqa: E402

TARGET = 10.0  # issue 23: a screened candidate >= 10x cheaper than a KD evaluation


def get_teacher(args, cfg, splits, device):
    """(model, description): loaded, briefly trained, or fresh and untrained."""
    if args.teacher:
        from evo_snn.training.teacher import load_teacher

        model, _ = load_teacher(args.teacher, cfg, splits, device)
        return model, f"loaded from {args.teacher}"
    if args.teacher_epochs > 0:
        from evo_snn.training.teacher import train_teacher

        model, m = train_teacher(cfg, splits, cfg.search.seed, device, progress=False)
        return model, f"trained {cfg.teacher.epochs} epoch(s), val acc {m.get('val_accuracy', float('nan')):.3f}"
    torch.manual_seed(cfg.search.seed)
    return build_model(cfg.model, splits.frame_shape, splits.num_classes).to(device), "fresh, untrained (cost only)"


def screen_generation(screener: Screener, genomes, search, group: int = 1) -> dict:
    """Multi-step screening of ``genomes`` as ``StructureSearch.screen`` does it, ``group``
    candidates at a time as one grouped net (``search.screen_group``; 1 = one at a time);
    returns the per-candidate forward samples, seconds and scores, and the selection's sizes."""
    n = len(screener.val_index)
    P = len(genomes)
    n0 = min(n, max(1, math.ceil(float(search.screen_first_share) * n - 1e-9)))
    k_promote = min(P, promote_count(search))
    k_keep = min(P, max(k_promote, math.ceil(float(search.screen_keep) * P - 1e-9)))
    cands = []
    t0 = time.perf_counter()
    for i in range(0, P, group):
        chunk = screener.start_group(list(genomes[i:i + group]))
        screener.extend_group(chunk, n0)
        cands += chunk
    bn_forwards = cands[0].forward_samples - n0
    keep = sorted(range(P), key=lambda i: -screener.quality(cands[i]))[:k_keep]
    if n0 < n:
        for i in range(0, len(keep), group):
            screener.extend_group([cands[j] for j in keep[i:i + group]], n)
    return {"candidates": P, "subset": n, "first_step": n0, "keep": k_keep, "promote": k_promote, "group": group,
            "bn_forwards": int(bn_forwards), "wall_s": time.perf_counter() - t0, "keep_index": keep,
            "forward_samples": [int(c.forward_samples) for c in cands], "seconds": [float(c.seconds) for c in cands],
            "scores": [float(c.score()) for c in cands]}


def run(args) -> dict:
    t_start = time.perf_counter()
    torch.set_num_threads(max(1, args.threads))
    overrides = list(args.set or []) + [f"search.screen={args.screen}"]
    cfg = load_config(args.dataset, args.config, overrides)
    splits = load_splits(cfg.dataset, args.data_root, cfg.data, seed=cfg.split_seed(), progress=False)
    device = default_device()
    teacher, teacher_desc = get_teacher(args, cfg, splits, device)
    teacher.requires_grad_(False).eval()
    layers = tuple(prunable_layers(teacher, cfg.genome.prunable))
    if cfg.kd.mode == "ann":
        raise SystemExit("kd.mode 'ann' needs the run's ANN twin; measure with --set kd.mode=sparse (the same KD step)")
    ctx = FitnessContext(cfg, splits.train, splits.val, splits.frame_shape, splits.num_classes, cpu_state(teacher),
                         layers)
    ops = GenomeOps(weight_magnitudes(teacher, layers), cfg.genome)
    rng = np.random.default_rng([cfg.search.seed, 2301])
    P = args.candidates or cfg.search.population

    t0 = time.perf_counter()
    screener = Screener(ctx, device)  # measures forward_cost_ratio, draws the fixed batches and subset
    setup_s = time.perf_counter() - t0
    ratio = screener.forward_cost_ratio
    genomes = [ops.random(rng) for _ in range(P)]
    sc = screen_generation(screener, genomes, cfg.search)
    grouped = None
    if args.group > 1:  # the same candidates as grouped nets of args.group (search.screen_group), timed beside
        gr = screen_generation(screener, genomes, cfg.search, group=args.group)
        solo_again = screen_generation(screener, genomes, cfg.search)  # solo once more: the load may change
        grouped = {"group": args.group, "wall_s": gr["wall_s"], "solo_wall_s": [sc["wall_s"], solo_again["wall_s"]],
                   "speedup": float(np.mean([sc["wall_s"], solo_again["wall_s"]]) / max(gr["wall_s"], 1e-12)),
                   "max_score_diff": float(np.max(np.abs(np.subtract(gr["scores"], sc["scores"])))),
                   "same_keep": sorted(gr["keep_index"]) == sorted(sc["keep_index"]),
                   "same_forward_samples": gr["forward_samples"] == sc["forward_samples"]}
    fwd = np.asarray(sc["forward_samples"], dtype=float)
    screen = {"forward_samples": float(fwd.mean()), "counted_samples": float(fwd.mean() * ratio),
              "seconds": float(np.mean(sc["seconds"]))}

    fitness = GenomeFitness(ctx, device)
    kd_rows = []
    for i in range(max(1, args.kd_evals)):
        g = ops.random(rng)
        t0 = time.perf_counter()
        res = fitness(g, int(rng.integers(2**31)))
        kd_rows.append({"seconds": time.perf_counter() - t0, "train_samples": int(res.metrics["train_samples"])})
    expected = samples_processed(len(splits.train), cfg.kd.batch_size, cfg.kd.epochs)
    kd = {"counted_samples": float(np.mean([r["train_samples"] for r in kd_rows])),
          "seconds": float(np.mean([r["seconds"] for r in kd_rows])), "expected_samples": expected}
    cheaper = {"counted": kd["counted_samples"] / max(screen["counted_samples"], 1e-12),
               "seconds": kd["seconds"] / max(screen["seconds"], 1e-12)}
    k_p = sc["promote"]
    gen = {"with_screening_counted": P * screen["counted_samples"] + k_p * kd["counted_samples"],
           "kd_only_counted": P * kd["counted_samples"],
           "with_screening_s": P * screen["seconds"] + k_p * kd["seconds"], "kd_only_s": P * kd["seconds"]}
    return {"dataset": cfg.dataset, "model": cfg.model.name, "width": cfg.model.width, "frames": cfg.data.frames,
            "train_size": len(splits.train), "val_size": len(splits.val), "teacher": teacher_desc,
            "threads": torch.get_num_threads(), "device": str(device), "screen": cfg.search.screen,
            "kd_mode": cfg.kd.mode, "kd_epochs": cfg.kd.epochs, "batch_size": cfg.kd.batch_size,
            "screen_bn_batches": cfg.search.screen_bn_batches, "screen_samples": cfg.search.screen_samples,
            "screen_first_share": cfg.search.screen_first_share, "screen_keep": cfg.search.screen_keep,
            "forward_cost_ratio": ratio, "screener_setup_s": setup_s, "selection": sc, "screened": screen,
            "kd_evaluation": kd, "kd_rows": kd_rows, "cheaper": cheaper, "generation": gen, "grouped": grouped,
            "target": TARGET, "meets_target": cheaper["counted"] >= TARGET, "wall_s": time.perf_counter() - t_start}


def format_table(d: dict) -> str:
    sc, s, k, c, g = d["selection"], d["screened"], d["kd_evaluation"], d["cheaper"], d["generation"]
    lines = [
        f"{d['dataset']}: {d['model']} width {d['width']:g}, T={d['frames']}, train {d['train_size']}, val {d['val_size']}; "
        f"teacher {d['teacher']}; {d['threads']} thread(s) on {d['device']}",
        f"screen={d['screen']}: {d['screen_bn_batches']} BN batches x {d['batch_size']} = {sc['bn_forwards']} forwards, "
        f"subset {sc['subset']} val images; multi-step: {sc['candidates']} candidates on the first {sc['first_step']}, "
        f"the best {sc['keep']} on the rest ({sc['subset'] - sc['first_step']}), {sc['promote']} promoted to KD",
        f"forward_cost_ratio (training-sample equivalents per forward sample): {d['forward_cost_ratio']:.4f}",
        "",
        "| per candidate | forward samples | counted (training-sample equivalents) | seconds |",
        "|---|---|---|---|",
        f"| screened (multi-step, mean of {sc['candidates']}) | {s['forward_samples']:.0f} | {s['counted_samples']:.1f} | "
        f"{s['seconds']:.3f} |",
        f"| one KD evaluation (kd.epochs {d['kd_epochs']:g} x train {d['train_size']}, kd={d['kd_mode']}; "
        f"mean of {len(d['kd_rows'])}) | - | {k['counted_samples']:.0f} | {k['seconds']:.3f} |",
        f"| KD / screened | | **{c['counted']:.1f}x** | **{c['seconds']:.1f}x** |",
        "",
        f"per generation of {sc['candidates']}: screening + {sc['promote']} KD = {g['with_screening_counted']:.0f} counted "
        f"samples ({g['with_screening_s']:.1f} s) against {g['kd_only_counted']:.0f} ({g['kd_only_s']:.1f} s) for KD only",
        f"target >= {d['target']:g}x cheaper (counted): {'met' if d['meets_target'] else 'NOT met'}; wall {d['wall_s']:.0f} s",
    ]
    gr = d.get("grouped")
    if gr:
        lines += ["", f"grouped screening (search.screen_group={gr['group']}), the same {sc['candidates']} candidates, "
                  f"multi-step as above: {gr['wall_s']:.2f} s against {gr['solo_wall_s'][0]:.2f} / {gr['solo_wall_s'][1]:.2f} s "
                  f"one at a time (before / after): **{gr['speedup']:.2f}x**; max |score difference| "
                  f"{gr['max_score_diff']:.2e}, same kept candidates: {gr['same_keep']}, "
                  f"same counted forwards: {gr['same_forward_samples']}"]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python benchmarks/screening_cost.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="cifar10")
    p.add_argument("--data-root", default=None)
    p.add_argument("--config", default=None, help="a search-space YAML (default search_spaces/<dataset>.yaml)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="config override, repeatable")
    p.add_argument("--teacher", default=None, help="a dense teacher state_dict (a run's teacher/teacher.pt)")
    p.add_argument("--teacher-epochs", type=int, default=0,
                   help="train a teacher this many epochs (replaces teacher.epochs); 0 (default) = a fresh untrained "
                   "one, acceptable for the cost (it does not depend on accuracy)")
    p.add_argument("--screen", default="nll", choices=("nll", "kl", "bn_accuracy"), help="the screening score (default nll)")
    p.add_argument("--candidates", type=int, default=0, help="children screened (default: search.population)")
    p.add_argument("--group", type=int, default=1,
                   help="also screen the same candidates K at a time as grouped nets (search.screen_group) and time both")
    p.add_argument("--kd-evals", type=int, default=2, help="KD evaluations timed (default 2)")
    p.add_argument("--threads", type=int, default=int(os.environ.get("EVO_SNN_THREADS", "1") or 1),
                   help="torch threads (default $EVO_SNN_THREADS or 1)")
    p.add_argument("--out", default=None, help="also write the numbers as JSON")
    return p


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    if args.teacher_epochs > 0:
        args.set = list(args.set or []) + [f"teacher.epochs={args.teacher_epochs}"]
    doc = run(args)
    print(format_table(doc))
    if args.out:
        out = Path(args.out)
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(json.dumps(doc, indent=1, default=float))
        os.replace(tmp, out)
    return doc


if __name__ == "__main__":
    main()
