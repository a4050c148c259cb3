"""K students in one network: ``search.students_per_batch = K`` (issue 12).

``group(models)`` turns K nets of one architecture (built by ``build_model`` with the same
``ModelConfig``, e.g. K students of different genomes) into one ``GroupedNet`` whose
forward runs all K on the same batch at once:

- each ``Conv2d(c_in, c_out, groups=g)`` becomes ``Conv2d(K*c_in, K*c_out, groups=K*g)``
  (spikingjelly ``layer.Conv2d``), its weight the K weights concatenated on dim 0: the
  channels of student k are the k-th block of ``c`` channels (k-major);
- each ``BatchNorm2d(C)`` becomes ``BatchNorm2d(K*C)``: statistics are per channel, so
  per student, as before (running statistics too);
- each ``Linear(in, out)`` becomes ``GroupedLinear``: ``[..., K*in] -> [..., K*out]``, a
  batched matmul with weight ``[K, out, in]`` (block-diagonal);
- neurons (IF, LIF), pooling, Flatten, VotingLayer and the models' own ``forward`` code
  are kept as they are: they act per element or per channel, so on the k-major layout
  each student's slice is that student's solo computation.

``GroupedNet(x_seq [T, N, C, H, W]) -> [N, K, num_classes]``: the input convolution (the
net's first parametrised layer, a Conv2d with groups 1) is one ``Conv2d(c_in, K*c_out)``
fed the input once (issue 26: no K-fold copy of the batch, for the students and the
grouped sparse teachers alike; the same weight tensor, outputs equal up to float
rounding of the convolution kernel); for another first layer the input is repeated K
times on the channel axis. Refused (ValueError naming the module): a module with parameters
or buffers of its own other than the three above, e.g. PLIF's learnable tau (one per
layer, which the K students would share). ``Dropout`` runs (its masks are drawn for the
K*C channels at once, so a student's masks differ from its solo run's: with dropout a
group is not equal to K solo runs, only distributed like them).

Why not ``torch.func`` (``stack_module_state`` + ``functional_call`` + ``vmap``, the torch
model-ensembling recipe): on spikingjelly 2.0.0 it runs forward and backward, but the
neuron ops (``sj_if::forward``, ...) are custom ops without a vmap batching rule, so vmap
falls back to a loop over the K students ("performance drop ... batching rule for
sj_if::forward"), and the neurons' stored state ``v`` leaves vmap with one student's
shape. Under vmap the convolutions become grouped convolutions anyway; here the whole
net is one.

Why the update of each student equals its solo update: the loss of the group is the
*sum* of the K students' losses (``member_losses``), and no parameter is shared, so each
student's gradient is its solo gradient; Adam (and the cosine schedule) is element-wise,
so each student's slice of every parameter and of Adam's moments moves as in its solo
run on the same batches. ``tests/test_grouped.py`` checks it numerically (K = 3, float64).

Seed scheme (``GenomeFitness.group``): a group of jobs ``[(genome_k, seed_k, ...)]`` is
trained with the batch order and augmentation of ``seed_0``, the first member's seed (all K
see the same batches); student k is initialised as in its solo run with ``seed_k``
(``torch.manual_seed(seed_k)`` before it is built or copied). The search forms groups
deterministically: its fresh jobs in order, in chunks of K. A member's result equals
its solo result with seed ``seed_0`` up to float rounding (grouped vs solo kernels).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from spikingjelly.activation_based import functional, layer

from evo_snn.evaluation.workers import PerWorker
from evo_snn.structure.pruning import MaskHooks
from evo_snn.training.kd import KDLoss, VirtualTeacherLoss, kd_mode, virtual_teacher_probs


class GroupedLinear(nn.Module):
    """K linear layers side by side: ``x [..., K*in] -> [..., K*out]``, member k's slice
    ``x[..., k*in:(k+1)*in] @ weight[k].T + bias[k]``. weight ``[K, out, in]``, bias ``[K, out]`` or None."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None):
        super().__init__()
        self.weight = nn.Parameter(weight)
        self.bias = None if bias is None else nn.Parameter(bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        K, out_f, in_f = self.weight.shape
        lead = x.shape[:-1]
        xs = x.reshape(-1, K, in_f).transpose(0, 1)  # (K, M, in)
        y = torch.bmm(xs, self.weight.transpose(1, 2))  # (K, M, out)
        if self.bias is not None:
            y = y + self.bias.unsqueeze(1)
        return y.transpose(0, 1).reshape(*lead, K * out_f)


_KEPT = (nn.Dropout, layer.Dropout)  # modules with no state of their own that still run per element


def _grouped_module(mods: list[nn.Module], shared_input: bool = False) -> nn.Module | None:
    """The grouped replacement of one leaf module of the K nets, or None to keep it.
    shared_input: a Conv2d (groups 1) fed the net's input once, not K times: one
    ``Conv2d(c_in, K*c_out)`` (the same weight tensor as the grouped one)."""
    m0, K = mods[0], len(mods)
    if isinstance(m0, nn.Conv2d):
        c_in, groups = (m0.in_channels, 1) if shared_input else (K * m0.in_channels, K * m0.groups)
        new = layer.Conv2d(c_in, K * m0.out_channels, m0.kernel_size, stride=m0.stride, padding=m0.padding,
                           dilation=m0.dilation, groups=groups, bias=m0.bias is not None,
                           padding_mode=m0.padding_mode, step_mode="m")
        with torch.no_grad():
            new.weight.copy_(torch.cat([m.weight for m in mods]))
            if m0.bias is not None:
                new.bias.copy_(torch.cat([m.bias for m in mods]))
        return new.to(m0.weight.device, m0.weight.dtype)
    if isinstance(m0, nn.BatchNorm2d):
        ref = m0.running_mean if m0.running_mean is not None else m0.weight
        new = layer.BatchNorm2d(K * m0.num_features, eps=m0.eps, momentum=m0.momentum, affine=m0.affine,
                                track_running_stats=m0.track_running_stats, step_mode="m").to(ref.device, ref.dtype)
        with torch.no_grad():
            for name in ("weight", "bias", "running_mean", "running_var"):
                if getattr(m0, name, None) is not None:
                    getattr(new, name).copy_(torch.cat([getattr(m, name) for m in mods]))
            if m0.num_batches_tracked is not None:
                new.num_batches_tracked.copy_(m0.num_batches_tracked)
        return new
    if isinstance(m0, nn.Linear):
        bias = torch.stack([m.bias.detach() for m in mods]).clone() if m0.bias is not None else None
        return GroupedLinear(torch.stack([m.weight.detach() for m in mods]).clone(), bias)
    own = [n for n, t in list(m0._parameters.items()) + list(m0._buffers.items()) if t is not None]
    if own and not isinstance(m0, _KEPT):
        raise ValueError(f"cannot group {type(m0).__name__} (its {own} would be shared by the K students); "
                         "supported: Conv2d, BatchNorm2d, Linear and stateless layers (IF/LIF neurons, pooling, ...)")
    return None


class GroupedNet(nn.Module):
    """K students as one net; see the module docstring.

    forward(x_seq [T, N, C, H, W]) -> [N, K, num_classes] (student k's logits at [:, k]).
    ``member_state(k)`` gives student k's state_dict, with the keys of the solo net.
    """

    def __init__(self, models: Sequence[nn.Module]):
        super().__init__()
        if not models:
            raise ValueError("group() needs at least one net")
        self.k = len(models)
        self.net = copy.deepcopy(models[0])
        self._keys = list(models[0].state_dict())
        names = [n for n, _ in models[0].named_modules() if n]
        self.shared_input = _input_conv(models[0])
        for name in names:
            new = _grouped_module([m.get_submodule(name) for m in models], shared_input=name == self.shared_input)
            if new is not None:
                self.net.set_submodule(name, new)
        functional.set_step_mode(self.net, "m")
        self.train(models[0].training)

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        if self.shared_input is None:  # the input repeated K times on the channel axis
            reps = [1] * x_seq.dim()
            reps[2] = self.k
            x_seq = x_seq.repeat(*reps)
        z = self.net(x_seq)  # (N, K * num_classes)
        return z.reshape(z.shape[0], self.k, -1)

    def member_state(self, k: int) -> dict[str, torch.Tensor]:
        """Student k's state_dict (solo keys; detached views, clone to keep them)."""
        out = {}
        for key in self._keys:
            mod_name, attr = key.rsplit(".", 1) if "." in key else ("", key)
            mod = self.net.get_submodule(mod_name)
            t = getattr(mod, attr).detach()
            if isinstance(mod, GroupedLinear):
                out[key] = t[k]
            elif attr == "num_batches_tracked" or t.dim() == 0:
                out[key] = t
            else:
                out[key] = t.chunk(self.k, 0)[k]
        return out


def _input_conv(model: nn.Module) -> str | None:
    """The name of the net's input convolution when the input can be fed to it once (no
    K-fold copy): the first module with parameters or buffers, in registration order (the
    forward order of this project's nets), is a Conv2d with groups 1; else None. A net that
    called another parametrised layer first would fail loudly (its grouped layer expects
    K times the channels it gets), never silently."""
    for name, mod in model.named_modules():
        if any(t is not None for t in list(mod._parameters.values()) + list(mod._buffers.values())):
            return name if isinstance(mod, nn.Conv2d) and mod.groups == 1 else None
    return None


def group(models: Sequence[nn.Module]) -> GroupedNet:
    """``GroupedNet(models)``: K nets of one architecture (same ``build_model`` config) as
    one. raises ValueError for a module that cannot be grouped (see the module docstring)."""
    return GroupedNet(models)


def group_masks(net: GroupedNet, masks: Sequence[dict[str, np.ndarray] | None], per_weight: bool = True) -> MaskHooks:
    """Keep each student's pruned weights at zero while the group trains: for every layer
    masked in some member, zero the grouped weight where that member's mask is False and
    multiply its gradient by the stacked mask (a member without a mask for a layer, or
    ``None``, keeps all of it): one gradient hook per weight (``per_weight``), or, False,
    the pairs that the returned ``MaskHooks.mask_grads()`` multiplies in one call
    (``train_steps(grad_masks=...)``). Iterating the result gives the hook handles."""
    names = sorted({n for m in masks if m for n in m})
    handles, params, stacks = [], [], []
    for name in names:
        mod = net.net.get_submodule(name)
        w = mod.weight
        per = []
        for k, m in enumerate(masks):
            shape = w.shape[1:] if isinstance(mod, GroupedLinear) else (w.shape[0] // net.k, *w.shape[1:])
            per.append(torch.ones(shape, dtype=w.dtype) if not m or name not in m else torch.as_tensor(m[name]).to(w.dtype))
        stacked = (torch.stack(per) if isinstance(mod, GroupedLinear) else torch.cat(per)).to(w.device)
        with torch.no_grad():
            w.mul_(stacked)
        if per_weight:
            handles.append(w.register_hook(lambda g, s=stacked: g * s))
        else:
            params.append(w)
            stacks.append(stacked)
    return MaskHooks(handles, params, stacks)


def member_losses(kd_cfg, z_s: torch.Tensor, z_t: torch.Tensor | None, y: torch.Tensor) -> torch.Tensor:
    """Each student's training loss under ``kd_cfg.mode``, as ``evo_snn.training.kd.student_loss``
    computes it for one student: z_s ``[N, K, C]`` student logits, z_t ``[N, K, C]`` the
    teaching logits (None for modes without a teacher network), y ``[N]`` -> ``[K]``.

    Bit for bit the K solo losses (``solo_member_losses``, tested), with the softmaxes and
    the KL terms of all K computed at once and each member's KL summed over its own
    contiguous ``[N*C]`` block (the solo reduction's order). The cross-entropy's batch
    mean stays one ``nll_loss`` per member on the shared log-softmax: its cascade
    summation over the batch is not what a batched reduction computes."""
    mode = kd_mode(kd_cfg.mode)
    z_s = z_s.float()
    n, k, c = z_s.shape
    log_p = F.log_softmax(z_s, dim=2)
    ce = torch.stack([F.nll_loss(log_p[:, m], y) for m in range(k)])
    if mode.loss not in ("kd", "virtual"):  # 'ce'
        return ce
    a, tau = kd_cfg.alpha, kd_cfg.temperature
    plain = mode.loss == "virtual" and kd_cfg.default_form == "paper"  # KL to softmax(z_s), no tau^2
    if mode.loss == "kd":
        target = F.softmax(z_t.detach().float() / tau, dim=2)
    else:
        target = virtual_teacher_probs(y, c, kd_cfg.default_prob, tau, kd_cfg.default_form).unsqueeze(1).expand(n, k, c)
    log_q = log_p if plain else F.log_softmax(z_s / tau, dim=2)
    kl = F.kl_div(log_q, target, reduction="none").transpose(0, 1).reshape(k, n * c).sum(1) / n  # 'batchmean'
    return (a if plain else a * tau * tau) * kl + (1.0 - a) * ce  # the solo losses' float order


def solo_member_losses(kd_cfg, z_s: torch.Tensor, z_t: torch.Tensor | None, y: torch.Tensor) -> torch.Tensor:
    """``member_losses`` as K solo loss calls (the loop it replaces; the reference of its test)."""
    mode = kd_mode(kd_cfg.mode)
    K = z_s.shape[1]
    if mode.loss == "kd":
        kd = KDLoss(kd_cfg.alpha, kd_cfg.temperature)
        return torch.stack([kd(z_s[:, k], z_t[:, k], y) for k in range(K)])
    if mode.loss == "virtual":
        vt = VirtualTeacherLoss(kd_cfg.alpha, kd_cfg.temperature, kd_cfg.default_prob, kd_cfg.default_form)
        return torch.stack([vt(z_s[:, k], y) for k in range(K)])
    return torch.stack([F.cross_entropy(z_s[:, k], y) for k in range(K)])


def last_epoch_steps(steps: int, per_epoch: int) -> int:
    """How many of ``steps`` optimiser steps fall in the last (possibly partial) pass over
    ``per_epoch`` batches: the steps whose losses ``train_steps`` averages."""
    return (steps - 1) % per_epoch + 1 if per_epoch else 0


class GroupedJobs(PerWorker):
    """``fn`` applied to a group of jobs at once, for ``evaluator.map``.

    A job of this callable is ``(members, seed)``: ``members`` a tuple of ordinary jobs
    ``(genome, seed[, init_state])``, ``seed`` the first member's (it keys the evaluator's
    fault injection). Returns one ``FitnessResult`` or Exception per member, in order: the
    built fitness's ``group(members)`` where it has one (``GenomeFitness``), else ``fn``
    applied to each member in turn (a plain function in tests). Built once per worker
    like the ``PerWorker`` it wraps (a Ray actor passes its device through).
    """

    def __init__(self, fn):
        self.fn, self.factory, self._fn = fn, None, None

    def build(self, device: str | None = None):
        if self._fn is None:
            if isinstance(self.fn, PerWorker):
                self._fn = self.fn.build(device)
            else:
                build = getattr(self.fn, "build", None)
                built = build() if callable(build) else None
                self._fn = built if callable(built) else self.fn
        return self._fn

    def __call__(self, members, seed=None):
        fn = self.build()
        if hasattr(fn, "group"):
            return fn.group(list(members))
        out = []
        for job in members:
            try:
                out.append(fn(*job))
            except Exception as e:  # noqa: BLE001 - reported per member, as the evaluator reports a job
                out.append(e)
        return out

    def __getstate__(self):
        return {"fn": self.fn}

    def __setstate__(self, state):
        self.fn, self.factory, self._fn = state["fn"], None, None
