"""Spiking ResNet18, CIFAR style (``resnet18``, ``resnet18_tiny``).

He et al. 2016's ResNet18 (BasicBlocks [2, 2, 2, 2], widths 64-128-256-512) in the
CIFAR form used by the sparse-KD paper at T=4: a 3x3 stride-1 stem conv and no
initial max-pool. Spiking as in spikingjelly's ``model.spiking_resnet``: every ReLU
is the configured neuron, and the block's second neuron fires after the residual add.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
from spikingjelly.activation_based import layer

from evo_snn.models.neurons import NeuronFactory
from evo_snn.models.registry import PooledReadoutNet, register_model, scale_width

RESNET18_WIDTHS = (64, 128, 256, 512)
RESNET18_TINY_WIDTHS = (4, 8, 16, 32)
RESNET18_BLOCKS = (2, 2, 2, 2)


class BasicBlock(nn.Module):
    """conv3x3(stride) - BN - neuron - conv3x3 - BN, + shortcut, then neuron.

    The shortcut is the identity, or conv1x1(stride) - BN (``downsample``) when the
    stride or the width changes. Both neurons are ``spiking_neuron()``.
    x_seq: [T, N, c_in, H, W] -> [T, N, c_out, H/stride, W/stride].
    """

    def __init__(self, c_in: int, c_out: int, stride: int, spiking_neuron: NeuronFactory):
        super().__init__()
        self.conv1 = layer.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = layer.BatchNorm2d(c_out)
        self.sn1 = spiking_neuron()
        self.conv2 = layer.Conv2d(c_out, c_out, 3, stride=1, padding=1, bias=False)
        self.bn2 = layer.BatchNorm2d(c_out)
        self.downsample = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(layer.Conv2d(c_in, c_out, 1, stride=stride, bias=False), layer.BatchNorm2d(c_out))
        self.sn2 = spiking_neuron()

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        out = self.sn1(self.bn1(self.conv1(x_seq)))
        out = self.bn2(self.conv2(out))
        identity = x_seq if self.downsample is None else self.downsample(x_seq)
        return self.sn2(out + identity)


class SpikingResNet(PooledReadoutNet):
    """CIFAR-style spiking ResNet with BasicBlocks.

    conv3x3(C, w0, stride 1) - BN - neuron, then stages ``layer1..layer4`` (stride
    1, 2, 2, 2), global average pool, Flatten, [Dropout(dropout) if dropout > 0], FC
    (``fc``, non-spiking). widths: channels of the stem and of each stage (stem =
    widths[0]); blocks: BasicBlocks per stage; every neuron is ``spiking_neuron()``.
    x_seq: [T, N, C, H, W] (any H, W >= 1) -> [N, num_classes] = mean over T of the FC output.
    """

    def __init__(self, in_channels: int, num_classes: int, widths: Sequence[int], blocks: Sequence[int], *,
                 spiking_neuron: NeuronFactory, dropout: float = 0.0):
        super().__init__()
        self.conv1 = layer.Conv2d(in_channels, widths[0], 3, stride=1, padding=1, bias=False)
        self.bn1 = layer.BatchNorm2d(widths[0])
        self.sn1 = spiking_neuron()
        c_in = widths[0]
        for i, (c_out, n) in enumerate(zip(widths, blocks)):
            stride = 1 if i == 0 else 2
            stage = [BasicBlock(c_in, c_out, stride, spiking_neuron)] + [BasicBlock(c_out, c_out, 1, spiking_neuron) for _ in range(n - 1)]
            self.add_module(f"layer{i + 1}", nn.Sequential(*stage))
            c_in = c_out
        self.num_stages = len(widths)
        self._init_readout(c_in, num_classes, dropout)

    def trunk(self, x_seq: torch.Tensor) -> torch.Tensor:
        x = self.sn1(self.bn1(self.conv1(x_seq)))  # (T, N, w0, H, W)
        for i in range(self.num_stages):
            x = getattr(self, f"layer{i + 1}")(x)
        return x  # (T, N, w3, H', W')


@register_model("resnet18")
def resnet18(frame_shape, num_classes: int, *, spiking_neuron: NeuronFactory, width: float = 1.0,
             dropout: float = 0.0) -> SpikingResNet:
    """Spiking ResNet18, CIFAR style (11.17M parameters at width 1, 3 inputs, 10 classes).

    Widths 64-128-256-512 times ``width``; input channels ``frame_shape[1]`` of (T, C, H, W).
    """
    widths = tuple(scale_width(c, width) for c in RESNET18_WIDTHS)
    return SpikingResNet(frame_shape[1], num_classes, widths, RESNET18_BLOCKS, spiking_neuron=spiking_neuron, dropout=dropout)


@register_model("resnet18_tiny")
def resnet18_tiny(frame_shape, num_classes: int, *, spiking_neuron: NeuronFactory, width: float = 1.0,
                  dropout: float = 0.0) -> SpikingResNet:
    """``resnet18`` with widths 4-8-16-32 (times ``width``): same layers and names, for tests."""
    widths = tuple(scale_width(c, width) for c in RESNET18_TINY_WIDTHS)
    return SpikingResNet(frame_shape[1], num_classes, widths, RESNET18_BLOCKS, spiking_neuron=spiking_neuron, dropout=dropout)
