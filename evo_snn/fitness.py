"""Fitness of one genome: sparse teacher -> KD-trained student -> validation metrics.

The student's validation pass also counts its synaptic operations and spikes
(``evo_snn.energy.EnergyCounter``: forward hooks on that same pass, no extra one):
effective ACs/MACs, dense SynOps, spikes and firing rates, per layer and in total, and
the estimated energy (``energy.e_ac_pj`` / ``energy.e_mac_pj``), all per sample.

The test split never enters this module: a ``FitnessContext`` carries only the
training and validation splits, so fitness cannot be read off the test set.
"""

from __future__ import annotations

import copy
import os
import socket
import time
from dataclasses import dataclass, replace

import torch
import torch.nn as nn

from .config import Config
from .data import FrameSet
from .energy import EnergyCounter
from .genome import Genome
from .kd import kd_mode, student_loss, teacher_for
from .models import build_model, select_backend
from .outcome import FitnessResult  # noqa: F401  (re-exported: evaluators and tests import it here)
from .pruning import MaskHooks, fold_masks, sparse_copy, weight_sparsity
from .train import accuracy, cpu_state, samples_processed, train_steps


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


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class GenomeFitness:
    """Callable evaluating genomes against one dense teacher (built once per worker)."""

    def __init__(self, ctx: FitnessContext, device: torch.device | None = None):
        self.ctx = ctx
        self.device = device or default_device()
        self.teacher = self.build()
        self.teacher.load_state_dict(ctx.teacher_state)
        self.teacher.requires_grad_(False).eval()
        self.backend = select_backend(self.teacher, self.device)  # students copy the teacher's nodes
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

    def __call__(self, genome: Genome, seed: int, init_state: dict[str, torch.Tensor] | None = None) -> FitnessResult:
        """KD-train a student for ``genome`` and score it on validation.

        metrics: accuracy, sparsity, teacher_accuracy, ..., and the student's counts on the
        validation pass, per sample (``EnergyReport.metrics``): ``synops``, ``effective_acs``,
        ``effective_macs``, ``energy_pj``, ``energy_fraction`` (the ``energy`` objective),
        ``spikes``, ``firing_rate``, ``activation_sparsity`` and per-layer dicts.

        seed: drives the student's initialisation (``student_init='scratch'``), batch
        order and augmentation. init_state: a parent's trained student (weight
        inheritance, ``search.inherit_weights``): the student starts from it, with the
        connections the parent had pruned and ``genome`` keeps (regrown) taken from the
        dense teacher, and ``genome``'s masks applied. raises on a genome that does not
        fit the model (the evaluator reports it).
        """
        t0 = time.perf_counter()
        kd = self.ctx.cfg.kd
        torch.manual_seed(seed)
        masks = genome.mask_dict()
        teacher = sparse_copy(self.teacher, masks)  # frozen, eval mode
        teacher_acc = accuracy(teacher, self.ctx.val)

        if init_state is not None:
            student = self.inherit(init_state)
        elif kd.student_init == "teacher":
            student = copy.deepcopy(teacher).requires_grad_(True)
        else:
            student = self.build()  # seeded above
        # masks folded in once, kept by gradient hooks: the same weights, bit for bit, as
        # prune's re-parametrisation, without its product on every forward (6 % of an
        # N-MNIST evaluation, benchmarks/fitness_overhead.py)
        hooks = fold_masks(student, masks) if kd.student_mask == "genome" else MaskHooks([])

        teaching = teacher_for(kd.mode, sparse=teacher, dense=self.teacher, ann=self.ann_teacher)
        kd_loss = student_loss(kd, self.ctx.num_classes, teaching)
        train_loss = train_steps(student, self.ctx.train, epochs=kd.epochs, batch_size=kd.batch_size, lr=kd.lr, loss_fn=kd_loss, seed=seed)
        hooks.remove()
        energy = self.ctx.cfg.energy
        with EnergyCounter(student, energy.e_ac_pj, energy.e_mac_pj) as counter:  # hooks only read: same accuracy
            student_acc = accuracy(student, self.ctx.val)
        sparsity, per_layer = weight_sparsity(student, self.ctx.layers)
        metrics = {
            "accuracy": student_acc,
            "sparsity": sparsity,
            "teacher_accuracy": teacher_acc,
            "genome_sparsity": genome.sparsity,
            "layer_sparsity": per_layer,
            "kd_mode": kd.mode,
            "train_loss": train_loss,
            "train_samples": samples_processed(len(self.ctx.train), kd.batch_size, kd.epochs),
            "wall_s": time.perf_counter() - t0,
            "worker": f"{socket.gethostname()}:{os.getpid()}",
            "device": str(self.device),
            "threads": torch.get_num_threads(),
            "inherited": init_state is not None,
            "backend": self.backend,
            **(counter.report().metrics() if counter.samples else {}),  # synops, effective_acs/macs, energy_pj, ...
        }
        state = cpu_state(student)
        return FitnessResult(metrics, state)
