"""Batch transforms: stored samples -> ``x_seq: [T, N, C, H, W]`` float32, with training augmentation.

:class:`SeqTransform` is what :meth:`evo_snn.data.FrameSet.to_seq` applies, on the batch's
device (the training loop sends the stored uint8 batch first, or the frames live there:
``FrameSet.to``); every random draw comes from a CPU generator, so a batch prepared on
a GPU holds the host's values.

Event frames (``encoding='events'``): a batch ``[N, T, 2, H, W]`` of counts
becomes ``x_seq: [T, N, 2, H, W]`` float32 spike counts. Training batches may be
augmented (all off by default; ``data.aug_*`` in the config):

- random translation by up to ``translate_px`` pixels along each axis with zero
  fill (the same as a random crop of the original size after zero padding by
  ``translate_px``);
- random horizontal flip, probability 0.5 (**off by default and for DVS128 Gesture**:
  its left-hand and right-hand gestures, e.g. "left hand wave" vs "right hand
  wave", are different classes, so a flip changes the label);
- event drop: each event is dropped with probability ``event_drop``; on counts
  this is binomial thinning, ``c -> Binomial(c, 1 - event_drop)``.

One random translation and flip per sample, the same for all T frames of it.

Static images (``encoding='direct'``, direct encoding): a batch ``[N, 1, C, H, W]``
(or ``[N, C, H, W]``) of uint8 pixels becomes ``x / 255``, augmented for training
(random crop with ``translate_px`` zero padding in pixel space, then horizontal
flip), normalised per channel with the data set's ``mean`` and ``std`` (in [0, 1]
units, computed over the training split), and repeated over ``steps`` = T time
steps: ``x_seq: [T, N, C, H, W]`` float32, the same image at every step. The first
spiking layer of the net acts as the encoder.

Why not torchvision.transforms: torchvision's compiled ops do not load against the
CPU torch build this project installs (see README), and its transforms act per
image, not per [T, C, H, W] event sample with one draw for all T. These batched
tensor ops are small and each is checked in ``tests/data/test_data_augment.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

ENCODINGS = ("events", "direct")


@dataclass(frozen=True)
class SeqTransform:
    """Stored batch -> ``x_seq: [T, N, C, H, W]`` float32 (see the module doc).

    encoding: 'events' (count frames) | 'direct' (uint8 images repeated over T).
    steps: T for direct encoding (ignored for events: T is stored).
    translate_px: max random shift in pixels (>= 0; 0 = off), training only.
    hflip: random horizontal flip with probability 0.5, training only.
    event_drop: probability in [0, 1) of dropping each event, training only (events only).
    mean, std: per-channel normalisation of direct-encoded images, in [0, 1] pixel units.
    """

    encoding: str = "events"
    steps: int = 1
    translate_px: int = 0
    hflip: bool = False
    event_drop: float = 0.0
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if self.encoding not in ENCODINGS:
            raise ValueError(f"encoding must be one of {ENCODINGS}, got {self.encoding!r}")
        if self.steps < 1 or self.translate_px < 0 or not 0.0 <= self.event_drop < 1.0:
            raise ValueError(
                f"need steps >= 1, translate_px >= 0, 0 <= event_drop < 1; got {self.steps}, "
                f"{self.translate_px}, {self.event_drop}"
            )

    @property
    def augments(self) -> bool:
        """True when training batches are changed at random."""
        return self.translate_px > 0 or self.hflip or (self.encoding == "events" and self.event_drop > 0)

    def __call__(self, x: torch.Tensor, *, train: bool, generator: torch.Generator | None = None) -> torch.Tensor:
        """``x: [N, T, C, H, W]`` (events) or ``[N, 1, C, H, W]`` / ``[N, C, H, W]`` (direct) -> ``[T, N, C, H, W]`` float32."""
        if self.encoding == "events":
            if x.dim() != 5:
                raise ValueError(f"event frames must be [N, T, C, H, W], got shape {tuple(x.shape)}")
            x = x.float()
            if train:
                x = self._geometric(x, generator)
                if self.event_drop > 0:
                    x = drop_events(x, self.event_drop, generator)
            return x.transpose(0, 1).contiguous()
        if x.dim() == 5:
            if x.shape[1] != 1:
                raise ValueError(f"direct-encoded images must be [N, 1, C, H, W], got shape {tuple(x.shape)}")
            x = x[:, 0]
        if x.dim() != 4:
            raise ValueError(f"direct-encoded images must be [N, C, H, W], got shape {tuple(x.shape)}")
        x = x.float() / 255.0
        if train:
            x = self._geometric(x.unsqueeze(1), generator)[:, 0]
        if self.mean is not None and self.std is not None:
            mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
            std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
            x = (x - mean) / std
        return x.unsqueeze(0).expand(self.steps, *x.shape).contiguous()

    def _geometric(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        if self.translate_px > 0:
            x = random_translate(x, self.translate_px, generator)
        if self.hflip:
            x = random_hflip(x, generator)
        return x


def random_translate(x: torch.Tensor, max_px: int, generator: torch.Generator | None = None,
                     gather: bool | None = None) -> torch.Tensor:
    """Shift each sample of ``x: [N, T, C, H, W]`` by (dy, dx), each uniform in ``[-max_px, max_px]``.

    Pixels shifted in are 0. The same shift applies to every frame and channel
    of a sample. Returns a new tensor of the same shape and dtype. The offsets are drawn
    from ``generator`` (CPU). gather: crop the whole batch with one indexed gather (no
    per-sample loop, no host sync: for tensors on a GPU) or, False, sample by sample (0.6
    against 1.6 ms for 64 CIFAR-10 samples on one CPU thread); None (default) = gather
    off the CPU. Both give the same tensor, bit for bit.
    """
    n, _, _, h, w = x.shape
    if max_px <= 0 or n == 0:
        return x
    k = int(max_px)
    offsets = torch.randint(0, 2 * k + 1, (n, 2), generator=generator)  # crop corner in the padded frame
    padded = F.pad(x, (k, k, k, k))
    if gather if gather is not None else x.device.type != "cpu":
        offsets = offsets.to(x.device)
        rows = offsets[:, :1] + torch.arange(h, device=x.device)  # [N, H]: the padded rows of each sample's crop
        cols = offsets[:, 1:] + torch.arange(w, device=x.device)  # [N, W]
        idx = torch.arange(n, device=x.device)[:, None, None]
        # advanced indices [N, H, W] come first: back to [N, T, C, H, W]
        return padded[idx, :, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 4, 1, 2).contiguous()
    out = torch.empty_like(x)
    for i, (oy, ox) in enumerate(offsets.tolist()):
        out[i] = padded[i, :, :, oy : oy + h, ox : ox + w]
    return out


def random_hflip(x: torch.Tensor, generator: torch.Generator | None = None, p: float = 0.5) -> torch.Tensor:
    """Mirror the last axis (W) of each sample of ``x: [N, ...]`` with probability ``p``; returns a new tensor.
    The draws come from ``generator`` (CPU); the mirror is one ``torch.where`` (no boolean
    indexing, no ``bool(tensor)``: no host sync when ``x`` is on a GPU)."""
    flip = torch.rand(x.shape[0], generator=generator) < p
    return torch.where(flip.to(x.device).view(-1, *([1] * (x.dim() - 1))), x.flip(-1), x)


def drop_events(x: torch.Tensor, q: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Binomial thinning of counts: every event of ``x`` (float counts >= 0) survives with probability ``1 - q``.

    Returns float32 counts ``<= x``, with expectation ``(1 - q) * x``. The draws come from
    ``generator`` (CPU): a batch on another device is thinned on the CPU and sent back (the
    same counts as the host's; boolean indexing on a GPU would sync anyway).
    """
    if q <= 0:
        return x
    if x.device.type != "cpu":
        return drop_events(x.cpu(), q, generator).to(x.device)
    out = x.clone()
    nz = out > 0
    counts = out[nz]
    out[nz] = torch.binomial(counts, torch.full_like(counts, 1.0 - q), generator=generator)
    return out


def channel_mean_std(images: np.ndarray, chunk: int = 4096) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 ``images: [N, C, H, W]`` in [0, 1] units (pixel / 255).

    Computed over all pixels of all images (population std), in chunks, float64.
    Returns ``(mean [C], std [C])`` as lists; an empty set gives mean 0, std 1.
    """

    n, c = images.shape[0], images.shape[1]
    if n == 0:
        return [0.0] * c, [1.0] * c
    s1 = np.zeros(c, np.float64)
    s2 = np.zeros(c, np.float64)
    for start in range(0, n, chunk):
        x = np.asarray(images[start : start + chunk], dtype=np.float64) / 255.0
        s1 += x.sum(axis=(0, 2, 3))
        s2 += np.square(x).sum(axis=(0, 2, 3))
    count = n * images.shape[2] * images.shape[3]
    mean = s1 / count
    std = np.sqrt(np.maximum(s2 / count - mean**2, 0.0))
    std = np.where(std > 1e-8, std, 1.0)
    return [float(v) for v in mean], [float(v) for v in std]
