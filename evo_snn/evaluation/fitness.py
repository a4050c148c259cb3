"""Fitness of one genome: sparse teacher -> KD-trained student -> validation metrics.

The student's validation pass also counts its synaptic operations and spikes
(``evo_snn.evaluation.energy.EnergyCounter``: forward hooks on that same pass, no extra one):
effective ACs/MACs, dense SynOps, spikes and firing rates, per layer and in total, and
the estimated energy (``energy.e_ac_pj`` / ``energy.e_mac_pj``), all per sample.

The test split never enters this module: a ``FitnessContext`` carries only the
training and validation splits, so fitness cannot be read off the test set.
"""

from __future__ import annotations

import copy
import math
import os
import socket
import time
from dataclasses import dataclass, replace

import torch
import torch.nn as nn
from spikingjelly.activation_based import functional

from evo_snn.config import Config
from evo_snn.data import FrameSet
from evo_snn.evaluation.energy import EnergyCounter
from evo_snn.evaluation.fidelity import Rung
from evo_snn.structure.genome import Genome
from evo_snn.training.kd import kd_mode, student_loss, teacher_for
from evo_snn.models import build_model, select_backend
from evo_snn.evaluation.outcome import FitnessResult  # noqa: F401  (re-exported: evaluators and tests import it here)
from evo_snn.structure.pruning import MaskHooks, fold_masks, sparse_copy, weight_sparsity
from evo_snn.training.compiled import Persistent
from evo_snn.training.train import (accuracy, channels_last, cpu_state, eval_batch_size, mean_loss, predict_logits,
                                    samples_processed, train_steps)


@dataclass
class FitnessContext:
    """Everything a worker needs, shipped once per worker.

    train, val: frame sets (``frames [N, T, C, H, W]``); teacher_state: the dense
    teacher's state_dict (CPU tensors); layers: the prunable layer names.
    """

    cfg: Config
    train: FrameSet
    val: FrameSet
    frame_shape: tuple[int, int, int, int]
    num_classes: int
    teacher_state: dict[str, torch.Tensor]
    layers: tuple[str, ...]
    ann_teacher_state: dict[str, torch.Tensor] | None = None  # kd.mode 'ann' only


def with_epochs(ctx: FitnessContext, epochs: float) -> FitnessContext:
    """``ctx`` with the KD budget ``kd.epochs`` replaced: the final retraining of a
    selected member (``search.final_epochs``) runs the same fitness for longer."""
    cfg = ctx.cfg
    return replace(ctx, cfg=replace(cfg, kd=replace(cfg.kd, epochs=epochs)))


def resident(ctx: FitnessContext, device: torch.device) -> FitnessContext:
    """``ctx`` with the training and validation frames (storage dtype) held on a CUDA
    ``device`` (``FrameSet.to``: batches gathered and prepared there, the same values) when
    each takes at most a quarter of the device's free memory; ``ctx`` itself elsewhere."""
    device = torch.device(device)
    if device.type != "cuda":
        return ctx
    budget = torch.cuda.mem_get_info(device)[0] // 4
    return replace(ctx, train=ctx.train.to(device, budget), val=ctx.val.to(device, budget))


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class GenomeFitness:
    """Callable evaluating genomes against one dense teacher (built once per worker)."""

    def __init__(self, ctx: FitnessContext, device: torch.device | None = None):
        self.device = device or default_device()
        self.ctx = resident(ctx, self.device)
        self.teacher = self.build()
        self.teacher.load_state_dict(ctx.teacher_state)
        self.teacher.requires_grad_(False).eval()
        # students copy the teacher's nodes; raises ConfigError for a model.neuron_backend that cannot run here
        self.backend = select_backend(self.teacher, self.device, ctx.cfg.model.neuron_backend)
        self.hot_path = ctx.cfg.train  # AMP / channels-last of the KD training (evo_snn.training.train)
        self._teacher_acc: dict[str, float] = {}  # genome key -> its sparse teacher's validation accuracy
        if self.hot_path.channels_last:
            channels_last(self.teacher)  # its sparse copies and the students copied from them inherit the layout
        self.compiled: dict[str, Persistent] | None = None  # train.compile (evo_snn.training.compiled); grouped students run eager
        if self.hot_path.compile:
            self.compiled = {"student": Persistent(self.build, self.device), "teacher": Persistent(self.build, self.device)}
        self.ann_teacher = None
        if kd_mode(ctx.cfg.kd.mode).needs_ann:
            if ctx.ann_teacher_state is None:
                raise ValueError("kd.mode 'ann' needs the ANN teacher's state_dict in the FitnessContext")
            self.ann_teacher = self.build(ann=True)
            self.ann_teacher.load_state_dict(ctx.ann_teacher_state)
            self.ann_teacher.requires_grad_(False).eval()

    def inherit(self, parent_state: dict[str, torch.Tensor]) -> nn.Module:
        """A trainable student holding ``parent_state``, whose zero prunable weights (the
        parent's pruned connections) are refilled from the dense teacher, so that a
        connection the child regrows starts where the teacher had it."""
        student = self.build()
        state = {k: v.to(self.device) for k, v in parent_state.items()}
        dense = self.teacher.state_dict()
        for name in self.ctx.layers:
            w = state[name + ".weight"]
            state[name + ".weight"] = torch.where(w == 0, dense[name + ".weight"], w)
        student.load_state_dict(state)
        return student.requires_grad_(True)

    def build(self, ann: bool = False) -> nn.Module:
        c = self.ctx
        model_cfg = c.cfg.model.ann_twin() if ann else c.cfg.model
        return build_model(model_cfg, c.frame_shape, c.num_classes).to(self.device)

    def teacher_accuracy(self, sparse_teacher: nn.Module, key: str | None = None) -> float | None:
        """The sparse teacher's validation accuracy in [0, 1], or None when
        ``search.measure_teacher`` is false (the pass is skipped). key: the genome key; its
        accuracy is measured once per worker (a retry, a fidelity continuation or a final
        retraining of the same genome reuses it: the sparse teacher is the same net)."""
        if not self.ctx.cfg.search.measure_teacher:
            return None
        if key is not None and key in self._teacher_acc:
            return self._teacher_acc[key]
        acc = accuracy(sparse_teacher, self.ctx.val, eval_batch_size(self.hot_path, self.device),
                       channels_last=self.hot_path.channels_last)
        if key is not None:
            self._teacher_acc[key] = acc
        return acc

    def __call__(self, genome: Genome, seed: int, init_state: dict[str, torch.Tensor] | None = None,
                 rung: Rung | None = None) -> FitnessResult:
        """KD-train a student for ``genome`` and score it on validation.

        metrics: accuracy, sparsity, teacher_accuracy (None with ``search.measure_teacher``
        false), ..., and the student's counts on the
        validation pass, per sample (``EnergyReport.metrics``): ``synops``, ``effective_acs``,
        ``effective_macs``, ``energy_pj``, ``energy_fraction`` (the ``energy`` objective),
        ``spikes``, ``firing_rate``, ``activation_sparsity`` and per-layer dicts.

        seed: drives the student's initialisation (``student_init='scratch'``), batch
        order and augmentation. init_state: a parent's trained student (weight
        inheritance, ``search.inherit_weights``): the student starts from it, with the
        connections the parent had pruned and ``genome`` keeps (regrown) taken from the
        dense teacher, and ``genome``'s masks applied. raises on a genome that does not
        fit the model (the evaluator reports it).

        rung: a multi-fidelity search's budget (``evo_snn.evaluation.fidelity``): train
        ``rung.spent`` x kd.epochs instead of kd.epochs (``train_samples`` counts those);
        at a continuation (``rung.continues``) init_state is this genome's own student
        after ``rung.start`` x kd.epochs (its rung-0 result), loaded as it is, and the
        metric ``inherited`` is False (the search reports the rung-0 one). Note that the
        continuation starts a new Adam and cosine schedule (the rung-0 optimiser state is
        not kept). raises ValueError for a continuation without init_state.
        """
        t0 = time.perf_counter()
        kd = self.ctx.cfg.kd
        own, epochs = self._budget(rung)
        student, teacher, hooks = self._prepare(genome, seed, init_state, rung)
        teacher_acc = self.teacher_accuracy(teacher, genome.key)
        run_student, run_teacher = student, teacher
        if self.compiled is not None:  # train.compile: the worker's persistent modules, compiled once
            hooks.remove()
            run_student = self.compiled["student"].load(student, trainable=True)
            run_teacher = self.compiled["teacher"].load(teacher, trainable=False)
            student = self.compiled["student"].module  # eager: trained in place, scored, its state returned
            hooks = fold_masks(student, genome.mask_dict(), per_weight=False) if kd.student_mask == "genome" else MaskHooks([])

        teaching = teacher_for(kd.mode, sparse=run_teacher, dense=self.teacher, ann=self.ann_teacher)
        kd_loss = student_loss(kd, self.ctx.num_classes, teaching)
        train_loss = train_steps(run_student, self.ctx.train, hot_path=self.hot_path, epochs=epochs, batch_size=kd.batch_size,
                                 lr=kd.lr, loss_fn=kd_loss, seed=seed, grad_masks=hooks)
        hooks.remove()
        metrics = self._score(student, genome, teacher_acc, train_loss, init_state is not None and not own, epochs=epochs)
        metrics["wall_s"] = time.perf_counter() - t0
        return FitnessResult(metrics, cpu_state(student))

    def _budget(self, rung: Rung | None) -> tuple[bool, float]:
        """(whether the job continues from the genome's own student, the KD epochs to train)
        for a job at ``rung`` (None: one fidelity, kd.epochs from the usual start)."""
        kd_epochs = self.ctx.cfg.kd.epochs
        if rung is None:
            return False, kd_epochs
        return rung.continues, kd_epochs * rung.spent

    def _prepare(self, genome: Genome, seed: int, init_state: dict | None, rung: Rung | None = None):
        """(student with the genome's masks folded in, sparse teacher, the ``MaskHooks`` that
        keep them: ``train_steps(grad_masks=...)``): ``torch.manual_seed(seed)`` first, then the sparse teacher, then the
        student (a copy of it, a parent's student, or a seeded fresh net; at a continuation
        ``rung``, ``init_state`` loaded as it is: the genome's own partly trained student).
        raises ValueError for a continuation without ``init_state``."""
        own, _ = self._budget(rung)
        if own and init_state is None:
            raise ValueError(f"the continuation of {genome.key} from fidelity {rung.start:g} needs its rung-0 student")
        kd = self.ctx.cfg.kd
        torch.manual_seed(seed)
        masks = genome.mask_dict()
        teacher = sparse_copy(self.teacher, masks)  # frozen, eval mode
        if own:
            student = self.build()
            student.load_state_dict({k: v.to(self.device) for k, v in init_state.items()})
            student.requires_grad_(True)
        elif init_state is not None:
            student = self.inherit(init_state)
        elif kd.student_init == "teacher":
            student = copy.deepcopy(teacher).requires_grad_(True)
        else:
            student = self.build()  # seeded above
        # masks folded in once, their gradient products in one call per step (train_steps'
        # grad_masks): the same weights, bit for bit, as prune's re-parametrisation, without
        # its product on every forward (6 % of an N-MNIST evaluation) or a hook per weight
        hooks = fold_masks(student, masks, per_weight=False) if kd.student_mask == "genome" else MaskHooks([])
        return student, teacher, hooks

    def _score(self, student: nn.Module, genome: Genome, teacher_acc: float, train_loss: float, inherited: bool,
               epochs: float | None = None) -> dict:
        """The metrics of a trained student: its validation pass with the energy hooks, and
        the rest of ``__call__``'s metrics except ``wall_s``; ``train_samples`` counts
        ``epochs`` (default kd.epochs) of KD training."""
        kd = self.ctx.cfg.kd
        energy = self.ctx.cfg.energy
        with EnergyCounter(student, energy.e_ac_pj, energy.e_mac_pj) as counter:  # hooks only read: same accuracy
            student_acc = accuracy(student, self.ctx.val, eval_batch_size(self.hot_path, self.device),
                                   channels_last=self.hot_path.channels_last)
        sparsity, per_layer = weight_sparsity(student, self.ctx.layers)
        return {
            "accuracy": student_acc,
            "sparsity": sparsity,
            "teacher_accuracy": teacher_acc,
            "genome_sparsity": genome.sparsity,
            "layer_sparsity": per_layer,
            "kd_mode": kd.mode,
            "train_loss": train_loss,
            "train_samples": samples_processed(len(self.ctx.train), kd.batch_size, kd.epochs if epochs is None else epochs),
            "wall_s": None,
            "worker": f"{socket.gethostname()}:{os.getpid()}",
            "device": str(self.device),
            "threads": torch.get_num_threads(),
            "inherited": inherited,
            "backend": self.backend,
            **(counter.report().metrics() if counter.samples else {}),  # synops, effective_acs/macs, energy_pj, ...
        }

    def group(self, jobs: list[tuple]) -> list:
        """Evaluate a group of jobs ``[(genome, seed[, init_state])]`` with their K students
        trained as one grouped net (``search.students_per_batch``; ``evo_snn.evaluation.grouped``).

        Returns one ``FitnessResult`` or Exception per job, in order, with the metrics of
        ``__call__`` plus ``group_size`` (K), ``group_seed`` (the seed of the batch order)
        and ``group_wall_s`` (the whole group's wall time; ``wall_s`` is its K-th part). A
        job whose genome does not fit the model gets its Exception; the others train.
        Seed scheme: batch order and augmentation from the first job's seed, student k's
        initialisation from its own seed (see ``evo_snn.evaluation.grouped``). One job: ``[self(*job)]``.
        teacher_accuracy: each sparse teacher's validation accuracy, from one grouped pass
        (None for every member with ``search.measure_teacher`` false: no pass).
        Jobs of a multi-fidelity search ``(genome, seed, init_state, rung)`` share one rung
        (the search maps one rung at a time): the group trains ``rung.spent`` x kd.epochs,
        from each member's own rung-0 student at a continuation (as ``__call__``).
        """
        if len(jobs) == 1:
            try:
                return [self(*jobs[0])]
            except Exception as e:  # noqa: BLE001 - reported per job
                return [e]
        from evo_snn.evaluation.grouped import group, group_masks

        t0 = time.perf_counter()
        rung = _shared_rung(jobs)
        own, epochs = self._budget(rung)
        out, ok, students, teachers, masks = self._prepare_members(jobs, rung)
        if not ok:
            return out
        seed0 = int(jobs[0][1])
        net = group(students)
        hooks = group_masks(net, masks, per_weight=False)
        sparse_group = group(teachers).requires_grad_(False).eval()
        if self.hot_path.channels_last:
            channels_last(sparse_group)
        teacher_accs = self._group_teacher_accuracy(sparse_group, len(ok))
        per_step: list[torch.Tensor] = []
        kd = self.ctx.cfg.kd
        train_steps(net, self.ctx.train, hot_path=self.hot_path, epochs=epochs, batch_size=kd.batch_size, lr=kd.lr,
                    loss_fn=self._group_loss(sparse_group, per_step), seed=seed0, grad_masks=hooks)
        hooks.remove()
        losses = self._member_train_losses(per_step, len(ok))
        for k, (i, student) in enumerate(zip(ok, students)):
            student.load_state_dict({key: v.detach().clone() for key, v in net.member_state(k).items()})
            job = jobs[i]  # noqa: PLR1736 - i indexes jobs, k the group's members
            inherited = len(job) > 2 and job[2] is not None and not own
            out[i] = FitnessResult(self._score(student, job[0], teacher_accs[k], losses[k], inherited, epochs=epochs), cpu_state(student))
        wall = time.perf_counter() - t0
        for i in ok:
            out[i].metrics.update(wall_s=wall / len(jobs), group_wall_s=wall, group_size=len(jobs), group_seed=seed0)
        return out

    def _prepare_members(self, jobs: list[tuple], rung: Rung | None):
        """(results so far: an Exception for each job whose genome does not fit, else None;
        the indices of the jobs that train; their students, sparse teachers and masks)."""
        out: list = [None] * len(jobs)
        ok, students, teachers, masks = [], [], [], []
        for i, job in enumerate(jobs):
            genome, seed, init_state = job[0], job[1], job[2] if len(job) > 2 else None
            try:
                student, teacher, hooks = self._prepare(genome, seed, init_state, rung)
                hooks.remove()  # the group keeps the zeros with its own masks
            except Exception as e:  # noqa: BLE001 - a genome that does not fit: that member fails
                out[i] = e
                continue
            ok.append(i)
            students.append(student)
            teachers.append(teacher)
            masks.append(genome.mask_dict() if self.ctx.cfg.kd.student_mask == "genome" else None)
        return out, ok, students, teachers, masks

    def _group_teacher_accuracy(self, sparse_group: nn.Module, k: int) -> list[float | None]:
        """Each of the K sparse teachers' validation accuracy, from one grouped pass (None
        for each with ``search.measure_teacher`` false: no pass)."""
        if not self.ctx.cfg.search.measure_teacher:
            return [None] * k
        val = self.ctx.val
        if not len(val):
            return [float("nan")] * k
        logits = predict_logits(sparse_group, val, channels_last=self.hot_path.channels_last)  # (N_val, K, classes)
        return [(logits[:, m].argmax(1) == val.labels).float().mean().item() for m in range(k)]

    def _group_loss(self, sparse_group: nn.Module, per_step: list):
        """The grouped training loss ``loss_fn(z_s [N, K, C], y, x_seq)``: the sum of the K
        members' losses (``grouped.member_losses``) against their own sparse teachers (one
        grouped forward) or the one shared teacher; each step's ``[K]`` losses go to ``per_step``."""
        from evo_snn.evaluation.grouped import member_losses

        kd = self.ctx.cfg.kd
        mode = kd_mode(kd.mode)
        single = teacher_for(kd.mode, sparse=None, dense=self.teacher, ann=self.ann_teacher) if mode.teacher != "sparse" else None

        def loss_fn(z_s, y, x_seq):
            z_t = None
            if mode.teacher is not None:
                with torch.no_grad():
                    if single is None:
                        z_t = sparse_group(x_seq)
                        functional.reset_net(sparse_group)
                    else:
                        z_t = single(x_seq).unsqueeze(1).expand_as(z_s)
                        functional.reset_net(single)
            losses = member_losses(kd, z_s, z_t, y)
            per_step.append(losses.detach())
            return losses.sum()

        return loss_fn

    def _member_train_losses(self, per_step: list[torch.Tensor], k: int) -> list[float]:
        """Each member's mean loss over the steps of the last (possibly partial) epoch, as
        ``train_steps`` returns it for one student."""
        from evo_snn.evaluation.grouped import last_epoch_steps

        per_epoch = math.ceil(len(self.ctx.train) / self.ctx.cfg.kd.batch_size)
        last = per_step[len(per_step) - last_epoch_steps(len(per_step), per_epoch):]
        return [mean_loss([v[m] for v in last]) for m in range(k)]


def _shared_rung(jobs: list[tuple]) -> Rung | None:
    """The one rung of a group's jobs ``(genome, seed, init_state, rung)`` (None without
    rungs). raises ValueError when they differ."""
    rung_of = {job[3] if len(job) > 3 else None for job in jobs}
    if len(rung_of) != 1:
        raise ValueError(f"a group's jobs must share one rung, got {sorted(map(str, rung_of))}")
    return rung_of.pop()
