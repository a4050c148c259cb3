"""The compute accounting of ``evo_snn.analysis.baselines``: what the search spent, what each
``_long`` baseline and the fine-tuned search members get, and which members are fine-tuned.

Compute is counted in training samples processed (``evo_snn.training.train.samples_processed``),
screening forwards in training-sample equivalents; the dense teacher is not counted.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

from evo_snn.atomic import read_jsonl
from evo_snn.structure import allocation
from evo_snn.structure.genome import Genome
from evo_snn.training.train import samples_processed
from evo_snn.analysis.methods import Member


def finetune_budget(search_samples: float, share: float, n_ratios: int) -> dict:
    """The fine-tune-once budget: {finetune_share f, search_compute S, budget B, per_member, k}
    with B = S / (1 - f) (S for f = 0), per_member = B / n_ratios (what each ``_long`` student
    gets), k = max(1, floor(f x n_ratios)) members to fine-tune (0 for f = 0). Raises
    ValueError for f outside [0, 1) or n_ratios < 1."""
    f, n = float(share), int(n_ratios)
    if not 0.0 <= f < 1.0:
        raise ValueError(f"finetune_share must be in [0, 1), got {share!r}")
    if n < 1:
        raise ValueError("need at least one ratio")
    S = float(search_samples)
    B = S if f == 0 else S / (1.0 - f)
    k = 0 if f == 0 else max(1, math.floor(f * n + 1e-9))
    return {"finetune_share": f, "search_compute": S, "budget": B, "per_member": B / n, "k": k}


def finetune_targets(ratios, k: int) -> list[tuple[int, float]]:
    """The k target sparsities of the fine-tuned members, spread like ``ratios``: the sorted
    ratios at positions floor((i + 1/2) x n / k), i < k (k = n: all of them; k = 1: the upper
    median), as (index of the ratio in ``ratios``, ratio), ascending."""
    order = sorted(range(len(ratios)), key=lambda i: (float(ratios[i]), i))
    n, k = len(order), min(int(k), len(order))
    return [(order[j], float(ratios[order[j]])) for j in
            (min(n - 1, math.floor((i + 0.5) * n / k)) for i in range(k))]


def _count_sparsity(target: float, genome: Genome) -> float:
    """The sparsity of exactly round(target x N) pruned weights over the genome's N weights."""
    n = int(sum(m.size for m in genome.masks))
    return allocation.target_count(float(target), n) / max(n, 1)


def select_finetune(members: list[Member], targets: list[tuple[int, float]]) -> list[tuple[Member, int, float]]:
    """The search members to fine-tune, chosen on **validation** metrics only (``metrics``
    accuracy and sparsity; a member's ``test`` is never read): for each target (ascending) the
    not yet chosen member (one per genome) of highest validation accuracy among those whose
    validation sparsity is >= the target (ties: the sparser, then the uid), or when none is,
    the sparsest left (ties: the more accurate). Returns [(member, ratio index, target)];
    fewer than the targets when the archive has fewer distinct genomes."""
    pool, seen = [], set()
    for m in members:
        if m.ok and m.genome.key not in seen and m.metrics.get("accuracy") is not None:
            seen.add(m.genome.key)
            pool.append(m)
    sp = lambda m: float(m.metrics.get("sparsity", m.genome.sparsity))  # noqa: E731
    out = []
    for j, t in sorted(targets, key=lambda x: x[1]):
        if not pool:
            break
        # "at the target" is the target's exact pruned count round(t x N) (allocation.target_count), so a genome
        # built at t (e.g. 78,836 of 175,192 weights for t = 0.45: sparsity 0.4499977) counts as >= t
        above = [m for m in pool if sp(m) >= _count_sparsity(t, m.genome) - 1e-12]
        if above:
            best = max(above, key=lambda m: (float(m.metrics["accuracy"]), sp(m), m.uid))
        else:
            best = max(pool, key=lambda m: (sp(m), float(m.metrics["accuracy"]), m.uid))
        pool.remove(best)
        out.append((best, j, t))
    return out


def search_compute(path: Path, n_train: int, kd, last_gen: int) -> tuple[int, int]:
    """(evaluations, training samples) the search spent, from its evaluations.jsonl ``path``
    up to generation ``last_gen`` (the checkpoint's), ``n_train`` training samples, ``kd`` the
    run's ``KDConfig`` (cached rows cost nothing; rows without ``train_samples`` are counted
    from kd.batch_size and kd.epochs).

    A multi-fidelity search (``search.fidelity_fraction`` < 1) has one row per rung: a
    rung-0 row counts the samples of its b x kd.epochs, a continuation row those of its
    (1 - b) x kd.epochs (``train_samples``), so a promoted genome is counted once in
    full, b x S + (1 - b) x S; a failed row counts its ``fidelity_spent`` x kd.epochs.
    Each row is one evaluation. Forward-only screening rows (``rung: "screen"``,
    ``search.screen``) are not evaluations, but their forwards count, in training-sample
    equivalents (``counted_samples``: forward samples x the run's measured
    ``forward_cost_ratio``), so the ``_long`` baselines get the same counted compute."""
    n = samples = 0
    rows, skipped = read_jsonl(path)  # a line that is not JSON is skipped, as pareto and --resume do
    if skipped:
        print(f"note: {path}: {skipped} line(s) not JSON (cut short by a crash?), not counted", file=sys.stderr)
    from evo_snn.evaluation.screening import row_counted_samples

    for row in (r for r in rows if isinstance(r, dict)):
        screened = row_counted_samples(row)  # a forward-only screening row, in training-sample equivalents
        if screened is not None:
            if row.get("gen", 0) <= last_gen:
                samples += int(round(screened))
            continue
        if row.get("status") in ("ok", "failed") and row.get("gen", 0) <= last_gen:
            n += 1
            spent = samples_processed(n_train, kd.batch_size, kd.epochs * float(row.get("fidelity_spent", 1.0)))
            samples += int(row.get("train_samples", spent)) if row.get("status") == "ok" else spent
    return n, samples


def random_evaluations(cfg, n_train: int, n_search: int, search_samples: int) -> int:
    """How many random genomes the ``random`` baseline evaluates by default (``cfg`` the run's
    ``Config``, ``n_train`` training samples): as many as the search's evaluations, or for a
    multi-fidelity search as many full evaluations as its training samples pay for
    (``ceil(samples / S)``), so that it spends the same compute."""
    from evo_snn.evaluation.fidelity import enabled

    if not enabled(cfg.search):
        return n_search
    per_eval = samples_processed(n_train, cfg.kd.batch_size, cfg.kd.epochs)
    return max(1, math.ceil(search_samples / max(per_eval, 1)))


def long_epochs(samples: float, n: int, n_train: int) -> float:
    """kd.epochs of each of the n students of a ``_long`` method spending ``samples`` in all
    (``samples`` / (n x ``n_train``, the train size)); the fine-tuned search members get the same."""
    return max(samples, 1) / (n * max(n_train, 1))
