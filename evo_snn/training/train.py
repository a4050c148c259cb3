"""Training and evaluation loops for multi-step SNNs.

Frame sets are stored sample-major (``[N, T, C, H, W]``); ``FrameSet.to_seq`` turns
each batch into the spikingjelly layout ``x_seq: [T, N, C, H, W]`` (augmenting
training batches where the data set says so) before the forward pass, and
``functional.reset_net`` runs after every batch, in evaluation too.

The GPU hot path (``TrainConfig``, the config's ``train`` section; the defaults change
nothing): ``autocast`` (``train.amp``: bf16 or fp16 mixed precision of the training
forwards, the loss in float32), ``channels_last_seq`` / ``channels_last``
(``train.channels_last``) and ``to_device`` (pinned memory and ``non_blocking`` copies of
CPU batches to a CUDA device).
"""

from __future__ import annotations

import contextlib
import copy
import math
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from spikingjelly.activation_based import functional
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, SequentialSampler
from tqdm.auto import tqdm

from evo_snn import threads
from evo_snn.config import AMP_MODES, ConfigError, TrainConfig
from evo_snn.data import FrameSet

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
"""``train.amp`` -> the autocast dtype ('none' runs float32 without autocast)."""


def check_hot_path(train_cfg: TrainConfig, device: torch.device | str) -> None:
    """raises ConfigError when ``train.amp`` cannot run on ``device``: 'fp16' needs CUDA
    (its GradScaler), 'bf16' on CUDA needs a GPU with bfloat16 (compute capability 8+)."""
    device = torch.device(device)
    if train_cfg.amp not in AMP_MODES:
        raise ConfigError(f"train.amp must be one of {list(AMP_MODES)}, got {train_cfg.amp!r}")
    if train_cfg.amp == "fp16" and device.type != "cuda":
        raise ConfigError(f"train.amp 'fp16' needs a CUDA device (its GradScaler), the device is {device}; "
                          "use train.amp=bf16 or none")
    if train_cfg.amp == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError(f"train.amp 'bf16': {device} has no bfloat16 support; use train.amp=fp16 or none")


def autocast(amp: str, device: torch.device | str) -> contextlib.AbstractContextManager:
    """The context that runs forwards under ``train.amp``: ``torch.autocast(device.type,
    dtype)`` for 'bf16' / 'fp16', a no-op context for 'none'. raises ValueError for an
    unknown mode."""
    if amp == "none":
        return contextlib.nullcontext()
    if amp not in AMP_DTYPES:
        raise ValueError(f"unknown amp mode {amp!r}; known: {list(AMP_MODES)}")
    return torch.autocast(device_type=torch.device(device).type, dtype=AMP_DTYPES[amp])


def to_device(x: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """``x`` on ``device``. A CPU tensor bound for a CUDA device is copied into pinned
    (page-locked) memory and sent with ``non_blocking=True``, so the copy overlaps the
    GPU's work; anywhere else ``x.to(device)`` (the same tensor, not pinned, when it is
    already there, e.g. CPU -> CPU or a device-resident data set)."""
    device = torch.device(device)
    if device.type == "cuda" and x.device.type == "cpu":
        return x.pin_memory().to(device, non_blocking=True)
    return x.to(device)


def channels_last_seq(x_seq: torch.Tensor) -> torch.Tensor:
    """``x_seq: [T, N, C, H, W]`` (same shape and values) laid out as ``[T, N, H, W, C]`` in
    memory, so that spikingjelly's multi-step flatten to ``[T*N, C, H, W]`` (a view) is a
    channels-last tensor. Other ranks are returned as they are."""
    if x_seq.dim() != 5:
        return x_seq
    return x_seq.permute(0, 1, 3, 4, 2).contiguous().permute(0, 1, 4, 2, 3)


def channels_last(model: nn.Module) -> nn.Module:
    """``model`` with every 4-D parameter and buffer (conv weights) in the channels-last
    memory format, in place (the Parameter objects, and hooks on them, stay); returns it."""
    return model.to(memory_format=torch.channels_last)


def loader(fs: FrameSet, batch_size: int, shuffle: bool, seed: int = 0) -> DataLoader:
    """Batches ``(x [B, ...] storage dtype, y [B])`` of ``fs``, fetched a batch at a time
    (``fs[index_list]``) so that a memory-mapped set is never copied whole. The order
    equals ``DataLoader(fs, batch_size, shuffle, generator=Generator().manual_seed(seed))``."""
    g = torch.Generator().manual_seed(seed)
    base = RandomSampler(fs, generator=g) if shuffle else SequentialSampler(fs)
    return DataLoader(fs, sampler=BatchSampler(base, batch_size, drop_last=False), batch_size=None, generator=g)


def eval_batch_size(train_cfg: TrainConfig | None, device: torch.device | str) -> int:
    """The validation batch size: ``train.eval_batch_size``, or when it is null 512 on a
    CUDA device and 64 elsewhere."""
    if train_cfg is not None and train_cfg.eval_batch_size is not None:
        return int(train_cfg.eval_batch_size)
    return 512 if torch.device(device).type == "cuda" else 64


@torch.no_grad()
def predict_logits(model: nn.Module, fs: FrameSet, batch_size: int = 64, *, channels_last: bool = False) -> torch.Tensor:
    """Logits [N, num_classes] of ``model`` in eval mode over the frame set (CPU tensor),
    float32. channels_last: batches in the channels-last layout (``channels_last_seq``)."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = []
    for x, _ in loader(fs, batch_size, shuffle=False):
        x_seq = fs.to_seq(to_device(x, device), train=False)  # the stored batch sent, prepared there
        out.append(model(channels_last_seq(x_seq) if channels_last else x_seq))
        functional.reset_net(model)
        threads.tick()
    model.train(was_training)
    return torch.cat(out).cpu() if out else torch.empty(0)  # to the host once per pass, not once per batch


def accuracy(model: nn.Module, fs: FrameSet, batch_size: int = 64, *, channels_last: bool = False) -> float:
    """Top-1 accuracy, a fraction in [0, 1] (nan for an empty set)."""
    if len(fs) == 0:
        return float("nan")
    return (predict_logits(model, fs, batch_size, channels_last=channels_last).argmax(1) == fs.labels).float().mean().item()


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


ADAM_IMPLS = ("fused", "foreach", "single")
"""``adam(impl=...)``: torch's fused kernel (CUDA), its multi-tensor (foreach) path, or the
per-parameter loop (torch's own choice for CPU parameters, the loop before issue 26)."""


def adam(params, *, lr: float, weight_decay: float, device: torch.device | str, impl: str | None = None) -> torch.optim.Adam:
    """The Adam of ``train_steps`` over ``params``: impl None = 'fused' on a CUDA device
    (one kernel for all parameters, no host ``.item()`` per parameter), 'foreach'
    elsewhere (one call per operation over all parameters; on the CPU bit for bit the
    per-parameter loop's arithmetic, tested). raises ValueError for an unknown impl."""
    impl = impl or ("fused" if torch.device(device).type == "cuda" else "foreach")
    if impl not in ADAM_IMPLS:
        raise ValueError(f"unknown Adam implementation {impl!r}; known: {list(ADAM_IMPLS)}")
    kw = {"fused": {"fused": True}, "foreach": {"foreach": True}, "single": {"foreach": False}}[impl]
    return torch.optim.Adam(list(params), lr=lr, weight_decay=weight_decay, **kw)


class _Run:
    """The state of one ``train_steps`` loop: model, optimizer, schedule, GradScaler, batch
    order and augmentation generators, and where it stands (step, epoch, last loss)."""

    def __init__(self, model: nn.Module, fs: FrameSet, *, epochs: float, batch_size: int, lr: float, seed: int,
                 weight_decay: float, hot_path: TrainConfig, adam_impl: str | None, grad_masks):
        self.model, self.fs, self.hot_path, self.grad_masks = model, fs, hot_path, grad_masks
        self.device = next(model.parameters()).device
        if hot_path.channels_last:
            channels_last(model)
        self.scaler = torch.amp.GradScaler(self.device.type) if hot_path.amp == "fp16" else None
        self.dl = loader(fs, batch_size, shuffle=True, seed=seed)
        self.aug_gen = torch.Generator().manual_seed(seed + 1)
        self.steps = max(1, math.ceil(epochs * len(self.dl)))
        self.opt = adam([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=weight_decay,
                        device=self.device, impl=adam_impl)
        self.sched = torch.optim.lr_scheduler.CosineAnnealingLR(self.opt, T_max=self.steps)
        self.step, self.epoch, self.last_loss = 0, 0, None

    def resume(self, state: dict) -> None:
        """Continue from a ``snapshot`` state (see ``train_steps``)."""
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["opt"])
        self.sched.load_state_dict(state["sched"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.dl.generator.set_state(state["loader_rng"])
        self.aug_gen.set_state(state["aug_rng"])
        self.step, self.epoch, self.last_loss = int(state["step"]), int(state["epoch"]), float(state["loss"])

    def snapshot(self, losses: list[torch.Tensor]) -> dict:
        """A deep copy of everything the loop needs to go on after a full epoch."""
        return copy.deepcopy({"epoch": self.epoch, "step": self.step, "loss": mean_loss(losses),
                              "model": self.model.state_dict(), "opt": self.opt.state_dict(), "sched": self.sched.state_dict(),
                              "scaler": self.scaler.state_dict() if self.scaler is not None else {},
                              "loader_rng": self.dl.generator.get_state(), "aug_rng": self.aug_gen.get_state()})

    def batch(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A training batch ``(x_seq [T, N, ...] float32, y [N])`` on the model's device: the
        stored batch (e.g. uint8) is sent there, then converted, augmented and repeated over T."""
        x_seq = self.fs.to_seq(to_device(x, self.device), train=True, generator=self.aug_gen)  # prepared on the device
        return (channels_last_seq(x_seq) if self.hot_path.channels_last else x_seq), to_device(y, self.device)

    def update(self, x_seq: torch.Tensor, y: torch.Tensor, loss_fn) -> torch.Tensor:
        """One optimizer step on a batch; returns the (detached) loss."""
        with autocast(self.hot_path.amp, self.device):
            loss = loss_fn(self.model(x_seq).float(), y, x_seq)  # .float(): the loss in float32 (a no-op without amp)
        self.opt.zero_grad(set_to_none=True)
        (loss if self.scaler is None else self.scaler.scale(loss)).backward()
        if self.grad_masks is not None:
            self.grad_masks.mask_grads()  # the masks' gradient products, one call (pruning.MaskHooks)
        if self.scaler is None:
            self.opt.step()
        else:
            self.scaler.step(self.opt)
            self.scaler.update()
        self.sched.step()
        functional.reset_net(self.model)
        threads.tick()  # refit torch's threads to the free cores (evo_snn.threads), at most every 2 s
        return loss.detach()  # .item() once per epoch, not per step: no device sync per step


def mean_loss(losses: list[torch.Tensor]) -> float:
    """The mean of a pass's step losses (one host read per loss, at the end of the pass)."""
    return float(sum(v.item() for v in losses) / max(len(losses), 1))


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
    hot_path: TrainConfig | None = None,
    snapshot: Callable[[dict], None] | None = None,
    resume_from: dict | None = None,
    grad_masks=None, adam_impl: str | None = None,
) -> float:
    """Adam with a cosine schedule for ``epochs`` (may be fractional) over ``fs``.

    loss_fn(logits, labels, x_seq) -> scalar, called with float32 logits ``[N, classes]``
    inside the ``train.amp`` autocast context (a teacher forward in it runs in mixed
    precision too; the KD losses take float32 of the teacher's logits). Returns the mean
    training loss of the last epoch. ``epoch_end(epoch)`` is called after each full epoch.
    hot_path: ``train.amp`` / ``train.channels_last`` (None = float32, the default layout);
    'fp16' scales the loss by a ``GradScaler`` (steps with inf/nan gradients are skipped);
    channels_last converts ``model`` in place and each batch.
    grad_masks: a ``pruning.MaskHooks`` (``fold_masks(..., per_weight=False)``), its
    ``mask_grads()`` run after each backward. adam_impl: ``adam``'s impl (None: its default).
    snapshot(state) is called after each full epoch but the last with everything the loop
    needs to go on (``epoch``, ``step``, ``loss``, the model's, optimizer's, schedule's and
    GradScaler's state_dicts, and the states of the batch-order and augmentation
    generators: tensors, numbers and dicts only, so ``torch.load(weights_only=True)``
    reads it; a deep copy, not a view of the live tensors); ``resume_from=state`` continues
    from it, and the run ends exactly as the uninterrupted one (same batches, augmentations,
    updates and returned loss)."""
    run = _Run(model, fs, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, weight_decay=weight_decay,
               hot_path=hot_path or TrainConfig(), adam_impl=adam_impl, grad_masks=grad_masks)
    model.train()
    if resume_from is not None:
        run.resume(resume_from)
    losses: list[torch.Tensor] = []
    bar = tqdm(total=run.steps, initial=run.step, desc=progress, leave=False, disable=progress is None)
    while run.step < run.steps:
        losses = []
        for x, y in run.dl:
            losses.append(run.update(*run.batch(x, y), loss_fn))
            run.step += 1
            bar.update(1)
            if run.step >= run.steps:
                break
        if len(losses) == len(run.dl):  # a full pass over the data
            run.epoch += 1
            if epoch_end is not None:
                epoch_end(run.epoch)
            if snapshot is not None and run.step < run.steps:
                snapshot(run.snapshot(losses))
    bar.close()
    if not losses and run.last_loss is not None:  # resumed at the end
        return run.last_loss
    return mean_loss(losses)


def ce_loss(logits: torch.Tensor, y: torch.Tensor, _x_seq: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, y)
