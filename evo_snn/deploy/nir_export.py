"""A student as a NIR graph: ``write_nir(student, frame_shape, path)``.

NIR, the Neuromorphic Intermediate Representation (Pedersen et al., Nature Communications
15, 8122, 2024), is read by neuromorphic simulators and hardware toolchains. The graph is
traced with ``nirtorch.torch_to_nir`` (torch.fx; residual additions become converging
edges, which NIR sums) and written with ``nir.write``; read it back with ``nir.read``.
Both packages are the optional extra ``deploy`` (``pip install -e ".[deploy]"``).

Mapping (one NIR time step = one frame, dt = 1):

============================  ============================================================
spikingjelly / torch          NIR
============================  ============================================================
Conv2d (+ BatchNorm2d)        ``Conv2d``; an eval-mode BatchNorm2d right after a conv is
                              folded into it (w * s, (b - mean) * s + beta, s = gamma /
                              sqrt(var + eps)), so pruned weights stay exactly zero; any
                              other BatchNorm2d is a diagonal 1x1 ``Conv2d``
Linear                        ``Affine`` (``Linear`` without bias)
IFNode                        ``IF``: r = 1, v_threshold, v_reset (V[t] = V[t-1] + X[t])
LIFNode / ParametricLIFNode   ``LIF``: tau (PLIF: 1 / sigmoid(w)), v_leak = v_reset,
                              r = 1 (decay_input) or tau, v_threshold, v_reset
MaxPool2d on spikes           ``SumPool2d`` then ``Threshold`` (0.5): the max of 0/1 spikes
                              is 1 when their sum is >= 1
AvgPool2d, AdaptiveAvgPool2d  ``AvgPool2d`` (adaptive: when the sizes divide evenly)
Flatten                       ``Flatten`` (per-sample dims: start_dim - 1)
Dropout, Identity             nothing (eval mode)
============================  ============================================================

The graph's output is the readout layer's output at each time step; the student's logits
are its mean over the T steps (graph metadata ``readout``). spikingjelly fires at
V >= v_threshold, NIR at V > v_threshold. A layer without an exact NIR equivalent (a
soft-reset neuron, max-pooling of non-spikes, VotingLayer, ...) raises ``NIRExportError``
naming it.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from spikingjelly.activation_based import functional, neuron

from evo_snn.models.conv import SpikingNet
from evo_snn.models.registry import PooledReadoutNet
from evo_snn.structure.pruning import make_permanent

THRESHOLD_OF_MAXPOOL = 0.5  # Threshold after a SumPool2d: 1 when at least one input spiked


class NIRExportError(ValueError):
    """The student cannot be written as a NIR graph; the message names the layer and why."""


def _nir():
    try:
        import nir
        import nirtorch
    except ImportError as e:  # the optional extra 'deploy'
        raise NIRExportError(f"NIR export needs the packages nir and nirtorch: pip install -e \".[deploy]\" ({e})") from e
    return nir, nirtorch


def write_nir(student: nn.Module, frame_shape, path) -> "nir.NIRGraph":  # noqa: F821
    """Write ``student`` as a NIR graph to ``path`` (HDF5, ``nir.write``); returns the graph.

    student: a registry net (``SpikingNet``: conv_snn / tiny_conv; ``PooledReadoutNet``:
    resnet18*, wrn16_4*, vgg16*), in multi-step mode, pruned or not (a pruning
    re-parametrisation is folded in on a copy; the student itself is not changed).
    frame_shape: (T, C, H, W) of one sample. Node names are the module names with '.'
    replaced by '_'; each node's metadata ``module`` gives the module name (a folded conv:
    also ``folded_batchnorm``). raises NIRExportError for a layer NIR cannot express
    exactly, or when nir / nirtorch are not installed.
    """
    nir, _ = _nir()
    graph = to_nir(student, frame_shape)
    nir.write(str(Path(path)), graph)
    return graph


def to_nir(student: nn.Module, frame_shape) -> "nir.NIRGraph":  # noqa: F821
    """The NIR graph of ``student`` (see ``write_nir``), type-checked by ``nir.NIRGraph``."""
    nir, nirtorch = _nir()
    T, C, H, W = (int(v) for v in frame_shape)
    net = make_permanent(copy.deepcopy(student)).cpu().eval()
    per_step = _per_step(net)
    modules = {m: name for name, m in net.named_modules()}
    for m, name in _unmapped_leaves(net):
        raise NIRExportError(f"layer {name!r} ({type(m).__name__}) has no NIR mapping; mapped: Conv2d, BatchNorm2d, "
                             "Linear, IFNode, LIFNode, ParametricLIFNode, MaxPool2d, AvgPool2d, AdaptiveAvgPool2d, "
                             "Flatten, Dropout, Identity")
    try:
        shapes = _shapes(net, (C, H, W))
    except RuntimeError as e:
        raise NIRExportError(f"frame_shape {(T, C, H, W)} does not fit {type(student).__name__} ({e})") from e

    def convert(m: nn.Module):
        return _node(nir, m, modules[m], shapes.get(m))

    module_map = {type(m): convert for m in modules if _kind(m) is not None}
    try:
        traced = nirtorch.torch_to_nir(per_step, module_map, default_dict={}, type_check=False)
    except NIRExportError:
        raise
    except Exception as e:  # noqa: BLE001 - nirtorch refuses operations it cannot express
        raise NIRExportError(f"{type(student).__name__}: nirtorch cannot trace its forward pass ({type(e).__name__}: {e})") from e
    nodes, edges = _simplify(nir, dict(traced.nodes), list(traced.edges))
    meta = {"source": "evo_snn", "model": type(student).__name__, "dt": 1.0, "time_steps": T,
            "frame_shape": np.array([T, C, H, W]),
            "readout": "the student's logits are the mean over the T time steps of the output node",
            "threshold": "spikingjelly fires at v >= v_threshold, NIR at v > v_threshold"}
    try:
        return nir.NIRGraph(nodes, edges, metadata=meta, type_check=True)
    except Exception as e:  # noqa: BLE001
        raise NIRExportError(f"{type(student).__name__}: the NIR graph does not type-check ({e})") from e


# ---------------------------------------------------------------------- tracing
def _unmapped_leaves(net: nn.Module, prefix: str = ""):
    """(module, name) of every leaf module without a mapping, not looking inside mapped
    modules (a neuron's surrogate function is part of the neuron)."""
    for name, m in net.named_children():
        full = f"{prefix}{name}"
        if _kind(m) is not None:
            continue
        if any(True for _ in m.children()):
            yield from _unmapped_leaves(m, full + ".")
        else:
            yield m, full


def _per_step(net: nn.Module) -> nn.Module:
    """``net`` (sharing its modules) with a forward that returns the readout's output per
    time step, [T, N, classes], instead of its mean over T (nirtorch traces additions only)."""
    if isinstance(net, SpikingNet):
        def forward(self, x):
            return self.classifier(self.features(x))
    elif isinstance(net, PooledReadoutNet):
        def forward(self, x):
            return self.fc(self.dropout(self.flatten(self.avgpool(self.trunk(x)))))
    else:
        raise NIRExportError(f"model {type(net).__name__} has no NIR export (its readout is not known); "
                             "supported: SpikingNet (conv_snn, tiny_conv) and PooledReadoutNet (resnet18, wrn16_4, vgg16)")
    wrapper = copy.copy(net)
    wrapper.__class__ = type(f"PerStep{type(net).__name__}", (type(net),), {"forward": forward})
    return wrapper


def _shapes(net: nn.Module, sample: tuple[int, ...]) -> dict[nn.Module, tuple]:
    """{module: (per-sample input shape, per-sample output shape)} from one multi-step forward
    of a zero input [T=1, N=1, *sample]."""
    shapes, handles = {}, []

    def hook(m, args, out):
        shapes[m] = (tuple(args[0].shape[2:]), tuple(out.shape[2:]))

    for m in net.modules():
        handles.append(m.register_forward_hook(hook))
    try:
        with torch.no_grad():
            net(torch.zeros(1, 1, *sample))
        functional.reset_net(net)
    finally:
        for h in handles:
            h.remove()
    return shapes


_SPIKING = (neuron.IFNode, neuron.LIFNode, neuron.ParametricLIFNode)


def _kind(m: nn.Module) -> str | None:
    for kind, types in (("conv", nn.Conv2d), ("bn", nn.BatchNorm2d), ("linear", nn.Linear), ("neuron", _SPIKING),
                        ("maxpool", nn.MaxPool2d), ("avgpool", (nn.AvgPool2d, nn.AdaptiveAvgPool2d)),
                        ("flatten", nn.Flatten), ("identity", (nn.Identity, nn.Dropout))):
        if isinstance(m, types):
            return kind
    if type(m).__name__ == "Dropout" and type(m).__module__.startswith("spikingjelly"):
        return "identity"  # spikingjelly's layer.Dropout (one mask over time) is not an nn.Dropout
    return None


def _pair(v) -> np.ndarray:
    return np.array(v if isinstance(v, (tuple, list)) else (v, v), dtype=np.int64)


def _f32(t) -> np.ndarray:
    return np.asarray(t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else t, dtype=np.float32)


def _bn_scale_shift(bn: nn.BatchNorm2d) -> tuple[np.ndarray, np.ndarray]:
    """(s, shift) of an eval-mode BatchNorm2d: y = s * x + shift per channel."""
    var, mean = _f32(bn.running_var), _f32(bn.running_mean)
    gamma = _f32(bn.weight) if bn.weight is not None else np.ones_like(var)
    beta = _f32(bn.bias) if bn.bias is not None else np.zeros_like(var)
    s = gamma / np.sqrt(var + bn.eps)
    return s.astype(np.float32), (beta - mean * s).astype(np.float32)


def _node(nir, m: nn.Module, name: str, shape):
    """The NIR node of one module (BatchNorm2d: a diagonal 1x1 conv, folded later when it follows a conv)."""
    kind = _kind(m)
    meta = {"module": name}
    if shape is None and kind not in ("identity", "linear"):
        raise NIRExportError(f"layer {name!r} ({type(m).__name__}) is not used by the forward pass")
    in_shape, out_shape = shape if shape is not None else (None, None)
    if kind == "conv":
        if isinstance(m.padding, str) or m.padding_mode != "zeros":
            raise NIRExportError(f"layer {name!r}: Conv2d padding {m.padding!r} / padding_mode {m.padding_mode!r} has no NIR mapping")
        bias = _f32(m.bias) if m.bias is not None else np.zeros(m.out_channels, dtype=np.float32)
        return nir.Conv2d(input_shape=tuple(in_shape[1:]), weight=_f32(m.weight), stride=tuple(_pair(m.stride)),
                          padding=tuple(_pair(m.padding)), dilation=tuple(_pair(m.dilation)), groups=m.groups, bias=bias,
                          metadata=meta)
    if kind == "bn":
        s, shift = _bn_scale_shift(m)
        # a diagonal 1x1 conv (NIR's type inference does not count groups, so not a depthwise one)
        return nir.Conv2d(input_shape=tuple(in_shape[1:]), weight=np.diag(s)[:, :, None, None], stride=(1, 1),
                          padding=(0, 0), dilation=(1, 1), groups=1, bias=shift, metadata={**meta, "batchnorm": 1})
    if kind == "linear":
        if m.bias is None:
            return nir.Linear(weight=_f32(m.weight), metadata=meta)
        return nir.Affine(weight=_f32(m.weight), bias=_f32(m.bias), metadata=meta)
    if kind == "neuron":
        return _neuron(nir, m, name, out_shape, meta)
    if kind == "maxpool":
        k, st, p = _pair(m.kernel_size), _pair(m.stride if m.stride is not None else m.kernel_size), _pair(m.padding)
        if np.any(_pair(m.dilation) != 1):
            raise NIRExportError(f"layer {name!r}: MaxPool2d with dilation has no NIR mapping")
        _check_pool_shape(name, m, in_shape, out_shape, k, st, p)
        return nir.SumPool2d(kernel_size=k, stride=st, padding=p, metadata={**meta, "maxpool": 1})
    if kind == "avgpool":
        if isinstance(m, nn.AdaptiveAvgPool2d):
            out_hw = np.array(out_shape[1:])
            in_hw = np.array(in_shape[1:])
            if np.any(in_hw % out_hw):
                raise NIRExportError(f"layer {name!r}: AdaptiveAvgPool2d from {tuple(in_hw)} to {tuple(out_hw)} is not a plain pooling")
            k = st = (in_hw // out_hw).astype(np.int64)
            p = np.zeros(2, dtype=np.int64)
        else:
            k, st, p = _pair(m.kernel_size), _pair(m.stride if m.stride is not None else m.kernel_size), _pair(m.padding)
            if p.any() and not m.count_include_pad:
                raise NIRExportError(f"layer {name!r}: AvgPool2d with count_include_pad=False has no NIR mapping")
            _check_pool_shape(name, m, in_shape, out_shape, k, st, p)
        return nir.AvgPool2d(kernel_size=k, stride=st, padding=p, metadata=meta)
    if kind == "flatten":
        start = m.start_dim - 1 if m.start_dim > 0 else m.start_dim
        end = m.end_dim - 1 if m.end_dim > 0 else m.end_dim
        return nir.Flatten(input_type={"input": np.array(in_shape)}, start_dim=start, end_dim=end, metadata=meta)
    if kind == "identity":
        return nir.Scale(scale=np.ones(1, dtype=np.float32), metadata={**meta, "identity": 1})  # removed by _simplify
    raise NIRExportError(f"layer {name!r} ({type(m).__name__}) has no NIR mapping")


def _check_pool_shape(name, m, in_shape, out_shape, k, st, p) -> None:
    """NIR pools round down; a pool whose real output differs (ceil_mode) cannot be mapped."""
    expect = (np.array(in_shape[1:]) + 2 * p - k) // st + 1
    if tuple(expect) != tuple(out_shape[1:]):
        raise NIRExportError(f"layer {name!r}: {type(m).__name__} gives {tuple(out_shape[1:])} from {tuple(in_shape[1:])} "
                             f"(ceil_mode), NIR pooling gives {tuple(expect)}")


def _neuron(nir, m: nn.Module, name: str, shape, meta: dict):
    if m.v_reset is None:
        raise NIRExportError(f"layer {name!r} ({type(m).__name__}): soft reset (v_reset=None, subtract the threshold) "
                             "has no NIR equivalent; NIR neurons reset to v_reset")
    full = lambda v: np.full(shape, float(v), dtype=np.float32)  # noqa: E731
    vth, vr = full(m.v_threshold), full(m.v_reset)
    if isinstance(m, neuron.IFNode):
        return nir.IF(r=full(1.0), v_threshold=vth, v_reset=vr, metadata=meta)
    if isinstance(m, neuron.ParametricLIFNode):
        tau = 1.0 / torch.sigmoid(m.w.detach()).item()
    else:
        tau = float(m.tau)
    decay_input = bool(getattr(m, "decay_input", True))
    # spikingjelly: V[t] = V[t-1] + (X[t] - (V[t-1] - v_reset)) / tau (decay_input; else + X[t] - (V - v_reset)/tau)
    # NIR, Euler with dt = 1: v += (v_leak - v + r * X) / tau
    return nir.LIF(tau=full(tau), r=full(1.0 if decay_input else tau), v_leak=vr, v_threshold=vth, v_reset=vr,
                   metadata={**meta, "decay_input": int(decay_input)})


# ---------------------------------------------------------------------- graph rewriting
def _simplify(nir, nodes: dict, edges: list) -> tuple[dict, list]:
    """Rename the input/output nodes, drop identity nodes, fold a BatchNorm2d into the conv
    it follows, and put a Threshold after every SumPool2d that stands for a MaxPool2d
    (checking that it pools spikes)."""
    edges = list(dict.fromkeys((a, b) for a, b in edges))
    for old, new in [(k, "input") for k, v in nodes.items() if isinstance(v, nir.Input)] + \
                    [(k, "output") for k, v in nodes.items() if isinstance(v, nir.Output)]:
        nodes[new] = nodes.pop(old)
        edges = [(new if a == old else a, new if b == old else b) for a, b in edges]

    def preds(k):
        return [a for a, b in edges if b == k]

    def succs(k):
        return [b for a, b in edges if a == k]

    def splice(k):  # remove node k, connecting its predecessors to its successors
        nonlocal edges
        new = [(a, b) for a in preds(k) for b in succs(k)]
        edges = [e for e in edges if k not in e] + new
        edges = list(dict.fromkeys(edges))
        del nodes[k]

    for k in [k for k, v in nodes.items() if v.metadata.get("identity")]:
        splice(k)
    for k in [k for k, v in nodes.items() if v.metadata.get("batchnorm")]:
        p = preds(k)
        if len(p) == 1 and isinstance(nodes[p[0]], nir.Conv2d) and not nodes[p[0]].metadata.get("batchnorm") \
                and succs(p[0]) == [k]:
            conv, bn = nodes[p[0]], nodes[k]
            s = np.diagonal(bn.weight[:, :, 0, 0])
            conv.weight = (conv.weight * s[:, None, None, None]).astype(np.float32)  # zeros stay zeros
            conv.bias = (conv.bias * s + bn.bias).astype(np.float32)
            conv.metadata = {**conv.metadata, "folded_batchnorm": bn.metadata["module"]}
            splice(k)
    for k in [k for k, v in list(nodes.items()) if v.metadata.get("maxpool")]:
        spiking = (nir.IF, nir.LIF, nir.Threshold)
        bad = [p for p in preds(k) if not isinstance(nodes[p], spiking)]
        if bad:
            raise NIRExportError(f"layer {nodes[k].metadata['module']!r}: MaxPool2d of non-spike input ({bad}) has no "
                                 "exact NIR mapping (it is one only on 0/1 spikes)")
        thr = k + "_threshold"
        out_shape = _pool_out_shape(nodes[k], nodes[preds(k)[0]])
        nodes[thr] = nir.Threshold(threshold=np.full(out_shape, THRESHOLD_OF_MAXPOOL, dtype=np.float32),
                                   metadata={"module": nodes[k].metadata["module"], "maxpool_threshold": 1})
        edges = [(thr if a == k else a, b) for a, b in edges] + [(k, thr)]
    return nodes, edges


def _pool_out_shape(pool, pre) -> tuple:
    """Per-sample output shape (C, H', W') of a pooling node fed by ``pre`` (a neuron node)."""
    c, h, w = pre.v_threshold.shape if hasattr(pre, "v_threshold") else pre.threshold.shape
    k, s, p = (np.asarray(v) for v in (pool.kernel_size, pool.stride, pool.padding))
    hw = (np.array([h, w]) + 2 * p - k) // s + 1
    return (c, int(hw[0]), int(hw[1]))


__all__ = ["NIRExportError", "to_nir", "write_nir"]
