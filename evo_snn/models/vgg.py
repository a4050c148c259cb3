"""Spiking VGG16 with BN, CIFAR style (``vgg16``, ``vgg16_tiny``).

Simonyan & Zisserman 2015, configuration D, as used on CIFAR by the sparse-KD paper
at T=4: 13 x [conv3x3 (no bias) - BN - neuron] with 5 max-pools, then global
average pooling and **one FC to num_classes** (the CIFAR head; not the 4096-4096
ImageNet head nor a 512-512 head). The max-pools use ``ceil_mode=True`` so that any
H, W >= 1 work (on 32x32 inputs this is the ordinary pooling, down to 1x1).
"""

from __future__ import annotations

import torch
import torch.nn as nn
from spikingjelly.activation_based import layer

from evo_snn.models.neurons import NeuronFactory
from evo_snn.models.registry import PooledReadoutNet, register_model, scale_width

VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")
VGG16_TINY_CFG = tuple(c if c == "M" else c // 16 for c in VGG16_CFG)  # 4, 4, M, 8, 8, M, ..., 32


class SpikingVGG(PooledReadoutNet):
    """``features`` (conv3x3 - BN - neuron blocks and max-pools from ``plan``), global
    average pool, Flatten, [Dropout(dropout) if dropout > 0], FC ``fc`` (non-spiking
    readout). plan: conv widths, ``"M"`` for a max-pool; every neuron is ``spiking_neuron()``.

    x_seq: [T, N, C, H, W] (any H, W >= 1) -> [N, num_classes] = mean over T of the FC output.
    """

    def __init__(self, in_channels: int, num_classes: int, plan, *, spiking_neuron: NeuronFactory, dropout: float = 0.0):
        super().__init__()
        feats: list[nn.Module] = []
        c_in = in_channels
        for v in plan:
            if v == "M":
                feats.append(layer.MaxPool2d(2, 2, ceil_mode=True))
            else:
                feats += [layer.Conv2d(c_in, v, 3, padding=1, bias=False), layer.BatchNorm2d(v), spiking_neuron()]
                c_in = v
        self.features = nn.Sequential(*feats)
        self._init_readout(c_in, num_classes, dropout)

    def trunk(self, x_seq: torch.Tensor) -> torch.Tensor:
        return self.features(x_seq)  # (T, N, c_last, H', W')


def _scaled(plan, width: float):
    return tuple(v if v == "M" else scale_width(v, width) for v in plan)


@register_model("vgg16")
def vgg16(frame_shape, num_classes: int, *, spiking_neuron: NeuronFactory, width: float = 1.0,
          dropout: float = 0.0) -> SpikingVGG:
    """Spiking VGG16-BN, CIFAR style (14.72M parameters at width 1, 3 inputs, 10 classes).

    Conv widths of configuration D times ``width``; input channels ``frame_shape[1]`` of (T, C, H, W).
    """
    return SpikingVGG(frame_shape[1], num_classes, _scaled(VGG16_CFG, width), spiking_neuron=spiking_neuron, dropout=dropout)


@register_model("vgg16_tiny")
def vgg16_tiny(frame_shape, num_classes: int, *, spiking_neuron: NeuronFactory, width: float = 1.0,
               dropout: float = 0.0) -> SpikingVGG:
    """``vgg16`` with widths / 16 (4 ... 32, times ``width``): same layers and names, for tests."""
    return SpikingVGG(frame_shape[1], num_classes, _scaled(VGG16_TINY_CFG, width), spiking_neuron=spiking_neuron, dropout=dropout)
