"""Spiking Wide ResNet 16-4, CIFAR style (``wrn16_4``, ``wrn16_4_tiny``).

Zagoruyko & Komodakis 2016, WRN-d-k with depth d = 16 (n = (d - 4) / 6 = 2 blocks
per group, 3 groups) and widen factor k = 4: widths 16 (stem), 64, 128, 256; used by
the sparse-KD paper at T=4. This is the **pre-activation** form of the original,
adapted to SNNs by putting the neuron where the ReLU was: each block is
BN - neuron - conv3x3(stride) - BN - neuron - conv3x3, so every conv (and the 1x1
shortcut conv, which reads the block's first spikes as in the original) sees spikes,
while the residual stream between blocks stays real-valued (membrane-style shortcut).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
from spikingjelly.activation_based import layer

from evo_snn.models.neurons import NeuronFactory
from evo_snn.models.registry import PooledReadoutNet, register_model, scale_width

WRN16_4_WIDTHS = (16, 64, 128, 256)  # stem, then 16 * k, 32 * k, 64 * k with k = 4
WRN16_4_TINY_WIDTHS = (4, 8, 16, 32)
WRN16_DEPTH = 16


class WideBlock(nn.Module):
    """Pre-activation wide block: BN - neuron - conv3x3(stride) - BN - neuron - conv3x3, + shortcut.

    Shortcut: identity when stride 1 and c_in == c_out, else ``shortcut`` = conv1x1(stride)
    applied to the first neuron's spikes (no BN, as in the original WRN). Both neurons
    are ``spiking_neuron()``.
    x_seq: [T, N, c_in, H, W] -> [T, N, c_out, H/stride, W/stride] (real-valued, not spikes).
    """

    def __init__(self, c_in: int, c_out: int, stride: int, spiking_neuron: NeuronFactory):
        super().__init__()
        self.bn1 = layer.BatchNorm2d(c_in)
        self.sn1 = spiking_neuron()
        self.conv1 = layer.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn2 = layer.BatchNorm2d(c_out)
        self.sn2 = spiking_neuron()
        self.conv2 = layer.Conv2d(c_out, c_out, 3, stride=1, padding=1, bias=False)
        self.shortcut = None
        if stride != 1 or c_in != c_out:
            self.shortcut = layer.Conv2d(c_in, c_out, 1, stride=stride, bias=False)

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        s = self.sn1(self.bn1(x_seq))
        out = self.conv2(self.sn2(self.bn2(self.conv1(s))))
        return out + (x_seq if self.shortcut is None else self.shortcut(s))


class SpikingWideResNet(PooledReadoutNet):
    """CIFAR-style spiking WRN-d-k (pre-activation).

    conv3x3(C, w0, stride 1), groups ``block1..block3`` of (d - 4) / 6 WideBlocks
    (stride 1, 2, 2), then BN - neuron - global average pool - Flatten - [Dropout(dropout)
    if dropout > 0] - FC. widths: the stem's, then each group's channels; every neuron is
    ``spiking_neuron()``.
    x_seq: [T, N, C, H, W] (any H, W >= 1) -> [N, num_classes] = mean over T of the FC output.

    raises ValueError when (depth - 4) is not a positive multiple of 6.
    """

    def __init__(self, in_channels: int, num_classes: int, widths: Sequence[int], depth: int, *,
                 spiking_neuron: NeuronFactory, dropout: float = 0.0):
        super().__init__()
        if depth < 10 or (depth - 4) % 6:
            raise ValueError(f"WRN depth must be 6n + 4 with n >= 1, got {depth}")
        n = (depth - 4) // 6
        self.conv1 = layer.Conv2d(in_channels, widths[0], 3, stride=1, padding=1, bias=False)
        c_in = widths[0]
        for i, c_out in enumerate(widths[1:]):
            stride = 1 if i == 0 else 2
            group = [WideBlock(c_in, c_out, stride, spiking_neuron)] + [WideBlock(c_out, c_out, 1, spiking_neuron) for _ in range(n - 1)]
            self.add_module(f"block{i + 1}", nn.Sequential(*group))
            c_in = c_out
        self.num_groups = len(widths) - 1
        self.bn = layer.BatchNorm2d(c_in)
        self.sn = spiking_neuron()
        self._init_readout(c_in, num_classes, dropout)

    def trunk(self, x_seq: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x_seq)  # (T, N, w0, H, W)
        for i in range(self.num_groups):
            x = getattr(self, f"block{i + 1}")(x)
        return self.sn(self.bn(x))  # (T, N, w3, H', W')


@register_model("wrn16_4")
def wrn16_4(frame_shape, num_classes: int, *, spiking_neuron: NeuronFactory, width: float = 1.0,
            dropout: float = 0.0) -> SpikingWideResNet:
    """Spiking WRN-16-4, CIFAR style (2.75M parameters at width 1, 3 inputs, 10 classes).

    Widths 16-64-128-256 times ``width``; input channels ``frame_shape[1]`` of (T, C, H, W).
    """
    widths = tuple(scale_width(c, width) for c in WRN16_4_WIDTHS)
    return SpikingWideResNet(frame_shape[1], num_classes, widths, WRN16_DEPTH, spiking_neuron=spiking_neuron, dropout=dropout)


@register_model("wrn16_4_tiny")
def wrn16_4_tiny(frame_shape, num_classes: int, *, spiking_neuron: NeuronFactory, width: float = 1.0,
                 dropout: float = 0.0) -> SpikingWideResNet:
    """``wrn16_4`` with widths 4-8-16-32 (times ``width``): same layers and names, for tests."""
    widths = tuple(scale_width(c, width) for c in WRN16_4_TINY_WIDTHS)
    return SpikingWideResNet(frame_shape[1], num_classes, widths, WRN16_DEPTH, spiking_neuron=spiking_neuron, dropout=dropout)
