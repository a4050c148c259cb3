"""Forward-only screening of a generation's children (issue 23, items 3-4).

With ``search.screen`` in {'nll', 'kl', 'bn_accuracy'} (default 'none': today's search)
every fresh child of a generation is first scored without any training:

1. its masks go onto a copy of the dense teacher (with ``search.inherit_weights`` onto
   its first parent's student, the pruned weights refilled from the teacher, as
   ``GenomeFitness.inherit`` does), never onto the teacher itself;
2. the BatchNorm running statistics of that copy are reset and recalibrated
   (``recalibrate_bn``: cumulative averages, BN layers in train mode, everything else in
   eval mode, no grad) on ``search.screen_bn_batches`` fixed batches of the **training**
   split (drawn once per run from ``search.seed``; never validation images);
3. it is scored on a fixed subset of ``search.screen_samples`` validation images (drawn
   once per run, the same for every candidate): 'nll' the cross-entropy of the
   candidate (lower is better), 'kl' KL(dense teacher || candidate) at temperature 1
   with the dense teacher's logits on that subset computed once and cached, checked
   against the subset's indices on every use (``Screener.teacher_logits``), or
   'bn_accuracy' the top-1 accuracy (higher is better).

Selection is multi-step (EvoPress-style, ``StructureSearch.screen``): every child is
scored on the first ``search.screen_first_share`` of the subset, the best
``search.screen_keep`` of them (at least ``screen_promote``) on the rest of it (the
scores of both steps are pooled: the whole subset), then the best ``screen_promote``
go on to the KD rung (and the multi-fidelity rungs above it). "Best" is DEAP's
non-dominated sorting + crowding over the search's objectives with the screening
quality in place of the accuracy (``quality``: -NLL, -KL or the accuracy), the genome's
sparsity and, for 'energy', the candidate's energy fraction on the scored images.

One currency: every forward a screen makes, BN recalibration included, is counted
(``forward_samples``) and converted to training-sample equivalents
(``evo_snn.evaluation.screening_cost``).

The test split never enters this module: a ``FitnessContext`` holds the training and
validation splits only.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from spikingjelly.activation_based import functional

from evo_snn.config import SCREENS  # search.screen: 'none' (today's search) or the forward-only score of a candidate
from evo_snn.structure.genome import Genome
from evo_snn.structure.pruning import fold_masks, sparse_copy
from evo_snn.training.train import to_device
from evo_snn.evaluation.screening_cost import measure_forward_cost_ratio
from evo_snn.evaluation.screening_cost import counted_compute, row_counted_samples  # noqa: F401  (re-exported: screening.counted_compute, as before)

SCREEN_SEED = 23  # SeedSequence([search.seed, SCREEN_SEED, ...]): the fixed batches and subset of a run
_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def enabled(search) -> bool:
    """Whether a ``SearchConfig`` asks for screening (``search.screen`` not 'none')."""
    return str(getattr(search, "screen", "none") or "none") != "none"


def promote_count(search) -> int:
    """How many screened children go on to the KD rung: ``search.screen_promote``, or for 0
    (the default) max(1, population // 4)."""
    k = int(getattr(search, "screen_promote", 0) or 0)
    return k if k > 0 else max(1, int(search.population) // 4)


def bn_modules(model: nn.Module) -> list[nn.Module]:
    """The BatchNorm layers of ``model`` (torch's ``_BatchNorm`` kinds)."""
    return [m for m in model.modules() if isinstance(m, _BN)]


@torch.no_grad()
def recalibrate_bn(model: nn.Module, batches, device: torch.device | None = None) -> int:
    """Reset and recalibrate ``model``'s BatchNorm running statistics in place on ``batches``
    (an iterable of ``x_seq [T, B, ...]``, e.g. training batches): the running mean and
    variance are reset and re-estimated as cumulative averages (``momentum=None``), with the
    BN layers in train mode and every other module in eval mode (no dropout), no grad; the
    model is left in eval mode with the momenta restored. Returns the samples forwarded
    (the sum of the batch sizes). A model without BatchNorm is not run (0)."""
    bns = bn_modules(model)
    if not bns:
        return 0
    device = device or next(model.parameters()).device
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    model.eval()
    for m in bns:
        m.train()
    n = 0
    try:
        for x_seq in batches:
            model(to_device(x_seq, device))
            functional.reset_net(model)
            n += int(x_seq.shape[1])
    finally:
        for m, mom in zip(bns, momenta):
            m.momentum = mom
        model.eval()
    return n


@dataclass
class Candidate:
    """One screened genome: its recalibrated BN statistics and per-sample scores so far."""

    genome: Genome
    init_state: dict | None
    bn_state: dict = field(default_factory=dict)
    losses: list = field(default_factory=list)  # per-sample scores of the scored prefix of the subset, in order
    scored: int = 0  # how many of the subset's images are scored (a prefix)
    forward_samples: int = 0  # all forwards so far, BN recalibration included
    seconds: float = 0.0
    energy_fraction: float | None = None

    def score(self) -> float:
        """Mean of the per-sample scores so far (nan before any)."""
        return float(torch.cat(self.losses).mean().item()) if self.losses else float("nan")


class Screener:
    """Forward-only scores of genomes against one dense teacher (built once, in the driver).

    ctx: a ``fitness.FitnessContext`` (train, val, teacher_state, cfg; no test split).
    device: where the candidates run (default: ``fitness.default_device()``).
    forward_cost_ratio: None (default) measures it now (``measure_forward_cost_ratio`` on a
    training batch); a number fixes it (tests).

    ``bn_index`` (training indices, ``screen_bn_batches`` x ``kd.batch_size``) and
    ``val_index`` (validation indices, ``min(screen_samples, len(val))``, ascending) are
    drawn once from ``search.seed``.
    """

    def __init__(self, ctx, device: torch.device | None = None, forward_cost_ratio: float | None = None,
                 energy: bool = False):
        from evo_snn.evaluation.fitness import default_device
        from evo_snn.models import build_model

        cfg = ctx.cfg
        s = cfg.search
        self.ctx, self.mode = ctx, str(s.screen)
        if self.mode not in SCREENS or self.mode == "none":
            raise ValueError(f"search.screen must be one of {list(SCREENS[1:])} for a Screener, got {self.mode!r}")
        self.device = device or default_device()
        self.batch_size = int(cfg.kd.batch_size)
        self.energy = bool(energy)
        self.teacher = build_model(cfg.model, ctx.frame_shape, ctx.num_classes).to(self.device)
        self.teacher.load_state_dict(ctx.teacher_state)  # copies: ctx.teacher_state is never written
        self.teacher.requires_grad_(False).eval()
        ss = np.random.SeedSequence([int(s.seed), SCREEN_SEED])
        rng_bn, rng_val = (np.random.default_rng(c) for c in ss.spawn(2))
        n_bn = int(s.screen_bn_batches) * self.batch_size
        n_train = len(ctx.train)
        if n_train == 0 and n_bn:
            raise ValueError("screening needs training images for the BN recalibration")
        perm = rng_bn.permutation(n_train) if n_train else np.zeros(0, dtype=np.int64)
        self.bn_index = np.resize(perm, n_bn).astype(np.int64)  # wraps when the split is smaller
        n_val = min(int(s.screen_samples), len(ctx.val))
        if n_val <= 0:
            raise ValueError("screening needs validation images (search.screen_samples >= 1 and a validation split)")
        self.val_index = np.sort(rng_val.choice(len(ctx.val), n_val, replace=False)).astype(np.int64)
        self._bn_x = [ctx.train.to_seq(ctx.train[torch.as_tensor(self.bn_index[i:i + self.batch_size])][0], train=False)
                      for i in range(0, n_bn, self.batch_size)]
        self._val_x, self._val_y = ctx.val[torch.as_tensor(self.val_index)]
        self._teacher_logits: torch.Tensor | None = None
        self._teacher_index: np.ndarray | None = None
        if forward_cost_ratio is None:
            forward_cost_ratio = self.measure_ratio()
        self.forward_cost_ratio = float(forward_cost_ratio)

    # ------------------------------------------------------------------ data
    def bn_batches(self):
        """The fixed training batches of the BN recalibration, ``x_seq [T, B, ...]`` (no augmentation)."""
        return list(self._bn_x)

    def val_batches(self, start: int, stop: int, size: int = 64):
        """(x_seq, y, rows) of the subset's images ``start:stop`` in batches of ``size``."""
        for a in range(start, stop, size):
            b = min(stop, a + size)
            yield self.ctx.val.to_seq(self._val_x[a:b], train=False), self._val_y[a:b], slice(a, b)

    def measure_ratio(self) -> float:
        """``measure_forward_cost_ratio`` on the first BN batch (a training batch)."""
        x = self._bn_x[0] if self._bn_x else self.ctx.val.to_seq(self._val_x[: self.batch_size], train=False)
        y = self.ctx.train.labels[torch.as_tensor(self.bn_index[: x.shape[1]])] if self._bn_x else self._val_y[: x.shape[1]]
        from evo_snn.training.kd import kd_mode

        return measure_forward_cost_ratio(self.teacher, x, y, kd_teacher=kd_mode(self.ctx.cfg.kd.mode).teacher is not None)

    @torch.no_grad()
    def teacher_logits(self, index: np.ndarray | None = None) -> torch.Tensor:
        """The dense teacher's logits [n, classes] on the subset ``val_index`` (computed once,
        cached). index: the subset they are asked for (default ``val_index``); raises
        ValueError when it is not the cached subset, or when ``val_index`` changed since."""
        index = self.val_index if index is None else np.asarray(index, dtype=np.int64)
        if self._teacher_logits is None:
            out = []
            for x, _, _ in self.val_batches(0, len(self.val_index)):
                out.append(self.teacher(to_device(x, self.device)).float().cpu())
                functional.reset_net(self.teacher)
            self._teacher_logits, self._teacher_index = torch.cat(out), self.val_index.copy()
        if not (np.array_equal(index, self._teacher_index) and np.array_equal(self.val_index, self._teacher_index)):
            raise ValueError("the cached teacher logits belong to another validation subset")
        return self._teacher_logits

    # ------------------------------------------------------------------ candidates
    def candidate_model(self, genome: Genome, init_state: dict | None = None) -> nn.Module:
        """The genome's masks on a copy of the dense teacher, or on ``init_state`` (a parent's
        student) with its zero prunable weights refilled from the teacher; frozen, eval mode."""
        masks = genome.mask_dict()
        if init_state is None:
            return sparse_copy(self.teacher, masks)
        model = copy.deepcopy(self.teacher)
        dense = self.teacher.state_dict()
        state = {k: v.to(self.device) for k, v in init_state.items()}
        for name in genome.layers:
            w = state[name + ".weight"]
            state[name + ".weight"] = torch.where(w == 0, dense[name + ".weight"], w)
        model.load_state_dict(state)
        model.requires_grad_(False)
        fold_masks(model, masks)
        return model.eval()

    def start(self, genome: Genome, init_state: dict | None = None) -> Candidate:
        """A new ``Candidate``: the masked copy with its BN statistics recalibrated on the
        fixed training batches (counted in ``forward_samples``), nothing scored yet."""
        t0 = time.perf_counter()
        model = self.candidate_model(genome, init_state)
        n = recalibrate_bn(model, self.bn_batches(), self.device)
        bn_state = {k: v.detach().clone() for k, v in model.state_dict().items() if _is_bn_buffer(model, k)}
        return Candidate(genome, init_state, bn_state, forward_samples=n, seconds=time.perf_counter() - t0)

    @torch.no_grad()
    def extend(self, cand: Candidate, stop: int) -> int:
        """Score ``cand`` on the subset's images ``cand.scored:stop`` (in place); returns the
        forward samples of this step. With ``energy`` the first step also records the
        candidate's ``energy_fraction`` on its images."""
        stop = min(int(stop), len(self.val_index))
        if stop <= cand.scored:
            return 0
        t0 = time.perf_counter()
        model = self._scoring_model(cand)
        need_teacher = self.mode == "kl"
        z_t_all = self.teacher_logits() if need_teacher else None
        counter = None
        if self.energy and cand.energy_fraction is None:
            from evo_snn.evaluation.energy import EnergyCounter

            energy = self.ctx.cfg.energy
            counter = EnergyCounter(model, energy.e_ac_pj, energy.e_mac_pj).__enter__()
        try:
            for x, y, rows in self.val_batches(cand.scored, stop):
                z = model(to_device(x, self.device)).float().cpu()
                functional.reset_net(model)
                cand.losses.append(self._per_sample(z, y, z_t_all, rows))
        finally:
            if counter is not None:
                counter.__exit__(None, None, None)
                cand.energy_fraction = float(counter.report().metrics().get("energy_fraction", float("nan")))
        n = stop - cand.scored
        cand.scored = stop
        cand.forward_samples += n
        cand.seconds += time.perf_counter() - t0
        return n

    # ------------------------------------------------------------------ grouped (search.screen_group)
    def start_group(self, genomes: list[Genome], init_states: list[dict | None] | None = None) -> list[Candidate]:
        """``start`` for K candidates at once: their masked copies as one ``grouped.GroupedNet``
        (each conv K times wider with groups, each BN per member) recalibrated in one pass over
        the fixed training batches, each member's BN statistics taken back (``member_state``).
        Every candidate counts the BN forwards as in ``start`` (the same samples pass each
        member); the seconds are split evenly. Equal to K ``start`` calls up to float rounding."""
        from evo_snn.evaluation.grouped import group

        init_states = list(init_states) if init_states is not None else [None] * len(genomes)
        if len(genomes) <= 1:
            return [self.start(g, s) for g, s in zip(genomes, init_states)]
        t0 = time.perf_counter()
        models = [self.candidate_model(g, s) for g, s in zip(genomes, init_states)]
        net = group(models).to(self.device)
        n = recalibrate_bn(net, self.bn_batches(), self.device)
        out = []
        for k, (g, s) in enumerate(zip(genomes, init_states)):
            state = net.member_state(k)
            bn_state = {key: v.detach().clone() for key, v in state.items() if _is_bn_buffer(models[k], key)}
            out.append(Candidate(g, s, bn_state, forward_samples=n))
        dt = (time.perf_counter() - t0) / len(out)
        for c in out:
            c.seconds = dt
        return out

    @torch.no_grad()
    def extend_group(self, cands: list[Candidate], stop: int) -> int:
        """``extend`` for K candidates at once (one ``GroupedNet`` forward per batch, the K
        members' logits ``[N, K, classes]`` scored apart); they must have scored the same
        prefix. With ``energy`` (a per-member energy count) and for K = 1 it runs ``extend``
        on each. Returns the forward samples of this step per candidate."""
        from evo_snn.evaluation.grouped import group

        stop = min(int(stop), len(self.val_index))
        if len(cands) <= 1 or self.energy:
            return max([self.extend(c, stop) for c in cands], default=0)
        start = cands[0].scored
        if any(c.scored != start for c in cands):
            raise ValueError("extend_group: the candidates have scored different prefixes of the subset")
        if stop <= start:
            return 0
        t0 = time.perf_counter()
        net = group([self._scoring_model(c) for c in cands]).to(self.device).eval()
        z_t_all = self.teacher_logits() if self.mode == "kl" else None
        for x, y, rows in self.val_batches(start, stop):
            zs = net(to_device(x, self.device)).float().cpu()  # [N, K, classes]
            functional.reset_net(net)
            for k, c in enumerate(cands):
                c.losses.append(self._per_sample(zs[:, k], y, z_t_all, rows))
        n = stop - start
        dt = (time.perf_counter() - t0) / len(cands)
        for c in cands:
            c.scored = stop
            c.forward_samples += n
            c.seconds += dt
        return n

    def _scoring_model(self, cand: Candidate) -> nn.Module:
        """The candidate's masked copy with its recalibrated BN statistics, eval mode."""
        model = self.candidate_model(cand.genome, cand.init_state)
        model.load_state_dict(cand.bn_state, strict=False)
        return model.eval()

    def _per_sample(self, z: torch.Tensor, y: torch.Tensor, z_t_all: torch.Tensor | None, rows) -> torch.Tensor:
        """Per-sample scores of logits ``z [n, classes]``: NLL, KL(teacher || candidate) or 0/1 accuracy."""
        if self.mode == "nll":
            return F.cross_entropy(z, y, reduction="none")
        if self.mode == "kl":
            lt = F.log_softmax(z_t_all[rows], 1)
            return (lt.exp() * (lt - F.log_softmax(z, 1))).sum(1)
        return (z.argmax(1) == y).float()

    def quality(self, cand: Candidate) -> float:
        """The screening value maximised in selection: -NLL, -KL or the accuracy."""
        s = cand.score()
        return s if self.mode == "bn_accuracy" else -s


def _is_bn_buffer(model: nn.Module, key: str) -> bool:
    mod, _, name = key.rpartition(".")
    return name in ("running_mean", "running_var", "num_batches_tracked") and isinstance(model.get_submodule(mod), _BN)


def context_of(fitness):
    """The ``FitnessContext`` behind a search's fitness (``evaluator.genome_fitness``'s
    ``PerWorker(partial(GenomeFitness, ctx))``, a ``GenomeFitness``, or anything with a
    ``ctx``), or None."""
    for obj in (fitness, getattr(fitness, "factory", None)):
        if obj is None:
            continue
        if hasattr(obj, "ctx"):
            return obj.ctx
        for a in tuple(getattr(obj, "args", ())) + tuple(getattr(obj, "keywords", {}).values()):
            if hasattr(a, "train") and hasattr(a, "val") and hasattr(a, "teacher_state"):
                return a
    return None


__all__ = ["SCREENS", "Candidate", "Screener", "bn_modules", "context_of", "counted_compute", "enabled",
           "measure_forward_cost_ratio", "promote_count", "recalibrate_bn", "row_counted_samples"]
