"""``python -m evo_snn.baselines RUN_DIR``: the search against one-shot pruning, on test data.

A structure search is worth running only if its front beats what a user gets by
pruning the teacher once by weight magnitude, at the same compute. This stage
answers that for a finished run, with the run's own fitness (teacher, KD settings,
per-genome budget, seed scheme):

- ``uniform``: every layer pruned by its own |W| at one ratio, for each ``--ratios``;
- ``global``: one |W| threshold over all prunable weights (Eq. 3 of the sparse-KD
  paper applied globally) at each ``--ratios`` sparsity;
- ``random``: random genomes (``GenomeOps.random``), as many as the search evaluated;
- ``global_long``: ``global`` at equal compute: each ratio's student is KD-trained for
  the search's training samples divided by the number of ratios (kd.epochs scaled up),
  what a user with the search's budget would do instead of searching;
- ``lamp``, ``erk``, ``energy_aware`` (``evo_snn.structure.allocation``): other per-layer allocations
  of the same exact number of pruned weights at each ``--ratios`` sparsity, magnitude
  pruning within each layer: LAMP scores (Lee et al. 2021) under one global threshold,
  Erdős–Rényi-Kernel densities (RigL, Evci et al. 2020), and one global threshold on
  |W| / (the layer's dense SynOps per weight per sample, measured on the teacher); each
  trained with ``global``'s seed at the same ratio, so they differ from it in the
  allocation only. ``lamp_long``, ``erk_long``, ``energy_aware_long``: the same genomes at
  equal compute, exactly as ``global_long`` is to ``global`` (and with its seeds);
- ``global_matched``: ``global`` at each search member's sparsity, paired with that member
  (same seed, hence the same batch order when retrained). With ``--final-epochs E`` both
  sides are retrained from their genomes for the same E epochs, so a pair differs only in
  its mask: the paired test-accuracy difference (``paired`` in comparison.json) says whether
  the search found better structures than global magnitude pruning at equal training.

Protocol (the same rule for the search and every baseline):

1. each genome is KD-trained and scored on the **validation** split (``GenomeFitness``);
2. a method's members are its validation-non-dominated points (the search: its archive);
3. with ``search.final_epochs > 0`` each member is retrained from its genome for that
   many KD epochs (same KD settings, the member's own seed) - the baselines get the
   same retraining;
4. each member's student is measured once on the **test** split; nothing is selected
   on test accuracy.

Two fronts, each with the protocol above:

- **sparsity front** (accuracy, sparsity), both maximised, hypervolume reference (0, 0):
  a method's members are its validation-non-dominated points in (accuracy, sparsity)
  (``selected``);
- **energy front** (accuracy, 1 - energy fraction): the energy fraction is the student's
  estimated energy per sample over its dense bound (``EnergyReport.energy_fraction``, the
  ``energy`` objective of the search, ``energy.e_ac_pj`` / ``energy.e_mac_pj`` of the run).
  A method's members are its validation-non-dominated points in (accuracy, energy
  fraction on the validation pass, as the fitness measured it: pareto.csv's
  ``energy_fraction``) (``selected_energy``); the search picks them among its archive.
  On test, the energy fraction is counted (``evo_snn.evaluation.energy.EnergyCounter``) on the same
  test pass that measures the accuracy, and the test hypervolume is ``nsga.hypervolume``
  of (accuracy maximised, energy fraction minimised) with reference (0, the run's
  ``search.hv_reference['energy']``, default 1), i.e. the area in (accuracy,
  1 - energy fraction) above (0, 1 - reference): with the default reference, from (0, 0).
  ``hypervolume_dense_ref`` takes the dense teacher's validation energy fraction as the
  energy reference instead (``energy_hv_reference_dense``), since spiking nets spend a few
  percent of the dense bound and with reference 1 the hypervolume is nearly the best
  accuracy. Caveat: with accuracy reference 0, a silent student (no spikes, energy ~0, chance
  accuracy) still adds chance x reference to the energy front's hypervolume.

**Fine-tune once** (``search.finetune_share`` f, or ``--finetune-share``; default 0.85 when
the run screened, ``search.screen`` != 'none', else 0: no fine-tuning, the comparison exactly
as before). With f > 0 and n = len(--ratios) (``finetune_budget``):

- S = the search's counted compute (``search_compute``: KD training samples plus screening
  forwards in training-sample equivalents), B = S / (1 - f) the total budget, per_member =
  B / n;
- every ``_long`` baseline spends B (each of its n students per_member samples: kd.epochs
  = per_member / train size) instead of S;
- ``search_finetuned``: k = max(1, floor(f x n)) members of the search's archive, chosen on
  **validation** only (``finetune_targets`` / ``select_finetune``): the k target sparsities are
  the sorted ``--ratios`` at positions floor((i + 1/2) n / k), i < k (spread like the ratios);
  for each target in ascending order the not yet chosen archive member of highest
  validation accuracy among those with validation sparsity >= the target (none: the
  sparsest one left). Each is retrained from its genome with exactly the ``_long`` recipe
  (the same fitness, KD mode, per_member samples) and the seed of the ``_long`` student at
  its target ratio (the same batch order: a pair differs in its allocation only); its
  validation front (as for every method) is measured once on test. It spends S + k x
  per_member <= B. ``best_baseline`` then compares ``search_finetuned`` (its ``search_method``)
  with the best ``_long`` baseline; ``search`` (the students as the search trained them) is
  still reported. comparison.json's ``finetune`` records finetune_share, search_compute (S),
  budget (B), per_member, k, targets, the members' partners and finetune_samples.

Outputs in RUN_DIR: ``baselines.csv`` (one row per evaluated point: method, uid,
ratio, genome key, validation accuracy, sparsity, whether selected, test accuracy,
training samples; then ``val_energy_fraction``, ``selected_energy``,
``test_energy_fraction``, ``test_energy_pj``), ``comparison.json`` (per method: test
hypervolume with reference (0, 0), best test accuracy at sparsity >= 0.5 / 0.7 / 0.8 /
0.9 / 0.95, evaluations and training samples processed, the counted compute; then
``test_energy`` / ``val_energy`` (hypervolume on the energy front, best accuracy at
energy fraction <= 0.5 / 0.2 / 0.1 / 0.05 / 0.02 / 0.01), ``energy_members``,
``energy_retrain_samples``, ``energy_compute_samples``; at the top ``energy_hv_reference``,
``energy_hv_reference_dense`` (the dense teacher's validation energy fraction, the
reference of each energy summary's ``hypervolume_dense_ref``),
``dense_teacher_test_energy_fraction`` and ``best_baseline``: per front, the best
``_long`` baseline (equal compute) by test hypervolume and the search's difference to it),
``plots/comparison.png`` (test fronts: accuracy against sparsity, and against energy
fraction) and ``plots/pareto.png`` redrawn with each baseline's validation front.

Compute is counted in training samples processed (``evo_snn.training.train.samples_processed``):
every evaluation plus every retraining. The dense teacher is shared by all methods
and not counted.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from evo_snn.structure import allocation
from evo_snn.atomic import read_jsonl
from evo_snn.state.checkpoint import CheckpointError, load_checkpoint
from evo_snn.cli import choice_list, epochs_list, ratio_list, show_progress
from evo_snn.config import ConfigError, read_run_config
from evo_snn.data import DatasetFormatError, load_splits
from evo_snn.evaluation.evaluator import genome_fitness, make_evaluator
from evo_snn.evaluation.fitness import FitnessContext, default_device, with_epochs
from evo_snn.structure.genome import Genome, GenomeOps, allocation_genome
from evo_snn.training.kd import KD_MODES
from evo_snn.models import build_model
from evo_snn.evaluation.individual import Individual, eval_seed
from evo_snn.front import fitness_class, hypervolume, nondominated, points_hypervolume
from evo_snn.structure.pruning import prunable_layers, weight_magnitudes
from evo_snn.state.rundir import RunDir, RunDirError, sigterm_as_interrupt
from evo_snn.training.teacher import TeacherLoadError
from evo_snn.training.teacher import prepare as prepare_teachers
from evo_snn.evaluation import energy
from evo_snn.evaluation.energy import EnergyCounter
from evo_snn.training.train import accuracy, cpu_state, samples_processed

ALLOCATIONS = ("lamp", "erk", "energy_aware")
"""Baselines of ``evo_snn.structure.allocation`` rules (each with a ``<method>_long`` twin at equal compute)."""
LONG = ("global_long",) + tuple(f"{a}_long" for a in ALLOCATIONS)
"""The methods trained with the search's training samples shared among their ratios."""
METHODS = ("uniform", "global", "random", "global_long", "global_matched") + tuple(
    m for a in ALLOCATIONS for m in (a, f"{a}_long"))
DEFAULT_METHODS = METHODS[:4]  # global_matched is meant with --final-epochs (a paired mask comparison)
DEFAULT_RATIOS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
FIXED_SPARSITIES = (0.5, 0.7, 0.8, 0.9, 0.95)
FIXED_ENERGY_FRACTIONS = (0.5, 0.2, 0.1, 0.05, 0.02, 0.01)
"""Energy fractions at which the energy front's best accuracy is reported (``accuracy_at_energy``)."""
ENERGY_KEY = "energy_fraction"
"""The fitness metric of the energy front (``EnergyReport.energy_fraction``; the search's ``energy`` objective)."""
# seed streams: eval_seed(root seed, stream, index); far above any generation number,
# so no baseline evaluation replays a search evaluation's seed
STREAMS = {"uniform": 1_000_001, "global": 1_000_002, "random": 1_000_003, "global_long": 1_000_004,
           "global_matched": 1_000_005}
# the allocation baselines take global's (and global_long's) seeds: at each ratio the same seed,
# hence the same batch order, as global, so that they differ from it in the allocation only
STREAMS.update({a: STREAMS["global"] for a in ALLOCATIONS})
STREAMS.update({f"{a}_long": STREAMS["global_long"] for a in ALLOCATIONS})
FINETUNED = "search_finetuned"
"""The search's validation-chosen members fine-tuned once with the ``_long`` recipe (finetune_share > 0)."""
EXIT_USAGE = 2


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


def select_finetune(members: list["Member"], targets: list[tuple[int, float]]) -> list[tuple["Member", int, float]]:
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


@dataclass
class Member:
    """One evaluated point of a method. ``metrics``: the fitness metrics on validation;
    ``student_state``: the trained student (None after a failed evaluation)."""

    method: str
    uid: str
    genome: Genome
    seed: int
    metrics: dict
    student_state: dict | None
    ratio: float | None = None
    selected: bool = False
    test: dict = field(default_factory=dict)
    partner: str | None = None  # global_matched: the uid of the search member it is paired with
    selected_energy: bool = False  # on the method's validation front in (accuracy, energy fraction)

    @property
    def ok(self) -> bool:
        return self.student_state is not None


SPARSITY_TOL = 1e-5  # accuracy_at_sparsity: a net at round(s x N) pruned weights (N >= 50,000) is "at s"


def accuracy_at_sparsity(points, sparsity: float) -> float:
    """Best accuracy among ``points`` ([M, 2] (accuracy, sparsity)) whose sparsity is at
    least ``sparsity`` (the front read as a staircase: a net at least that sparse);
    NaN when no point is that sparse. "At least" allows ``SPARSITY_TOL`` (1e-5) below: a
    genome built at s prunes round(s x N) weights, which is below s by up to 0.5 / N
    (0.9499977 for s = 0.95 over 175,192 weights)."""
    pts = np.asarray(points, dtype=float).reshape(-1, 2)
    ok = pts[:, 1] >= sparsity - SPARSITY_TOL
    return float(pts[ok, 0].max()) if ok.any() else float("nan")


def front_summary(points) -> dict:
    """{hypervolume, accuracy_at_sparsity: {"0.5": ...}} of [M, 2] (accuracy, sparsity)."""
    return {"hypervolume": points_hypervolume(points),
            "accuracy_at_sparsity": {f"{s:g}": accuracy_at_sparsity(points, s) for s in FIXED_SPARSITIES}}


def accuracy_at_energy(points, energy_fraction: float) -> float:
    """Best accuracy among ``points`` ([M, 2] (accuracy, energy fraction)) whose energy
    fraction is at most ``energy_fraction``; NaN when none is that frugal."""
    pts = np.asarray(points, dtype=float).reshape(-1, 2)
    ok = pts[:, 1] <= energy_fraction + 1e-9
    return float(pts[ok, 0].max()) if ok.any() else float("nan")


def energy_hypervolume(points, reference: float = 1.0) -> float:
    """Hypervolume of [M, 2] (accuracy, energy fraction) points, accuracy maximised and the
    energy fraction minimised, reference (accuracy 0, energy fraction ``reference``): the
    project's ``nsga.hypervolume`` with the fitness class of objectives (accuracy, energy),
    i.e. the area in (accuracy, 1 - energy fraction) above (0, 1 - reference). Points at
    or beyond the reference add nothing."""
    cls = fitness_class(("accuracy", "energy"), {"accuracy": 0.0, "energy": float(reference)})
    front = []
    for acc, e in np.asarray(points, dtype=float).reshape(-1, 2):
        p = Individual.__new__(Individual)  # hypervolume reads only .fitness
        p.fitness = cls()
        p.fitness.values = (float(acc), float(e))
        front.append(p)
    return hypervolume(front) if front else 0.0


def energy_front_summary(points, reference: float = 1.0, dense_reference: float | None = None) -> dict:
    """{hypervolume, accuracy_at_energy: {"0.5": ...}} of [M, 2] (accuracy, energy fraction);
    with ``dense_reference`` also ``hypervolume_dense_ref``, the hypervolume with that energy
    reference (the dense teacher's validation energy fraction: with reference 1 and the
    small energy fractions of spiking nets the hypervolume is nearly the best accuracy)."""
    out = {"hypervolume": energy_hypervolume(points, reference),
           "accuracy_at_energy": {f"{e:g}": accuracy_at_energy(points, e) for e in FIXED_ENERGY_FRACTIONS}}
    if dense_reference is not None:
        out["hypervolume_dense_ref"] = energy_hypervolume(points, dense_reference)
    return out


def energy_nondominated(points) -> list[int]:
    """Indices of the non-dominated rows of [M, 2] (accuracy maximised, energy fraction minimised)."""
    pts = np.asarray(points, dtype=float).reshape(-1, 2)
    return nondominated(np.stack([pts[:, 0], 1.0 - pts[:, 1]], axis=1)) if len(pts) else []


def select_energy_front(members: list[Member]) -> None:
    """Mark ``selected_energy`` on the members on the validation front in (accuracy,
    validation energy fraction) among the evaluated ones that recorded it (none, for a run
    whose fitness counted no energy)."""
    ok = [m for m in members if m.ok and m.metrics.get(ENERGY_KEY) is not None]
    for i in energy_nondominated([[m.metrics["accuracy"], m.metrics[ENERGY_KEY]] for m in ok]):
        ok[i].selected_energy = True


FRONTS = {"sparsity": ("test", "hypervolume"), "energy": ("test_energy", "hypervolume"),
          "energy_dense_ref": ("test_energy", "hypervolume_dense_ref")}
"""The fronts of ``best_baseline``: name -> (summary section, hypervolume key)."""


def best_baseline(summary: dict, front: str) -> dict:
    """The best of the ``LONG`` baselines (equal compute) in ``summary`` by test hypervolume on
    ``front`` (a key of ``FRONTS``): {methods (those compared), method, hypervolume,
    search_hypervolume, search_minus_best, search_method}; method None (and NaN) when none was
    run. The search side (``search_method``) is ``search_finetuned`` when the summary has it
    (finetune_share > 0), else ``search``."""
    key, hv_key = FRONTS[front]
    hv = {m: summary[m][key].get(hv_key) for m in LONG if m in summary and key in summary[m]}
    hv = {m: v for m, v in hv.items() if v is not None and not np.isnan(v)}
    side = FINETUNED if FINETUNED in summary else "search"  # finetune_share > 0: the fine-tuned front
    search = summary.get(side, {}).get(key, {}).get(hv_key, float("nan"))
    if not hv:
        return {"methods": [], "method": None, "hypervolume": float("nan"), "search_hypervolume": search,
                "search_minus_best": float("nan"), "search_method": side}
    best = max(hv, key=hv.get)
    return {"methods": list(hv), "method": best, "hypervolume": hv[best], "search_hypervolume": search,
            "search_minus_best": search - hv[best], "search_method": side}


def allocation_of(method: str) -> str | None:
    """The ``evo_snn.structure.allocation`` rule of a baseline method (``lamp_long`` -> ``lamp``), or None."""
    base = method[: -len("_long")] if method.endswith("_long") else method
    return base if base in ALLOCATIONS else None


def baseline_genomes(method: str, ops: GenomeOps, ratios, n_random: int, rng: np.random.Generator,
                     synops_per_weight: dict[str, float] | None = None) -> list[tuple[Genome, float | None]]:
    """(genome, ratio) pairs of one baseline method; raises ValueError for an unknown method,
    or for ``energy_aware``(``_long``) without ``synops_per_weight`` ({layer: dense SynOps per
    weight per sample of the teacher}, ``energy.synops_per_weight``).
    ``global_matched`` takes as ``ratios`` the sparsities of the search members it pairs with;
    the allocation methods take them as sparsities (exactly round(r * N) weights pruned)."""
    if method == "uniform":
        return [(ops.uniform_magnitude(r), r) for r in ratios]
    if method in ("global", "global_long", "global_matched"):
        return [(ops.global_magnitude(r), r) for r in ratios]
    rule = allocation_of(method)
    if rule is not None:
        if rule == "energy_aware" and synops_per_weight is None:
            raise ValueError(f"{method} needs the teacher's synops_per_weight")
        kw = ({"synops_per_weight": synops_per_weight, "max_ratio": max(ops.cfg.ratio_max, max(ratios, default=0.0))}
              if rule == "energy_aware" else {})  # capped: uncapped, it empties the early layers (RESULTS.md)
        return [(allocation_genome(rule, ops.abs, r, **kw), r) for r in ratios]
    if method == "random":
        return [(ops.random(rng), None) for _ in range(n_random)]
    raise ValueError(f"unknown baseline method {method!r}; known: {list(METHODS)}")


def paired_difference(search: list[Member], matched: list[Member], tests: dict[str, dict]) -> dict:
    """Test accuracy of each search member minus that of its ``global_matched`` partner
    (same sparsity, same seed): {n, mean, std (ddof=1; NaN for n < 2), wins (search ahead),
    losses}; differences in accuracy units, over the pairs whose both members were measured."""
    by_uid = {m.uid: m for m in search}
    diffs = []
    for m in matched:
        a, b = tests.get(m.partner or "", {}).get("test_accuracy"), tests.get(m.uid, {}).get("test_accuracy")
        if m.partner in by_uid and a is not None and b is not None:
            diffs.append(a - b)
    d = np.asarray(diffs, dtype=float)
    return {"n": int(d.size), "mean": float(d.mean()) if d.size else float("nan"),
            "std": float(d.std(ddof=1)) if d.size > 1 else float("nan"),
            "wins": int((d > 0).sum()), "losses": int((d < 0).sum())}


class Comparison:
    """The run's fitness, reloaded: evaluates genomes, retrains members, measures test accuracy.

    run: the run directory (config.json, manifest.json, teacher/, checkpoints/).
    data_root: overrides the manifest's. workers / address: as for the search.
    finetune_share: overrides the run's ``search.finetune_share`` (resolved: 0.85 with screening,
    else 0), ``finetune_budget``.
    kd_mode: fine-tune the baselines, and retrain every member (the search's included), with
    this KD mode instead of the run's (``kd.KD_MODES``), e.g. ``none`` to compare a ``kd=self``
    search with the baselines at their best fitness; the search's own students, trained by
    the search, are measured as they are. ``search_kd_mode`` keeps the run's.
    raises ConfigError, DatasetFormatError, RunDirError, CheckpointError, TeacherLoadError.
    """

    def __init__(self, run: RunDir, data_root: str | None = None, workers: int | None = None,
                 address: str | None = None, progress: bool = True, kd_mode: str | None = None,
                 finetune_share: float | None = None, verify_students: bool = True):
        self.cfg = cfg = read_run_config(run.path / "config.json", workers=workers)
        self.finetune_share = cfg.search.resolved_finetune_share() if finetune_share is None else float(finetune_share)
        if not 0.0 <= self.finetune_share < 1.0:
            raise ConfigError(f"finetune_share must be in [0, 1), got {finetune_share!r}")
        self.search_kd_mode = cfg.kd.mode
        if kd_mode is not None and kd_mode != cfg.kd.mode:
            try:
                self.cfg = cfg = dataclasses.replace(cfg, kd=dataclasses.replace(cfg.kd, mode=kd_mode)).validate()
            except ValueError as e:
                raise ConfigError(f"--kd {kd_mode}: {e}") from e
        self.run, self.address, self.progress = run, address, progress
        self.ckpt = load_checkpoint(run.checkpoints, verify_students=verify_students)
        root = data_root or run.manifest.get("data_root")
        self.splits = load_splits(cfg.dataset, root, cfg.data, seed=cfg.split_seed(), progress=progress)
        self.device = default_device()
        # the run's own teacher (and ANN twin), reloaded as --resume does
        teachers = prepare_teachers(cfg, self.splits, self.device, run_teacher_dir=run.teacher, resume=True,
                                    progress=progress)
        self.teacher, ann = teachers.dense, teachers.ann_state
        self.layers = tuple(prunable_layers(self.teacher, cfg.genome.prunable))
        self.ops = GenomeOps(weight_magnitudes(self.teacher, self.layers), cfg.genome)
        self._evaluator, self._fitness = None, {}
        self._synops_per_weight = None
        self.ctx = FitnessContext(self.cfg, self.splits.train, self.splits.val, self.splits.frame_shape,
                                  self.splits.num_classes, cpu_state(self.teacher),
                                  self.layers, ann)

    # ------------------------------------------------------------ evaluation
    def evaluate(self, jobs: list[tuple[Genome, int]], epochs: float | None = None, desc: str = "evaluations"):
        """Fitness results (``FitnessResult`` or the Exception) of ``[(genome, seed)]`` in
        order; ``epochs`` replaces kd.epochs (retraining)."""
        out: list = [None] * len(jobs)
        if not jobs:
            return out
        if self._evaluator is None:  # one evaluator (Ray started once) for the whole comparison
            self._evaluator = make_evaluator(self.cfg.search.workers, self.address)
        if epochs not in self._fitness:  # built once per budget, on each worker
            self._fitness[epochs] = genome_fitness(self.ctx if epochs is None else with_epochs(self.ctx, epochs), self.address)
        bar = tqdm(total=len(jobs), desc=desc, unit="eval", disable=not self.progress, leave=False)
        for i, res in self._evaluator.map(self._fitness[epochs], jobs):
            out[i] = res
            bar.update(1)
        bar.close()
        return out

    def synops_per_weight(self) -> dict[str, float]:
        """{layer: dense SynOps per weight per sample} of the dense teacher (the ``energy_aware``
        baselines), measured once on an all-zero ``x_seq`` of the data's frame shape
        (``[T, 1, C, H, W]``): dense counts depend on shapes only, so no split is read."""
        if self._synops_per_weight is None:
            import torch

            x_seq = torch.zeros((self.splits.frame_shape[0], 1, *self.splits.frame_shape[1:]), device=self.device)
            self._synops_per_weight = energy.synops_per_weight(self.teacher, x_seq, self.layers)
        return self._synops_per_weight

    def close(self) -> None:
        """Stop the evaluator (and the Ray instance it started)."""
        if self._evaluator is not None:
            self._evaluator.close()
            self._evaluator = None

    def search_members(self, uids: set[str] | None = None) -> list[Member]:
        """The search's archive (its validation front) from the last checkpoint; with
        ``uids``, only those members, whose students alone are read (``evo_snn.deploy.export``:
        a damaged student of another member does not stop an export)."""
        state = self.ckpt.state
        members = []
        for rec in state["archive"]:
            if rec["status"] == "failed" or (uids is not None and rec["uid"] not in uids):
                continue
            g = state["genomes"][rec["genome_key"]]
            genome = Genome(g.layers, tuple(float(r) for r in rec["ratios"]), g.masks)
            if rec["genome_key"] not in state["results"]:
                raise CheckpointError(f"{self.run.checkpoints}: no student for archive member {rec['uid']}")
            try:
                student = self.ckpt.students.get(rec["genome_key"])
            except Exception as e:  # a truncated or replaced file (D4 of issue 27): one line naming it
                raise CheckpointError(f"{self.ckpt.students.path(rec['genome_key'])}: the student of {rec['uid']} "
                                      f"cannot be loaded ({type(e).__name__}); it was damaged after the run wrote it") from e
            members.append(Member("search", rec["uid"], genome, int(rec["seed"]), dict(rec["metrics"]),
                                  student, selected=True))
        select_energy_front(members)  # the archive's validation front in (accuracy, energy fraction)
        return members

    def search_compute(self) -> tuple[int, int]:
        """(evaluations, training samples) the search spent, from evaluations.jsonl
        (cached rows cost nothing; rows without ``train_samples`` are counted from the config).

        A multi-fidelity search (``search.fidelity_fraction`` < 1) has one row per rung: a
        rung-0 row counts the samples of its b x kd.epochs, a continuation row those of its
        (1 - b) x kd.epochs (``train_samples``), so a promoted genome is counted once in
        full, b x S + (1 - b) x S; a failed row counts its ``fidelity_spent`` x kd.epochs.
        Each row is one evaluation. Forward-only screening rows (``rung: "screen"``,
        ``search.screen``) are not evaluations, but their forwards count, in training-sample
        equivalents (``counted_samples``: forward samples x the run's measured
        ``forward_cost_ratio``), so the ``_long`` baselines get the same counted compute."""
        path = self.run.path / "evaluations.jsonl"
        n_train, kd = len(self.splits.train), self.cfg.kd
        n = samples = 0
        rows, skipped = read_jsonl(path)  # a line that is not JSON is skipped, as pareto and --resume do
        if skipped:
            print(f"note: {path}: {skipped} line(s) not JSON (cut short by a crash?), not counted", file=sys.stderr)
        from evo_snn.evaluation.screening import row_counted_samples

        for row in (r for r in rows if isinstance(r, dict)):
            screened = row_counted_samples(row)  # a forward-only screening row, in training-sample equivalents
            if screened is not None:
                if row.get("gen", 0) <= self.ckpt.gen:
                    samples += int(round(screened))
                continue
            if row.get("status") in ("ok", "failed") and row.get("gen", 0) <= self.ckpt.gen:
                n += 1
                spent = samples_processed(n_train, kd.batch_size, kd.epochs * float(row.get("fidelity_spent", 1.0)))
                samples += int(row.get("train_samples", spent)) if row.get("status") == "ok" else spent
        return n, samples

    def random_evaluations(self, n_search: int, search_samples: int) -> int:
        """How many random genomes the ``random`` baseline evaluates by default: as many as the
        search's evaluations, or for a multi-fidelity search as many full evaluations as its
        training samples pay for (``ceil(samples / S)``), so that it spends the same compute."""
        from evo_snn.evaluation.fidelity import enabled

        if not enabled(self.cfg.search):
            return n_search
        per_eval = samples_processed(len(self.splits.train), self.cfg.kd.batch_size, self.cfg.kd.epochs)
        return max(1, math.ceil(search_samples / max(per_eval, 1)))

    def baseline_members(self, method: str, ratios, n_random: int, search_samples: int = 0,
                         search: list[Member] | None = None) -> list[Member]:
        """Evaluate one baseline method on validation and mark its validation front.
        search_samples: the search's training samples (``global_long`` and the other ``_long``
        methods each spend as many; with finetune_share > 0 ``compare`` passes the budget B).
        search: the search's members (``global_matched`` pairs one genome with each selected
        member, at its sparsity and with its seed, and selects them all)."""
        root = self.cfg.search.seed
        rng = np.random.default_rng([root, STREAMS[method]])
        if method == "global_matched":
            partners = [m for m in (search or []) if m.selected and m.ok]
            pairs = baseline_genomes(method, self.ops, [m.genome.sparsity for m in partners], 0, rng)
            jobs = [(g, m.seed) for (g, _), m in zip(pairs, partners)]
        else:
            spw = self.synops_per_weight() if allocation_of(method) == "energy_aware" else None
            pairs = baseline_genomes(method, self.ops, ratios, n_random, rng, synops_per_weight=spw)
            jobs = [(g, eval_seed(root, STREAMS[method], i)) for i, (g, _) in enumerate(pairs)]
        epochs = None
        if method in LONG:  # the search's budget (with fine-tuning: B), shared among the ratios
            epochs = self.long_epochs(search_samples, len(pairs))
        results = self.evaluate(jobs, epochs=epochs, desc=f"{method} baseline")
        members = []
        for i, ((g, ratio), (_, seed), res) in enumerate(zip(pairs, jobs, results)):
            uid = f"{method}-{i:04d}"
            if isinstance(res, Exception):
                members.append(Member(method, uid, g, seed, {"error": f"{type(res).__name__}: {res}"}, None, ratio))
            else:
                members.append(Member(method, uid, g, seed, dict(res.metrics), res.student_state, ratio))
        ok = [m for m in members if m.ok]
        if method == "global_matched":  # each is the partner of a selected search member
            for i, m in enumerate(members):
                m.selected, m.partner = m.ok, partners[i].uid
                m.selected_energy = m.selected and m.metrics.get(ENERGY_KEY) is not None
            return members
        for i in nondominated([[m.metrics["accuracy"], m.metrics["sparsity"]] for m in ok]):
            ok[i].selected = True
        select_energy_front(members)
        return members

    def long_epochs(self, samples: float, n: int) -> float:
        """kd.epochs of each of the n students of a ``_long`` method spending ``samples`` in all
        (``samples`` / (n x train size)); the fine-tuned search members get the same."""
        return max(samples, 1) / (n * max(len(self.splits.train), 1))

    def finetuned_members(self, search: list[Member], ratios, budget: dict) -> tuple[list[Member], list[dict]]:
        """``search_finetuned``: ``budget['k']`` of the search's archive members chosen on
        validation (``select_finetune`` at ``finetune_targets(ratios, k)``), each retrained from
        its genome with the ``_long`` recipe: the same fitness and KD mode, kd.epochs =
        ``long_epochs(budget['budget'], len(ratios))`` (per_member samples), the seed of the
        ``_long`` student at its target ratio. Their validation front is marked as for a baseline.
        Returns (members, [{uid, partner, target, sparsity, seed}])."""
        picks = select_finetune([m for m in search if m.selected and m.ok], finetune_targets(ratios, budget["k"]))
        root = self.cfg.search.seed
        jobs = [(m.genome, eval_seed(root, STREAMS["global_long"], j)) for m, j, _ in picks]
        results = self.evaluate(jobs, epochs=self.long_epochs(budget["budget"], len(ratios)), desc="search fine-tuning")
        members, record = [], []
        for i, ((m, _, t), (g, seed), res) in enumerate(zip(picks, jobs, results)):
            uid = f"{FINETUNED}-{i:04d}"
            if isinstance(res, Exception):
                members.append(Member(FINETUNED, uid, g, seed, {"error": f"{type(res).__name__}: {res}"}, None, t, partner=m.uid))
            else:
                members.append(Member(FINETUNED, uid, g, seed, dict(res.metrics), res.student_state, t, partner=m.uid))
            record.append({"uid": uid, "partner": m.uid, "target": t, "sparsity": float(g.sparsity), "seed": int(seed)})
        ok = [m for m in members if m.ok]
        for i in nondominated([[m.metrics["accuracy"], m.metrics["sparsity"]] for m in ok]):
            ok[i].selected = True
        select_energy_front(members)
        return members, record

    def measure(self, members: list[Member], final_epochs: float) -> dict[str, dict]:
        """{uid: test record} of each member selected on either front: retrained for
        ``final_epochs`` KD epochs when > 0 (from its genome, its own seed), then measured
        once on test: ``test_accuracy``, and on the same pass (energy hooks, which only read)
        ``test_energy_fraction`` and ``test_energy_pj`` (per sample); with retraining also
        ``retrained_val_accuracy``, ``retrain_samples``."""
        chosen = [m for m in members if (m.selected or m.selected_energy) and m.ok]
        out = {m.uid: {} for m in chosen}
        states = {m.uid: m.student_state for m in chosen}
        if final_epochs > 0:
            results = self.evaluate([(m.genome, m.seed) for m in chosen], epochs=final_epochs, desc="final retraining")
            for m, res in zip(chosen, results):
                if isinstance(res, Exception):
                    raise RuntimeError(f"final retraining of {m.uid} failed: {res}") from res
                states[m.uid] = res.student_state
                out[m.uid].update(retrained_val_accuracy=res.metrics["accuracy"], retrain_samples=res.metrics["train_samples"])
        model_args = (self.cfg.model, self.splits.frame_shape, self.splits.num_classes)
        energy = self.cfg.energy
        for m in tqdm(chosen, desc="test accuracy", disable=not self.progress, leave=False):
            student = build_model(*model_args).to(self.device)
            student.load_state_dict(states[m.uid])
            with EnergyCounter(student, energy.e_ac_pj, energy.e_mac_pj) as counter:
                out[m.uid]["test_accuracy"] = accuracy(student, self.splits.test)
            if counter.samples:
                report = counter.report()
                out[m.uid].update(test_energy_fraction=report.energy_fraction, test_energy_pj=report.energy_pj)
        return out

    def teacher_test(self) -> tuple[float, float | None]:
        """(test accuracy, test energy fraction) of the dense teacher, from one test pass."""
        energy = self.cfg.energy
        with EnergyCounter(self.teacher, energy.e_ac_pj, energy.e_mac_pj) as counter:
            acc = accuracy(self.teacher, self.splits.test)
        return acc, (counter.report().energy_fraction if counter.samples else None)

    def teacher_val_energy(self) -> float | None:
        """The dense teacher's energy fraction on the validation split (the energy front's
        second reference, ``energy_hv_reference_dense``: no member is selected with it)."""
        energy = self.cfg.energy
        with EnergyCounter(self.teacher, energy.e_ac_pj, energy.e_mac_pj) as counter:
            accuracy(self.teacher, self.splits.val)
        return counter.report().energy_fraction if counter.samples else None

    @property
    def energy_reference(self) -> float:
        """The energy front's hypervolume reference: the run's ``search.hv_reference['energy']`` (default 1)."""
        ref = getattr(self.cfg.search, "hv_reference", None) or {}
        return float(ref.get("energy", 1.0))


def compare(run: RunDir, methods=DEFAULT_METHODS, ratios=DEFAULT_RATIOS, n_random: int | None = None, suffix: str = "",
            final_epochs: list[float] | None = None, **kwargs) -> list[dict]:
    """Evaluate the baselines of ``run`` once, then for each of ``final_epochs`` (default:
    the run's ``search.final_epochs``) retrain, measure everything on test and write
    baselines<tag>.csv, comparison<tag>.json and the plots, with tag ``-SUFFIX`` and
    ``-fe<E>`` for E > 0 joined; returns the comparison dicts. kwargs go to ``Comparison``."""
    t0 = time.perf_counter()
    cmp = Comparison(run, **kwargs)
    try:
        progress = cmp.progress
        n_search, search_samples = cmp.search_compute()
        groups = {"search": cmp.search_members()}
        budget = finetune_budget(search_samples, cmp.finetune_share, len(ratios))
        long_samples = search_samples  # what each _long method spends: S, or B with fine-tuning
        finetune = {**budget, "members": 0, "finetune_samples": 0, "picks": []}
        if budget["k"] > 0:
            long_samples = budget["budget"]
            groups[FINETUNED], finetune["picks"] = cmp.finetuned_members(groups["search"], ratios, budget)
            finetune["members"] = len(groups[FINETUNED])
            finetune["finetune_samples"] = sum(int(m.metrics.get("train_samples", 0)) for m in groups[FINETUNED] if m.ok)
            finetune["targets"] = [p["target"] for p in finetune["picks"]]
        for method in methods:
            n_rand = cmp.random_evaluations(n_search, search_samples) if n_random is None else n_random
            groups[method] = cmp.baseline_members(method, ratios, n_rand, long_samples, search=groups["search"])
            if progress:
                tqdm.write(f"{method}: {len(groups[method])} evaluations, "
                           f"{sum(m.selected for m in groups[method])} on the validation front")
        teacher_test, teacher_test_energy = cmp.teacher_test()
        e_ref, e_dense = cmp.energy_reference, cmp.teacher_val_energy()
        docs = []
        for fe in (final_epochs if final_epochs is not None else [cmp.cfg.search.final_epochs]):
            tests = {method: cmp.measure(members, fe) for method, members in groups.items()}
            rows, summary = [], {}
            for method, members in groups.items():
                for m in members:
                    t = tests[method].get(m.uid, {})
                    rows.append({"method": method, "uid": m.uid, "ratio": m.ratio, "genome_key": m.genome.key,
                                 "val_accuracy": m.metrics.get("accuracy"), "sparsity": m.metrics.get("sparsity", m.genome.sparsity),
                                 "selected": m.selected, "test_accuracy": t.get("test_accuracy"),
                                 "retrained_val_accuracy": t.get("retrained_val_accuracy"),
                                 "train_samples": m.metrics.get("train_samples"), "seed": m.seed, "partner": m.partner,
                                 "error": m.metrics.get("error"), "val_energy_fraction": m.metrics.get(ENERGY_KEY),
                                 "selected_energy": m.selected_energy,
                                 "test_energy_fraction": t.get("test_energy_fraction"),
                                 "test_energy_pj": t.get("test_energy_pj")})
                sel = [m for m in members if m.selected and m.ok]
                test_pts = [[tests[method][m.uid]["test_accuracy"], m.metrics["sparsity"]] for m in sel]
                val_pts = [[m.metrics["accuracy"], m.metrics["sparsity"]] for m in sel]
                if method == "search":
                    n_eval, samples = n_search, search_samples
                elif method == FINETUNED:  # the search, then its fine-tuning
                    n_eval, samples = n_search + len(members), search_samples + finetune["finetune_samples"]
                else:
                    n_eval = len(members)
                    samples = sum(int(m.metrics.get("train_samples", 0)) for m in members if m.ok)
                retrain = sum(int(tests[method][m.uid].get("retrain_samples", 0)) for m in sel)
                summary[method] = {"test": front_summary(test_pts), "val": front_summary(val_pts), "members": len(sel),
                                   "evaluations": n_eval, "train_samples": samples, "retrain_samples": retrain,
                                   "compute_samples": samples + retrain}
                # the energy front: members selected on validation (accuracy, energy fraction), measured on test
                sel_e = [m for m in members if m.selected_energy and m.ok
                         and tests[method][m.uid].get("test_energy_fraction") is not None]
                test_e = [[tests[method][m.uid]["test_accuracy"], tests[method][m.uid]["test_energy_fraction"]] for m in sel_e]
                val_e = [[m.metrics["accuracy"], m.metrics[ENERGY_KEY]] for m in sel_e]
                retrain_e = sum(int(tests[method][m.uid].get("retrain_samples", 0)) for m in sel_e)
                summary[method].update(test_energy=energy_front_summary(test_e, e_ref, e_dense),
                                       val_energy=energy_front_summary(val_e, e_ref, e_dense), energy_members=len(sel_e),
                                       energy_retrain_samples=retrain_e, energy_compute_samples=samples + retrain_e)
                if method == "global_matched":
                    summary[method]["paired"] = paired_difference(groups["search"], members,
                                                                   {**tests["search"], **tests[method]})
            # kd_mode: the search's; baseline_kd_mode: how the baselines were fine-tuned (--kd)
            doc = {"run": str(run.path), "dataset": cmp.cfg.dataset, "model": cmp.cfg.model.name, "kd_mode": cmp.search_kd_mode,
                   "baseline_kd_mode": cmp.cfg.kd.mode,
                   "seed": cmp.cfg.search.seed, "generations": cmp.ckpt.gen, "population": cmp.cfg.search.population,
                   "final_epochs": fe, "ratios": list(ratios), "methods": summary,
                   "dense_teacher_test_accuracy": teacher_test, "test_samples": len(cmp.splits.test),
                   "train_size": len(cmp.splits.train), "val_size": len(cmp.splits.val),
                   "wall_s": time.perf_counter() - t0,
                   "energy_hv_reference": e_ref, "energy_hv_reference_dense": e_dense,
                   "dense_teacher_test_energy_fraction": teacher_test_energy,
                   "finetune_share": budget["finetune_share"], "finetune": finetune,
                   "best_baseline": {front: best_baseline(summary, front) for front in FRONTS}}
            table = pd.DataFrame(rows)
            tag = "".join(f"-{p}" for p in (suffix, f"fe{fe:g}" if fe > 0 else "") if p)
            run.write_csv(f"baselines{tag}.csv", table)
            run.write_json(f"comparison{tag}.json", doc)
            from evo_snn.analysis.plots import plot_comparison  # matplotlib only where plots are drawn

            plot_comparison(run.plots / f"comparison{tag}.png", table, teacher_test, val=False,
                            dense_teacher_energy=teacher_test_energy)
            if fe == 0 or len(docs) == 0:
                _redraw_pareto(run, table)
            doc["files"] = {"json": f"comparison{tag}.json", "csv": f"baselines{tag}.csv"}
            docs.append(doc)
    finally:
        cmp.close()
    return docs


def _redraw_pareto(run: RunDir, table: pd.DataFrame) -> None:
    """plots/pareto.png of the run again, with each baseline's validation front on it."""
    from evo_snn.analysis.plots import plot_run

    rows, _ = read_jsonl(run.path / "evaluations.jsonl")  # lines that are not JSON skipped (search_compute notes them)
    evals = pd.DataFrame([r for r in rows if isinstance(r, dict) and r.get("status") == "ok"])
    exported = [json.loads(p.read_text()) for p in sorted(run.exported.glob("*/metrics.json"))]
    teacher_val = json.loads((run.teacher / "metrics.json").read_text())["val_accuracy"]
    plot_run(run.plots, evals, pd.read_csv(run.path / "pareto.csv"), pd.read_csv(run.path / "generations.csv"),
             teacher_val, exported, baselines=table)


def format_comparison(doc: dict) -> str:
    """A plain-text table of ``comparison.json`` (pandas)."""
    recs = []
    for method, s in doc["methods"].items():
        rec = {"method": method, "test HV": s["test"]["hypervolume"], "val HV": s["val"]["hypervolume"],
               **{f"acc@>={k}": v for k, v in s["test"]["accuracy_at_sparsity"].items()},
               "test HV energy": s.get("test_energy", {}).get("hypervolume", float("nan")),
               "members": s["members"], "evals": s["evaluations"], "samples": s["compute_samples"]}
        recs.append(rec)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        text = pd.DataFrame(recs).to_string(index=False, float_format=lambda v: f"{v:.4f}")
    for front, b in doc.get("best_baseline", {}).items():
        if b.get("method"):
            text += (f"\n{b.get('search_method', 'search')} - best equal-compute baseline ({b['method']}), test HV on the {front} front: "
                     f"{b['search_minus_best']:+.4f}")
    pair = doc["methods"].get("global_matched", {}).get("paired")
    if pair:
        text += (f"\nsearch - global_matched, paired test accuracy: {pair['mean']:+.4f} +- {pair['std']:.4f} over "
                 f"{pair['n']} pairs ({pair['wins']} ahead, {pair['losses']} behind)")
    return text


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m evo_snn.baselines", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory of evo_snn.search.run with checkpoints/")
    p.add_argument("--methods", type=choice_list(METHODS, "method(s)", allow_none=True), default=list(DEFAULT_METHODS), help="comma-separated, from "
                   f"{','.join(METHODS)}, or 'none' (only the search front is measured) (default: "
                   f"{','.join(DEFAULT_METHODS)}; global_matched pairs each search member with global magnitude "
                   "pruning at its sparsity and seed: use it with --final-epochs; lamp, erk, energy_aware: LAMP, "
                   "Erdos-Renyi-Kernel and |W|/SynOps-per-weight allocations at the --ratios sparsities with "
                   "global's seeds; each METHOD_long is METHOD at equal compute, as global_long is to global)")
    p.add_argument("--suffix", default="", help="write baselines-SUFFIX.csv, comparison-SUFFIX.json and "
                   "plots/comparison-SUFFIX.png, e.g. to keep several comparisons of one run side by side")
    p.add_argument("--ratios", type=ratio_list, default=list(DEFAULT_RATIOS),
                   help="prune ratios / sparsities of the uniform, global and allocation baselines (default: "
                   "0.1,...,0.9,0.95)")
    p.add_argument("--random-evals", type=int, default=None,
                   help="random genomes to evaluate (default: as many evaluations as the search made; for a "
                   "multi-fidelity search as many full evaluations as its training samples pay for)")
    p.add_argument("--final-epochs", type=epochs_list, default=None,
                   help="retrain every selected member this many KD epochs before the test; comma-separated for several "
                   "measurements of one evaluation pass, e.g. 0,2 (files of E > 0 get -feE) (default: the run's "
                   "search.final_epochs)")
    p.add_argument("--kd", default=None, choices=KD_MODES, metavar="MODE",
                   help="fine-tune the baselines (and any --final-epochs retraining) with this KD mode instead of "
                   f"the run's, one of {', '.join(KD_MODES)}; the search's students are measured as trained "
                   "(default: the run's kd.mode)")
    p.add_argument("--finetune-share", type=float, default=None, metavar="F",
                   help="share in [0, 1) of the counted budget B = S / (1 - F) kept for fine-tuning max(1, floor(F x "
                   "n_ratios)) validation-chosen search members once with the _long recipe (method search_finetuned); "
                   "every _long baseline then spends B (default: the run's search.finetune_share: 0.85 with "
                   "search.screen on, else 0)")
    p.add_argument("--workers", type=int, default=None, help="parallel evaluations (default: the run's search.workers)")
    p.add_argument("--address", default=None, help="address of an existing Ray cluster")
    p.add_argument("--data-root", default=None, help="data root (default: the one recorded in manifest.json)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    if args.random_evals is not None and args.random_evals < 0:
        print("error: --random-evals must be >= 0", file=sys.stderr)
        return EXIT_USAGE
    if args.finetune_share is not None and not 0.0 <= args.finetune_share < 1.0:
        print("error: --finetune-share must be in [0, 1)", file=sys.stderr)
        return EXIT_USAGE
    try:
        if not (Path(args.run_dir) / "config.json").is_file():
            raise RunDirError(f"{Path(args.run_dir) / 'config.json'} not found; RUN_DIR must be a run directory of evo_snn.search.run")
        run = RunDir.open(args.run_dir)
        with sigterm_as_interrupt():
            docs = compare(run, args.methods, args.ratios, args.random_evals, args.suffix, args.final_epochs,
                           data_root=args.data_root, workers=args.workers, address=args.address, progress=show_progress(args),
                           kd_mode=args.kd, finetune_share=args.finetune_share)
    except (ConfigError, DatasetFormatError, RunDirError, CheckpointError, TeacherLoadError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted (comparison.json not written)", file=sys.stderr)
        return 130
    for doc in docs:
        kd = "" if doc["baseline_kd_mode"] == doc["kd_mode"] else f", baselines fine-tuned with kd={doc['baseline_kd_mode']}"
        print(f"final retraining {doc['final_epochs']:g} epochs{kd}:")
        print(format_comparison(doc))
        print(f"dense teacher test accuracy {doc['dense_teacher_test_accuracy']:.4f}; wrote {run.path / doc['files']['json']}")
    return 0
