"""Applying genome masks to torch models (``torch.nn.utils.prune``).

``apply_masks`` uses ``prune.custom_from_mask``: the module's ``weight`` becomes
``weight_orig * weight_mask``, so pruned weights stay exactly zero while the model
trains (their gradient through the mask is zero). ``make_permanent`` folds the mask
back into a plain ``weight`` so a ``state_dict`` has ordinary keys.

``fold_masks`` is the cheaper equivalent that the fitness trains with: the mask is
multiplied into ``weight`` once and a gradient hook multiplies the weight's gradient by
it, instead of recomputing ``weight_orig * weight_mask`` in a forward pre-hook on every
forward. Element-wise this is the same arithmetic (forward: ``w * 1`` or ``w * 0`` once
instead of per forward; backward: the same ``grad * mask``), so a student trained either
way has bit-for-bit the same weights and the same Adam state.
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
    """The gradient hooks that ``fold_masks`` attached; ``remove()`` detaches them (the
    zeros stay in the weights)."""

    def __init__(self, handles: list):
        self.handles = handles

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []


def fold_masks(model: nn.Module, masks: dict[str, np.ndarray]) -> MaskHooks:
    """Zero the pruned weights in place (``weight *= mask``) and keep them zero while
    training: a gradient hook multiplies each masked weight's gradient by its mask, so
    Adam never moves a pruned weight (its moments stay 0). masks: bool arrays (True =
    kept) shaped as the weights, by layer name. Returns the hooks (``remove()`` them
    after training). raises ValueError for an unknown layer or a mask of the wrong shape.
    Equivalent, bit for bit, to ``apply_masks`` followed by ``make_permanent`` after
    training (see the module docstring), without the per-forward re-parametrisation."""
    layers = prunable_layers(model, list(masks))
    handles = []
    for name, mask in masks.items():
        w = layers[name].weight
        if tuple(mask.shape) != tuple(w.shape):
            raise ValueError(f"mask for {name} has shape {mask.shape}, weight has {tuple(w.shape)}")
        m = torch.as_tensor(mask, device=w.device).to(w.dtype)
        with torch.no_grad():
            w.mul_(m)
        if w.requires_grad:
            handles.append(w.register_hook(lambda g, m=m: g * m))
    return MaskHooks(handles)


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
