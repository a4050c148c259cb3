"""Small conv SNNs for N-MNIST and the synthetic data set: ``conv_snn``, ``tiny_conv``."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
from spikingjelly.activation_based import layer

from evo_snn.models.neurons import NeuronFactory
from evo_snn.models.registry import register_model


def conv_block(c_in: int, c_out: int, spiking_neuron: NeuronFactory) -> list[nn.Module]:
    """conv3x3 (no bias) - BN - neuron - maxpool2: ``[T, N, c_in, H, W] -> [T, N, c_out, H/2, W/2]``."""
    return [
        layer.Conv2d(c_in, c_out, kernel_size=3, padding=1, bias=False),
        layer.BatchNorm2d(c_out),
        spiking_neuron(),
        layer.MaxPool2d(2, 2),
    ]


class SpikingNet(nn.Module):
    """``features`` then ``classifier``; logits = mean over T of the classifier output.

    x_seq: [T, N, C, H, W] float32 event counts -> [N, num_classes] float32.
    """

    def __init__(self, features: nn.Sequential, classifier: nn.Sequential):
        super().__init__()
        self.features = features
        self.classifier = classifier

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        y_seq = self.classifier(self.features(x_seq))  # (T, N, num_classes)
        return y_seq.mean(0)


@register_model("conv_snn")
def conv_snn(frame_shape, num_classes: int, *, spiking_neuron: NeuronFactory, channels: Sequence[int],
             hidden: int = 0, dropout: float = 0.0) -> SpikingNet:
    """Small conv SNN for N-MNIST and the synthetic data set.

    len(channels) x [conv3x3 - BN - neuron - maxpool2], [Dropout(dropout) if dropout > 0],
    optional FC(hidden) - neuron (hidden > 0), then a non-spiking linear readout whose
    output, averaged over T, is the logit vector (a membrane-potential readout; it gives
    KD well-scaled logits). Every neuron is ``spiking_neuron()``.
    frame_shape = (T, C, H, W); x_seq: [T, N, C, H, W] -> [N, num_classes].

    raises ValueError when the poolings shrink H or W below 1.
    """
    T, C, H, W = frame_shape
    blocks: list[nn.Module] = []
    c_in = C
    for c_out in channels:
        blocks += conv_block(c_in, c_out, spiking_neuron)
        c_in = c_out
        H, W = H // 2, W // 2
    if H < 1 or W < 1:
        raise ValueError(f"{len(channels)} pooling blocks are too many for input {frame_shape}")
    head: list[nn.Module] = [layer.Flatten()]
    width = c_in * H * W
    if dropout > 0:
        head.append(layer.Dropout(dropout))
    if hidden > 0:
        head += [layer.Linear(width, hidden), spiking_neuron()]
        width = hidden
    head.append(layer.Linear(width, num_classes))
    return SpikingNet(nn.Sequential(*blocks), nn.Sequential(*head))


# The name under which tiny test variants are built (small ``model.channels``).
register_model("tiny_conv")(conv_snn)
