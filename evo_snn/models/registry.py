"""The model registry: builders by name, ``build_model`` (timm ``_registry`` style).

A builder has the signature ``builder(frame_shape, num_classes, *, spiking_neuron, **arch)
-> nn.Module`` with ``frame_shape = (T, C, H, W)``, ``spiking_neuron`` a neuron factory
(``evo_snn.models.neurons.NeuronFactory``) and ``arch`` those of the plain
architecture arguments ``channels``, ``hidden``, ``dropout``, ``width`` that the builder
names in its signature. Every registered net takes ``x_seq: [T, N, C, H, W]`` float32
and returns ``[N, num_classes]`` logits. Only ``build_model`` reads ``ModelConfig``.
"""

from __future__ import annotations

import inspect
from typing import Callable

import torch.nn as nn
from spikingjelly.activation_based import functional

from evo_snn.config import ModelConfig
from evo_snn.models.neurons import check_neuron_config, neuron_factory

ModelBuilder = Callable[..., nn.Module]
"""``builder(frame_shape, num_classes, *, spiking_neuron, **arch) -> nn.Module``."""

ARCH_FIELDS = ("channels", "hidden", "dropout", "width")
"""The ``ModelConfig`` fields ``build_model`` hands to a builder that names them."""

_REGISTRY: dict[str, ModelBuilder] = {}


def register_model(name: str) -> Callable[[ModelBuilder], ModelBuilder]:
    """Decorator adding a builder under ``name``; raises ValueError on a duplicate name."""

    def deco(fn: ModelBuilder) -> ModelBuilder:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered")
        _REGISTRY[name] = fn
        return fn

    return deco


def model_names() -> list[str]:
    """Sorted names of every registered model (the CLI's ``model.name`` choices)."""
    return sorted(_REGISTRY)


def build_model(cfg: ModelConfig, frame_shape: tuple[int, int, int, int], num_classes: int) -> nn.Module:
    """Build ``cfg.name`` for inputs of ``frame_shape`` = (T, C, H, W); step mode 'm'.

    The net maps ``x_seq: [T, N, C, H, W]`` to ``[N, num_classes]`` logits.
    ``cfg.neuron``, ``surrogate``, ``tau``, ``v_threshold``, ``v_reset`` and
    ``detach_reset`` become the ``spiking_neuron`` factory (``neurons.neuron_factory``;
    ``cfg.neuron == 'relu'`` gives the ANN twin of the same model); ``channels``,
    ``hidden``, ``dropout`` and ``width`` are passed to the builders that take them.

    raises ValueError for an unknown model, neuron or surrogate name, a bad
    ``frame_shape``, ``num_classes < 1`` or ``cfg.width <= 0``.
    """
    if cfg.name not in _REGISTRY:
        raise ValueError(f"unknown model {cfg.name!r}; known: {model_names()}")
    check_neuron_config(cfg)
    if len(frame_shape) != 4 or any(int(s) < 1 for s in frame_shape):
        raise ValueError(f"frame_shape must be (T, C, H, W) with positive sizes, got {frame_shape}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if not cfg.width > 0:
        raise ValueError(f"model.width must be > 0, got {cfg.width}")
    builder = _REGISTRY[cfg.name]
    net = builder(tuple(int(s) for s in frame_shape), num_classes, spiking_neuron=neuron_factory(cfg),
                  **arch_arguments(builder, cfg))
    functional.set_step_mode(net, "m")
    return net


def arch_arguments(builder: ModelBuilder, cfg: ModelConfig) -> dict:
    """The ``ARCH_FIELDS`` of ``cfg`` that ``builder`` takes (all of them for ``**kwargs``),
    as plain values (``channels`` a tuple of ints)."""
    params = inspect.signature(builder).parameters
    takes_all = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    values = {"channels": tuple(int(c) for c in cfg.channels), "hidden": int(cfg.hidden),
              "dropout": float(cfg.dropout), "width": float(cfg.width)}
    return {k: v for k, v in values.items() if takes_all or k in params}


def scale_width(channels: int, width: float) -> int:
    """round(width * channels), at least 1: the conv width under ``ModelConfig.width``."""
    return max(1, int(round(channels * width)))


def kaiming_init(net: nn.Module) -> nn.Module:
    """torchvision / spikingjelly ``spiking_resnet`` init, in place: conv weights
    kaiming-normal (fan_out, relu gain), BN weight 1 and bias 0, linear bias 0."""
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)
    return net


class PooledReadoutNet(nn.Module):
    """Base of the CIFAR-style nets: ``trunk(x_seq)`` -> global average pool -> Flatten ->
    [Dropout] -> linear readout ``fc`` (non-spiking), averaged over T.

    Subclasses build their trunk, then call ``_init_readout`` (which also applies
    ``kaiming_init``) and define ``trunk``. x_seq: [T, N, C, H, W] -> [N, num_classes].
    """

    def _init_readout(self, c_in: int, num_classes: int, dropout: float) -> None:
        from spikingjelly.activation_based import layer

        self.avgpool = layer.AdaptiveAvgPool2d((1, 1))
        self.flatten = layer.Flatten()
        self.dropout = layer.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = layer.Linear(c_in, num_classes)
        kaiming_init(self)

    def trunk(self, x_seq):
        raise NotImplementedError

    def forward(self, x_seq):
        x = self.dropout(self.flatten(self.avgpool(self.trunk(x_seq))))  # (T, N, C_last)
        return self.fc(x).mean(0)  # (N, num_classes)
