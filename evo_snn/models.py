"""Spiking nets built by name from a registry (spikingjelly ``activation_based``).

Every net runs in multi-step mode: input ``x_seq: [T, N, C, H, W]`` float32 event
counts, output ``[N, num_classes]`` logits (the output averaged over the T time
steps). Call ``spikingjelly.activation_based.functional.reset_net(net)`` after
every batch; ``evo_snn.train`` does so.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
from spikingjelly.activation_based import functional, layer, neuron, surrogate

from .config import ModelConfig

ModelBuilder = Callable[[ModelConfig, tuple[int, int, int, int], int], nn.Module]

_REGISTRY: dict[str, ModelBuilder] = {}

NEURONS = {"if": neuron.IFNode, "lif": neuron.LIFNode, "plif": neuron.ParametricLIFNode}
SURROGATES = {"atan": surrogate.ATan, "sigmoid": surrogate.Sigmoid, "rect": surrogate.Rect}


def register_model(name: str) -> Callable[[ModelBuilder], ModelBuilder]:
    """Decorator adding a builder to the registry; raises ValueError on a duplicate name."""

    def deco(fn: ModelBuilder) -> ModelBuilder:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered")
        _REGISTRY[name] = fn
        return fn

    return deco


def model_names() -> list[str]:
    return sorted(_REGISTRY)


def build_model(cfg: ModelConfig, frame_shape: tuple[int, int, int, int], num_classes: int) -> nn.Module:
    """Build ``cfg.name`` for inputs of ``frame_shape`` = (T, C, H, W); step mode 'm'.

    raises ValueError for an unknown model, neuron or surrogate name.
    """
    if cfg.name not in _REGISTRY:
        raise ValueError(f"unknown model {cfg.name!r}; known: {model_names()}")
    net = _REGISTRY[cfg.name](cfg, frame_shape, num_classes)
    functional.set_step_mode(net, "m")
    return net


def spiking_neuron(cfg: ModelConfig) -> nn.Module:
    """One spiking neuron layer as configured (IF by default, as in the sparse-KD paper)."""
    if cfg.neuron not in NEURONS:
        raise ValueError(f"unknown neuron {cfg.neuron!r}; known: {sorted(NEURONS)}")
    if cfg.surrogate not in SURROGATES:
        raise ValueError(f"unknown surrogate {cfg.surrogate!r}; known: {sorted(SURROGATES)}")
    kwargs = dict(v_threshold=cfg.v_threshold, surrogate_function=SURROGATES[cfg.surrogate](), detach_reset=cfg.detach_reset)
    if cfg.neuron == "lif":
        kwargs["tau"] = cfg.tau
    elif cfg.neuron == "plif":
        kwargs["init_tau"] = cfg.tau
    return NEURONS[cfg.neuron](**kwargs)


def _conv_block(c_in: int, c_out: int, cfg: ModelConfig) -> list[nn.Module]:
    return [
        layer.Conv2d(c_in, c_out, kernel_size=3, padding=1, bias=False),
        layer.BatchNorm2d(c_out),
        spiking_neuron(cfg),
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
def conv_snn(cfg: ModelConfig, frame_shape, num_classes: int) -> nn.Module:
    """Small conv SNN for N-MNIST and the synthetic data set.

    len(cfg.channels) x [conv3x3 - BN - neuron - maxpool2], optional FC(cfg.hidden) -
    neuron, then a non-spiking linear readout whose output, averaged over T, is the
    logit vector (a membrane-potential readout; it gives KD well-scaled logits).
    """
    T, C, H, W = frame_shape
    blocks: list[nn.Module] = []
    c_in = C
    for c_out in cfg.channels:
        blocks += _conv_block(c_in, c_out, cfg)
        c_in = c_out
        H, W = H // 2, W // 2
    if H < 1 or W < 1:
        raise ValueError(f"{len(cfg.channels)} pooling blocks are too many for input {frame_shape}")
    head: list[nn.Module] = [layer.Flatten()]
    width = c_in * H * W
    if cfg.dropout > 0:
        head.append(layer.Dropout(cfg.dropout))
    if cfg.hidden > 0:
        head += [layer.Linear(width, cfg.hidden), spiking_neuron(cfg)]
        width = cfg.hidden
    head.append(layer.Linear(width, num_classes))
    return SpikingNet(nn.Sequential(*blocks), nn.Sequential(*head))


# The name under which tiny test variants are built (cfg.channels small).
register_model("tiny_conv")(conv_snn)


@register_model("dvs_gesture_net")
def dvs_gesture_net(cfg: ModelConfig, frame_shape, num_classes: int) -> nn.Module:
    """5Conv-1FC net of Fang et al. 2021 (PLIF paper) for DVS128 Gesture.

    5 x [conv3x3 - BN - neuron - maxpool2] (cfg.channels: one entry, or five), then
    Flatten - Dropout - FC(cfg.hidden) - neuron - Dropout - FC(10 * num_classes) -
    neuron - vote pooling (VotingLayer(10)) to num_classes; the logits are the voted
    firing rates in [0, 1] averaged over T.
    """
    T, C, H, W = frame_shape
    chans = tuple(cfg.channels) * 5 if len(cfg.channels) == 1 else tuple(cfg.channels)
    if len(chans) != 5:
        raise ValueError(f"dvs_gesture_net needs 1 or 5 channel entries, got {cfg.channels}")
    if H % 32 or W % 32:
        raise ValueError(f"dvs_gesture_net needs H and W divisible by 32 (5 poolings), got {H}x{W}")
    blocks: list[nn.Module] = []
    c_in = C
    for c_out in chans:
        blocks += _conv_block(c_in, c_out, cfg)
        c_in = c_out
    hidden = cfg.hidden or 512
    p = cfg.dropout if cfg.dropout > 0 else 0.5
    head = [
        layer.Flatten(),
        layer.Dropout(p),
        layer.Linear(c_in * (H // 32) * (W // 32), hidden),
        spiking_neuron(cfg),
        layer.Dropout(p),
        layer.Linear(hidden, num_classes * 10),
        spiking_neuron(cfg),
        layer.VotingLayer(10),
    ]
    return SpikingNet(nn.Sequential(*blocks), nn.Sequential(*head))
