"""Training and evaluation loops for multi-step SNNs.

Frame sets are stored sample-major (``[N, T, C, H, W]``); ``FrameSet.to_seq`` turns
each batch into the spikingjelly layout ``x_seq: [T, N, C, H, W]`` (augmenting
training batches where the data set says so) before the forward pass, and
``functional.reset_net`` runs after every batch, in evaluation too.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from spikingjelly.activation_based import functional
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, SequentialSampler
from tqdm.auto import tqdm

from .data import FrameSet


def loader(fs: FrameSet, batch_size: int, shuffle: bool, seed: int = 0) -> DataLoader:
    """Batches ``(x [B, ...] storage dtype, y [B])`` of ``fs``, fetched a batch at a time
    (``fs[index_list]``) so that a memory-mapped set is never copied whole. The order
    equals ``DataLoader(fs, batch_size, shuffle, generator=Generator().manual_seed(seed))``."""
    g = torch.Generator().manual_seed(seed)
    base = RandomSampler(fs, generator=g) if shuffle else SequentialSampler(fs)
    return DataLoader(fs, sampler=BatchSampler(base, batch_size, drop_last=False), batch_size=None, generator=g)


@torch.no_grad()
def predict_logits(model: nn.Module, fs: FrameSet, batch_size: int = 64) -> torch.Tensor:
    """Logits [N, num_classes] of ``model`` in eval mode over the frame set (CPU tensor)."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = []
    for x, _ in loader(fs, batch_size, shuffle=False):
        out.append(model(fs.to_seq(x, train=False).to(device)).cpu())
        functional.reset_net(model)
    model.train(was_training)
    return torch.cat(out) if out else torch.empty(0)


def accuracy(model: nn.Module, fs: FrameSet, batch_size: int = 64) -> float:
    """Top-1 accuracy, a fraction in [0, 1]."""
    if len(fs) == 0:
        return float("nan")
    return (predict_logits(model, fs, batch_size).argmax(1) == fs.labels).float().mean().item()


def cpu_state(model_or_state: nn.Module | dict) -> dict[str, torch.Tensor]:
    """A state_dict detached and on the CPU (what a FitnessContext, a FitnessResult and a
    checkpoint hold), of a module or of a state_dict."""
    state = model_or_state.state_dict() if isinstance(model_or_state, nn.Module) else model_or_state
    return {k: v.detach().cpu() for k, v in state.items()}


def samples_processed(n: int, batch_size: int, epochs: float) -> int:
    """Training samples that ``train_steps`` feeds forward and backward for a set of
    ``n`` samples: ``ceil(epochs * batches_per_epoch)`` steps (at least one), each
    batch ``batch_size`` samples except the last batch of a pass (``n mod batch_size``).
    The unit of the compute budget that search and baselines are compared at."""
    per_epoch = math.ceil(n / batch_size)
    if per_epoch == 0:
        return 0
    steps = max(1, math.ceil(epochs * per_epoch))
    full, rest = divmod(steps, per_epoch)
    return full * n + min(rest * batch_size, n)


def train_steps(
    model: nn.Module,
    fs: FrameSet,
    *,
    epochs: float,
    batch_size: int,
    lr: float,
    loss_fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
    seed: int,
    weight_decay: float = 0.0,
    progress: str | None = None,
    epoch_end: Callable[[int], None] | None = None,
) -> float:
    """Adam with a cosine schedule for ``epochs`` (may be fractional) over ``fs``.

    loss_fn(logits, labels, x_seq) -> scalar. Returns the mean training loss of the
    last epoch. ``epoch_end(epoch)`` is called after each full epoch.
    """
    device = next(model.parameters()).device
    dl = loader(fs, batch_size, shuffle=True, seed=seed)
    aug_gen = torch.Generator().manual_seed(seed + 1)
    steps = max(1, math.ceil(epochs * len(dl)))
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    model.train()
    bar = tqdm(total=steps, desc=progress, leave=False, disable=progress is None)
    step, epoch, losses = 0, 0, []
    while step < steps:
        losses = []
        for x, y in dl:
            x_seq, y = fs.to_seq(x, train=True, generator=aug_gen).to(device), y.to(device)
            loss = loss_fn(model(x_seq), y, x_seq)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            functional.reset_net(model)
            losses.append(loss.detach())  # .item() once per epoch, not per step: no device sync per step
            step += 1
            bar.update(1)
            if step >= steps:
                break
        if len(losses) == len(dl):  # a full pass over the data
            epoch += 1
            if epoch_end is not None:
                epoch_end(epoch)
    bar.close()
    return float(sum(v.item() for v in losses) / max(len(losses), 1))


def ce_loss(logits: torch.Tensor, y: torch.Tensor, _x_seq: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, y)
