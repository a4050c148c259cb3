"""Applying genome masks to torch models (``torch.nn.utils.prune``).

``apply_masks`` uses ``prune.custom_from_mask``: the module's ``weight`` becomes
``weight_orig * weight_mask``, so pruned weights stay exactly zero while the model
trains (their gradient through the mask is zero). ``make_permanent`` folds the mask
back into a plain ``weight`` so a ``state_dict`` has ordinary keys.

``fold_masks`` is the cheaper equivalent that the fitness trains with: the mask is
multiplied into ``weight`` once and the weight's gradient is multiplied by it, instead of
recomputing ``weight_orig * weight_mask`` in a forward pre-hook on every forward.
Element-wise this is the same arithmetic (forward: ``w * 1`` or ``w * 0`` once instead of
per forward; backward: the same ``grad * mask``), so a student trained either way has
bit-for-bit the same weights and the same Adam state. The gradient product is either one
gradient hook per weight (``per_weight=True``, the default) or, for a training loop that
calls ``MaskHooks.mask_grads()`` between ``backward()`` and the optimizer step
(``evo_snn.training.train.train_steps(grad_masks=...)``), one ``torch._foreach_mul_`` over
all masked gradients (issue 26: the same products, one call instead of one hook each).
"""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn as nn
from torch.nn.utils import prune

PRUNABLE_TYPES = (nn.Conv2d, nn.Linear)


def prunable_layers(model: nn.Module, spec="all") -> dict[str, nn.Module]:
    """{name: module} of the layers a genome covers, in model order.

    spec: 'all' (every Conv2d and Linear) or a list of module names.
    raises ValueError naming an unknown or non-prunable module.
    """
    modules = dict(model.named_modules())
    if spec == "all":
        return {n: m for n, m in modules.items() if isinstance(m, PRUNABLE_TYPES)}
    out = {}
    for name in spec:
        if name not in modules or not isinstance(modules[name], PRUNABLE_TYPES):
            known = [n for n, m in modules.items() if isinstance(m, PRUNABLE_TYPES)]
            raise ValueError(f"genome.prunable: {name!r} is not a conv or linear layer of the model; known: {known}")
        out[name] = modules[name]
    return out


def weight_magnitudes(model: nn.Module, names) -> dict[str, np.ndarray]:
    """{name: |W| as float32 numpy} for the given layers."""
    layers = prunable_layers(model, list(names))
    return {n: m.weight.detach().abs().cpu().numpy().astype(np.float32) for n, m in layers.items()}


def apply_masks(model: nn.Module, masks: dict[str, np.ndarray]) -> nn.Module:
    """Attach bool masks (True = kept) in place via prune.custom_from_mask; returns model."""
    layers = prunable_layers(model, list(masks))
    for name, mask in masks.items():
        module = layers[name]
        if tuple(mask.shape) != tuple(module.weight.shape):
            raise ValueError(f"mask for {name} has shape {mask.shape}, weight has {tuple(module.weight.shape)}")
        prune.custom_from_mask(module, "weight", torch.as_tensor(mask, device=module.weight.device))
    return model


class MaskHooks:
    """How the masks of ``fold_masks`` (or ``grouped.group_masks``) keep pruned weights at
    zero: per-weight gradient hooks (``handles``), or the (weight, mask) pairs that
    ``mask_grads()`` multiplies in one call. ``remove()`` detaches the hooks and forgets
    the pairs (the zeros stay in the weights). Iterating gives the hook handles."""

    def __init__(self, handles: list, params: list | None = None, masks: list | None = None):
        self.handles = handles
        self.params = list(params or [])  # weights whose .grad mask_grads() multiplies
        self.masks = list(masks or [])  # their masks, same shape, dtype and device

    def mask_grads(self) -> None:
        """``grad *= mask`` for every weight of ``params`` that has a gradient, in one
        ``torch._foreach_mul_``: what the per-weight hooks compute, bit for bit, once the
        backward pass has run (call it before the optimizer step). A no-op without pairs."""
        pairs = [(p.grad, m) for p, m in zip(self.params, self.masks) if p.grad is not None]
        if pairs:
            torch._foreach_mul_([g for g, _ in pairs], [m for _, m in pairs])

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles, self.params, self.masks = [], [], []

    def __iter__(self):
        return iter(list(self.handles))


def fold_masks(model: nn.Module, masks: dict[str, np.ndarray], per_weight: bool = True) -> MaskHooks:
    """Zero the pruned weights in place (``weight *= mask``) and keep them zero while
    training: each masked weight's gradient is multiplied by its mask, so Adam never moves
    a pruned weight (its moments stay 0). masks: bool arrays (True = kept) shaped as the
    weights, by layer name. per_weight: True registers one gradient hook per weight (any
    training loop keeps the zeros); False registers none, and the loop must call the
    returned ``mask_grads()`` after each backward (``train_steps(grad_masks=...)``).
    Returns the hooks (``remove()`` them after training). raises ValueError for an unknown
    layer or a mask of the wrong shape. Equivalent, bit for bit, to ``apply_masks``
    followed by ``make_permanent`` after training (see the module docstring), without the
    per-forward re-parametrisation."""
    layers = prunable_layers(model, list(masks))
    handles, params, tensors = [], [], []
    for name, mask in masks.items():
        w = layers[name].weight
        if tuple(mask.shape) != tuple(w.shape):
            raise ValueError(f"mask for {name} has shape {mask.shape}, weight has {tuple(w.shape)}")
        m = torch.as_tensor(mask, device=w.device).to(w.dtype)
        with torch.no_grad():
            w.mul_(m)
        if w.requires_grad and per_weight:
            handles.append(w.register_hook(lambda g, m=m: g * m))
        elif w.requires_grad:
            params.append(w)
            tensors.append(m)
    return MaskHooks(handles, params, tensors)


def make_permanent(model: nn.Module) -> nn.Module:
    """Remove every pruning re-parametrisation in place, keeping the zeros; returns model."""
    for module in model.modules():
        if prune.is_pruned(module) and hasattr(module, "weight_orig"):
            prune.remove(module, "weight")
    return model


def sparse_copy(model: nn.Module, masks: dict[str, np.ndarray]) -> nn.Module:
    """A frozen copy of ``model`` with the masks folded in: the mutated sparse teacher.
    (The weights equal ``make_permanent(apply_masks(copy, masks))``'s; the masks are
    multiplied in directly, without the re-parametrisation round trip.)"""
    sparse = copy.deepcopy(model).requires_grad_(False)
    fold_masks(sparse, masks)
    return sparse.eval()


def weight_sparsity(model: nn.Module, names) -> tuple[float, dict[str, float]]:
    """(overall, per layer) fraction of exactly-zero weights over the named layers, in [0, 1]."""
    layers = prunable_layers(model, list(names))
    zeros = {n: int((m.weight == 0).sum()) for n, m in layers.items()}
    total = sum(m.weight.numel() for m in layers.values())
    per_layer = {n: zeros[n] / layers[n].weight.numel() for n in layers}
    return sum(zeros.values()) / max(total, 1), per_layer
