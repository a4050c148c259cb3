"""Neuron and surrogate choice, and the spikingjelly backend on a GPU.

Neurons (spikingjelly ``activation_based.neuron``, hard reset to ``v_reset``):

- ``if``: integrate-and-fire, V(t) = V(t-1) + X(t); spike when V(t) >= v_threshold,
  then V(t) = v_reset. The sparse-KD paper's default.
- ``lif``: leaky, V(t) = V(t-1) + (X(t) - (V(t-1) - v_reset)) / tau.
- ``plif``: LIF with a learnable tau per layer (Fang et al. 2021), initialised at tau.
- ``relu``: not a spiking neuron: ``nn.ReLU``, which turns any registered model into
  its ANN twin (same layers, names and weight shapes). Used as the ANN teacher of
  Xu et al. 2023 (arXiv 2304.05627). The twin still takes ``[T, N, C, H, W]`` and
  averages its output over T; each time step is processed independently.

Surrogate gradients (``activation_based.surrogate``): ``atan`` (ATan, alpha=2),
``sigmoid`` (Sigmoid, alpha=4), ``rect`` (Rect, alpha=1), at spikingjelly's defaults.

The nets take the neuron as a factory (``spiking_neuron=...``, as spikingjelly's own
models do); ``neuron_factory(cfg)`` turns a ``ModelConfig`` into one, and only
``build_model`` calls it.
"""

from __future__ import annotations

import copy
import importlib
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn as nn
from spikingjelly.activation_based import neuron, surrogate

from evo_snn.config import NEURON_BACKENDS, ConfigError, ModelConfig

NEURONS = {"if": neuron.IFNode, "lif": neuron.LIFNode, "plif": neuron.ParametricLIFNode}
"""Spiking neuron classes by ``ModelConfig.neuron`` name."""

ANN_ACTIVATIONS = {"relu": nn.ReLU}
"""Non-spiking activations by ``ModelConfig.neuron`` name: they build the ANN twin."""

NEURON_CHOICES = tuple(sorted(NEURONS)) + tuple(sorted(ANN_ACTIVATIONS))
"""Every valid ``ModelConfig.neuron``."""

SURROGATES = {"atan": surrogate.ATan, "sigmoid": surrogate.Sigmoid, "rect": surrogate.Rect}
"""Surrogate gradient classes by ``ModelConfig.surrogate`` name."""

_SPIKING_BASES = tuple(c for c in (getattr(neuron, "BaseNode", None), getattr(neuron, "SimpleBaseNode", None)) if c is not None)


def check_neuron_config(cfg: ModelConfig) -> None:
    """raises ValueError for an unknown neuron or surrogate, or a bad v_reset / tau."""
    if cfg.neuron not in NEURON_CHOICES:
        raise ValueError(f"unknown neuron {cfg.neuron!r}; known: {list(NEURON_CHOICES)}")
    if cfg.surrogate not in SURROGATES:
        raise ValueError(f"unknown surrogate {cfg.surrogate!r}; known: {sorted(SURROGATES)}")
    if cfg.v_reset is not None and not isinstance(cfg.v_reset, (int, float)):
        raise ValueError(f"model.v_reset must be a number or null (soft reset), got {cfg.v_reset!r}")
    if cfg.neuron in ("lif", "plif") and not cfg.tau > 1.0:
        raise ValueError(f"model.tau must be > 1 for LIF/PLIF, got {cfg.tau}")


NeuronFactory = Callable[..., nn.Module]
"""What a net takes as ``spiking_neuron``: called with no arguments (or keyword overrides),
it returns one new shape-preserving neuron layer, ``[T, N, ...] -> [T, N, ...]``
(spikingjelly's models take ``partial(neuron.IFNode, surrogate_function=surrogate.ATan())``)."""


@dataclass(frozen=True)
class SpikingNeuronFactory:
    """``cls(**kwargs, surrogate_function=surrogate(), **overrides)`` on each call.

    Unlike ``partial(cls, surrogate_function=surrogate())``, every neuron gets its own
    surrogate instance (as each layer always has). Picklable (Ray actors) and printable.
    """

    cls: type
    kwargs: dict
    surrogate: type

    def __call__(self, **overrides) -> nn.Module:
        return self.cls(**{**self.kwargs, "surrogate_function": self.surrogate(), **overrides})


def neuron_factory(cfg: ModelConfig) -> NeuronFactory:
    """The ``spiking_neuron`` factory of ``cfg`` (IF by default, as in the sparse-KD paper).

    ``cfg.neuron`` in 'if' | 'lif' | 'plif': a ``SpikingNeuronFactory`` of that spikingjelly
    node with ``v_threshold``, ``v_reset``, ``detach_reset``, the ``cfg.surrogate``
    surrogate gradient and (LIF) ``tau`` / (PLIF) ``init_tau`` = ``cfg.tau``;
    ``cfg.neuron == 'relu'``: ``nn.ReLU`` itself (the ANN twin). Each call returns a
    new layer, shape-preserving: ``[T, N, ...] -> [T, N, ...]`` in multi-step mode.

    raises ValueError for an unknown neuron or surrogate name, or a bad v_reset / tau.
    """
    check_neuron_config(cfg)
    if cfg.neuron in ANN_ACTIVATIONS:
        return ANN_ACTIVATIONS[cfg.neuron]
    v_reset = None if cfg.v_reset is None else float(cfg.v_reset)
    kwargs = dict(v_threshold=float(cfg.v_threshold), v_reset=v_reset, detach_reset=bool(cfg.detach_reset))
    if cfg.neuron == "lif":
        kwargs["tau"] = float(cfg.tau)
    elif cfg.neuron == "plif":
        kwargs["init_tau"] = float(cfg.tau)
    return SpikingNeuronFactory(NEURONS[cfg.neuron], kwargs, SURROGATES[cfg.surrogate])


def spiking_nodes(net: nn.Module) -> list[nn.Module]:
    """Every spikingjelly spiking neuron module in ``net``, in module order."""
    return [m for m in net.modules() if isinstance(m, _SPIKING_BASES)]


# ---------------------------------------------------------------------- backends
# spikingjelly <= 0.0.0.0.14 exposes ``node.backend`` / ``node.supported_backends``
# ('torch', 'cupy', and 'triton' in later 0.0.0.x). spikingjelly 2.x (pinned here) has
# no ``backend`` attribute: each neuron op dispatches on the input's device, on CUDA
# to the first implementation that loads in the order 'cuda' (its native kernels,
# the successor of the cupy backend), 'triton', 'torch' (reference), overridable per
# neuron with the environment variable SJ_<NEURON>_CUDA_IMPLEMENTATION (read at
# import). Surrogates outside its fused set (e.g. Rect) run the torch reference.

_SJ2_KINDS = {"IFNode": "if", "LIFNode": "lif", "ParametricLIFNode": "plif"}
_SJ2_PACKAGES = {"if": "if_", "lif": "lif", "plif": "plif"}  # spikingjelly._ops.<package>._selection
_SJ2_BACKENDS = ("cuda", "triton", "torch")  # the names spikingjelly 2.x's selection takes
_LEGACY_ORDER = ("triton", "cupy")
_LEGACY_BACKENDS = ("torch", "cupy", "triton")


def _probe(node: nn.Module, device: torch.device, backend: str | None = None) -> bool:
    """True when a deep copy of ``node`` runs a tiny multi-step forward + backward on ``device``."""
    try:
        probe = copy.deepcopy(node)
        if hasattr(probe, "reset"):
            probe.reset()
        probe.step_mode = "m"
        if backend is not None:
            probe.backend = backend
        probe.to(device)
        x = torch.rand(2, 1, 8, device=device, requires_grad=True)  # (T, N, features)
        probe(x * 2.0).sum().backward()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return x.grad is not None and bool(torch.isfinite(x.grad).all())
    except Exception:  # noqa: BLE001 - any failure means "this backend does not work here"
        return False


def _select_legacy(nodes: list[nn.Module], device: torch.device, requested: str = "auto") -> str:
    if requested not in ("auto", *_LEGACY_BACKENDS):
        raise ConfigError(f"model.neuron_backend {requested!r}: this spikingjelly (0.0.0.x API) has the backends "
                          f"{list(_LEGACY_BACKENDS)}")
    if requested not in ("auto", "torch"):
        kinds = {type(n): n for n in nodes}.values()
        if not all(requested in n.supported_backends for n in nodes) or not all(_probe(n, device, requested) for n in kinds):
            raise ConfigError(f"model.neuron_backend {requested!r} does not run on {device} for "
                              f"{sorted({type(n).__name__ for n in nodes})}; use auto or torch")
        for n in nodes:
            n.backend = requested
        return requested
    if device.type == "cuda" and requested == "auto":
        for name in _LEGACY_ORDER:
            if all(name in n.supported_backends for n in nodes):
                kinds = {type(n): n for n in nodes}.values()
                if all(_probe(n, device, name) for n in kinds):
                    for n in nodes:
                        n.backend = name
                    return name
    for n in nodes:
        n.backend = "torch"
    return "torch"


def _sj2_implementation(node: nn.Module, device: torch.device) -> str:
    from spikingjelly.activation_based import functional

    kind = _SJ2_KINDS.get(type(node).__name__)
    query = getattr(functional, "neuron_implementation", None)
    if kind is None or query is None:
        return "torch"
    try:
        from spikingjelly._ops.surrogate import _surrogate_spec  # private: which surrogates are fused

        if _surrogate_spec(getattr(node, "surrogate_function", None)) is None:
            return "torch"
    except ImportError:
        pass
    name = str(query(kind, device).get("implementation", "torch"))
    return "torch" if name.startswith("torch") else name


def _force_sj2(kind: str, requested: str) -> None:
    """Make spikingjelly 2.x run ``kind`` ('if' | 'lif' | 'plif') neurons with ``requested``
    ('auto' | 'cuda' | 'triton' | 'torch') on CUDA from now on, in this process: what
    ``SJ_<NEURON>_CUDA_IMPLEMENTATION`` does when set before import. It sets the private
    ``_requested`` of the neuron's selection and drops the selections it had cached.
    raises ConfigError when this spikingjelly has no such selection object."""
    try:
        selection = importlib.import_module(f"spikingjelly._ops.{_SJ2_PACKAGES[kind]}")._selection
        selection._requested = requested
        selection._selections.clear()
        selection._compiled_selections.clear()
    except (ImportError, AttributeError, KeyError) as e:
        raise ConfigError(f"model.neuron_backend {requested!r}: cannot choose spikingjelly's implementation of {kind!r} "
                          f"neurons here ({e}); use auto, or set SJ_{kind.upper()}_CUDA_IMPLEMENTATION before starting") from e


def check_backend_request(requested: str, device: torch.device | str) -> None:
    """raises ConfigError when ``model.neuron_backend`` cannot be used on ``device``: an
    unknown name, or a GPU backend ('cuda', 'triton', 'cupy') without a CUDA device.
    Whether a GPU backend imports and runs is checked by ``select_backend``."""
    device = torch.device(device)
    if requested not in NEURON_BACKENDS:
        raise ConfigError(f"model.neuron_backend must be one of {list(NEURON_BACKENDS)}, got {requested!r}")
    if requested not in ("auto", "torch") and device.type != "cuda":
        raise ConfigError(f"model.neuron_backend {requested!r} needs a CUDA device, the device is {device}; "
                          "use auto (torch on the CPU) or torch")


def select_backend(net: nn.Module, device: torch.device | str, requested: str = "auto") -> str:
    """Use the fastest spikingjelly neuron backend that works on ``device`` (``requested``
    = 'auto', ``model.neuron_backend``'s default) or the ``requested`` one; return its name.

    CPU (or a net without spiking neurons, e.g. the ``relu`` twin): 'torch'.
    CUDA, spikingjelly 0.0.0.x API (nodes with ``supported_backends``): tries
    'triton', then 'cupy', each only if every node supports it and a tiny forward +
    backward of each node type works; sets ``node.backend`` on every node; else 'torch'.
    CUDA, spikingjelly 2.x (no ``backend`` attribute): the implementation is chosen
    by spikingjelly per device; this reports it ('cuda' = native kernels, 'triton' or
    'torch'; several joined by '+', e.g. 'cuda+torch' when a Rect-surrogate layer
    falls back) after checking that each node type runs on ``device``.

    requested 'torch' | 'cuda' | 'triton' | 'cupy': that backend or a ConfigError. Under
    spikingjelly 2.x ('cuda', 'triton', 'torch'; no 'cupy': 'cuda' is its successor) the
    choice is process-wide per neuron type (``_force_sj2``), the same for every net.

    The returned string is meant for ``manifest.json``.
    raises ConfigError for a request that cannot run on ``device`` (``check_backend_request``,
    or the backend fails to import or to run a tiny forward + backward); RuntimeError if,
    under spikingjelly 2.x with 'auto', a neuron type cannot run on the CUDA ``device``
    (set SJ_IF_CUDA_IMPLEMENTATION=torch, or _LIF_/_PLIF_, and restart).
    """
    device = torch.device(device)
    check_backend_request(requested, device)
    nodes = spiking_nodes(net)
    if not nodes:
        return "torch"
    if all(hasattr(n, "supported_backends") for n in nodes):
        return _select_legacy(nodes, device, requested)
    if device.type != "cuda":
        return "torch"
    if requested == "cupy":
        raise ConfigError("model.neuron_backend 'cupy': spikingjelly 2.x has no CuPy backend; its native CUDA "
                          "kernels are 'cuda' (or use auto)")
    distinct = {(type(n), type(getattr(n, "surrogate_function", None))): n for n in nodes}.values()
    if requested != "auto":
        kinds = {_SJ2_KINDS.get(type(n).__name__) for n in distinct}
        if None in kinds:
            raise ConfigError(f"model.neuron_backend {requested!r}: spikingjelly 2.x chooses no implementation for "
                              f"{sorted(type(n).__name__ for n in distinct if type(n).__name__ not in _SJ2_KINDS)}; use auto")
        for kind in kinds:
            _force_sj2(kind, requested)
    used = set()
    for node in distinct:
        if not _probe(node, device):
            if requested != "auto":
                raise ConfigError(f"model.neuron_backend {requested!r} does not run spikingjelly {type(node).__name__} "
                                  f"(surrogate {type(getattr(node, 'surrogate_function', None)).__name__}) on {device}; use auto")
            raise RuntimeError(f"spikingjelly {type(node).__name__} does not run on {device}; "
                               "force the torch reference with SJ_<NEURON>_CUDA_IMPLEMENTATION=torch")
        used.add(_sj2_implementation(node, device))
    if requested != "auto" and used != {requested}:
        raise ConfigError(f"model.neuron_backend {requested!r}: spikingjelly runs {'+'.join(sorted(used))} on {device}")
    return "+".join(sorted(used))
