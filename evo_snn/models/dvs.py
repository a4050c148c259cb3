"""The DVS128 Gesture 5Conv-1FC net (``dvs_gesture_net``) and its tiny variant."""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn as nn
from spikingjelly.activation_based import layer

from evo_snn.models.conv import SpikingNet, conv_block
from evo_snn.models.neurons import NeuronFactory
from evo_snn.models.registry import register_model

FULL_CHANNELS = 128
"""Conv width of the published net (Fang et al. 2021, DVS128 Gesture, T=16)."""

FULL_HIDDEN = 512


@register_model("dvs_gesture_net")
def dvs_gesture_net(frame_shape, num_classes: int, *, spiking_neuron: NeuronFactory, channels: Sequence[int],
                    hidden: int = 0, dropout: float = 0.0) -> SpikingNet:
    """5Conv-1FC net of Fang et al. 2021 (PLIF paper, ICCV, Fig./Tab. of the DVS128 net).

    5 x [conv3x3 - BN - neuron - maxpool2] (channels: one entry, or five; the
    published net uses ``channels=(128,)`` at T=16 on 128x128 frames), then
    Flatten - Dropout - FC(hidden, 0 = 512) - neuron - Dropout - FC(10 * num_classes)
    - neuron - vote pooling (VotingLayer(10)) to num_classes. Dropout p = dropout
    (0 = 0.5). Every neuron is ``spiking_neuron()``. The logits are the voted firing
    rates in [0, 1] averaged over T.
    frame_shape = (T, C, H, W); x_seq: [T, N, C, H, W] -> [N, num_classes].

    raises ValueError for a wrong number of channel entries or H, W not divisible by 32.
    """
    T, C, H, W = frame_shape
    chans = tuple(channels) * 5 if len(channels) == 1 else tuple(channels)
    if len(chans) != 5:
        raise ValueError(f"dvs_gesture_net needs 1 or 5 channel entries, got {tuple(channels)}")
    if H % 32 or W % 32:
        raise ValueError(f"dvs_gesture_net needs H and W divisible by 32 (5 poolings), got {H}x{W}")
    blocks: list[nn.Module] = []
    c_in = C
    for c_out in chans:
        blocks += conv_block(c_in, c_out, spiking_neuron)
        c_in = c_out
    hidden = hidden or FULL_HIDDEN
    p = dropout if dropout > 0 else 0.5
    head = [
        layer.Flatten(),
        layer.Dropout(p),
        layer.Linear(c_in * (H // 32) * (W // 32), hidden),
        spiking_neuron(),
        layer.Dropout(p),
        layer.Linear(hidden, num_classes * 10),
        spiking_neuron(),
        layer.VotingLayer(10),
    ]
    return SpikingNet(nn.Sequential(*blocks), nn.Sequential(*head))


@register_model("dvs_gesture_net_tiny")
def dvs_gesture_net_tiny(frame_shape, num_classes: int, *, spiking_neuron: NeuronFactory,
                         dropout: float = 0.0) -> SpikingNet:
    """``dvs_gesture_net`` with 4 channels and a 16-unit hidden FC, for tests.

    Takes no channels or hidden (``model.channels`` / ``model.hidden`` are ignored).
    """
    return dvs_gesture_net(frame_shape, num_classes, spiking_neuron=spiking_neuron, channels=(4,), hidden=16,
                           dropout=dropout)
