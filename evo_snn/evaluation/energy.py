"""Synaptic operations, spikes and estimated energy of a spiking net, counted the NeuroBench way.

Definitions (NeuroBench: Yik et al., "The neurobench framework for benchmarking
neuromorphic computing algorithms and systems", Nature Communications 16, 1545 (2025);
its metrics ``SynapticOperations``, ``ActivationSparsity``, ``ConnectionSparsity``):

- A **connection layer** is an ``nn.Linear`` or ``nn.Conv1d/2d/3d`` (spikingjelly's
  ``layer.Linear`` / ``layer.Conv2d`` subclass them). Biases are not synaptic operations.
- **Dense SynOps**: every (input element, weight) multiplication the layer performs,
  whatever the values (zero padding of a convolution is not an input, so it is not
  counted).
- **Effective operations**: only the pairs with a non-zero weight *and* a non-zero
  input. A layer whose input, in a batch, holds only values in {-1, 0, 1} receives
  spikes: its effective operations are **ACs** (accumulates). Otherwise (the first layer
  on event counts or images, a readout after average pooling) they are **MACs**.
- **Activation sparsity**: the fraction of zero outputs of the neuron layers (spikingjelly
  spiking nodes, and ``nn.ReLU`` in an ANN twin) over all their outputs, time steps and
  samples; the **firing rate** is its complement (spikes per neuron per time step).
- **Connection sparsity**: the fraction of zero weights over the connection layers.

Every count is reported **per sample** (one inference of T time steps), as NeuroBench does,
in an ``EnergyReport`` (``evo_snn.evaluation.energy_report``, re-exported here with
``LayerOps``, ``NeuronActivity``, ``E_AC_PJ`` and ``E_MAC_PJ``).

Estimated energy (``EnergyReport.energy_pj``) = E_AC x ACs + E_MAC x MACs, with the 45 nm
figures of Horowitz, "Computing's energy problem (and what we can do about it)", ISSCC
2014: E_AC = 0.9 pJ (32-bit float add), E_MAC = 4.6 pJ (32-bit float multiply, 3.7 pJ,
plus add); ``energy.e_ac_pj`` / ``energy.e_mac_pj`` in the config change them.

Why not the ``neurobench`` package itself (2.3.0, checked on spikingjelly multi-step nets in
``tests/test_energy.py``): its totals equal ours only behind a batch-first wrapper, because
``SynapticOperations`` divides by ``data[0].size(0)``, which for spikingjelly's
``x_seq: [T, N, ...]`` is T, not N (a T=3, N=2 net gives 2.33 MACs per sample instead of
3.5); it reports no per-layer SynOps; its per-layer activation sparsity is keyed by a
module's child name (every ``sn1`` of a ResNet merges into one entry); spikingjelly's
neurons are not activations to it unless added by hand; it deep-copies every connection
layer twice per batch and runs two extra forward passes through each; and it pulls in
snntorch, tonic, librosa and numba. Here forward hooks count during an ordinary
forward pass (the fitness's validation pass): per batch, a few float kernels and
reductions over each layer's input (``spike_check``, ``nonzero_per_input``; no boolean
kernels, which are 3-10x slower on the CPU); the per-input fan-out of the non-zero weights
is computed once per layer (see ``_Fanout``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
import torch.nn as nn
from spikingjelly.activation_based import functional

from evo_snn.evaluation.energy_report import E_AC_PJ, E_MAC_PJ, EnergyReport, LayerOps, NeuronActivity
from evo_snn.models.neurons import ANN_ACTIVATIONS, spiking_nodes

CONNECTION_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
"""The layers whose synaptic operations are counted (NeuroBench's stateless layers)."""


def connection_layers(model: nn.Module) -> dict[str, nn.Module]:
    """{qualified name: module} of the connection layers of ``model``, in module order."""
    return {n: m for n, m in model.named_modules() if isinstance(m, CONNECTION_TYPES)}


def neuron_layers(model: nn.Module) -> dict[str, nn.Module]:
    """{qualified name: module} of the spikingjelly spiking nodes and ANN activations (``nn.ReLU``)."""
    nodes = {id(m) for m in spiking_nodes(model)}
    ann = tuple(ANN_ACTIVATIONS.values())
    return {n: m for n, m in model.named_modules() if id(m) in nodes or isinstance(m, ann)}


def _sample_dims(module: nn.Module) -> int:
    """How many trailing input dims make one input vector/map: 1 (Linear), 1 + d (ConvNd)."""
    if isinstance(module, nn.Linear):
        return 1
    return 1 + len(module.kernel_size)  # ConvNd: channels + N spatial dims


_EXACT_FLOAT32_COUNT = 2 ** 24
"""float32 holds every integer up to 2**24 exactly: a per-input count over fewer vectors is exact."""


def nonzero_indicator(x: torch.Tensor) -> torch.Tensor:
    """1.0 where the float tensor ``x`` is non-zero (NaN and +-inf included), 0.0 where it is
    zero (+-0.0): ``(x != 0)`` as a new tensor of ``x``'s shape and dtype, in float kernels
    only (ceil(min(|x|, 1)), NaN mapped to 1), which on the CPU run 3-5x faster than the
    boolean ones (issue 26)."""
    return x.abs().clamp_(max=1.0).ceil_().nan_to_num_(1.0)


def nonzero_per_input(xs: torch.Tensor, binary: bool = False) -> torch.Tensor:
    """The number of non-zero values of each input element over the vectors of
    ``xs: [V, *input_shape]`` (V input vectors, e.g. T x N maps of a conv layer), as a
    ``[*input_shape]`` tensor: float32 when V <= 2**24 (exact), float64 otherwise; the same
    values as ``(xs != 0).sum(0)``. binary: the caller knows every value is 0 or 1
    (``spike_check``), so the sum of ``xs`` itself is the count (one reduction)."""
    xs = xs if xs.is_floating_point() else xs.float()
    ind = xs if binary else nonzero_indicator(xs)
    if xs.shape[0] > _EXACT_FLOAT32_COUNT or ind.dtype == torch.float64:
        return ind.sum(0, dtype=torch.float64)
    return ind.sum(0, dtype=torch.float32)


def spike_check(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(spiking, non_negative): 0-dim bool tensors on ``x``'s device, whether every value of the
    non-empty ``x`` is -1, 0 or 1 (``((x == 0) | (x == 1) | (x == -1)).all()``; NaN and +-inf
    are not) and whether none is below 0; from two min/max reductions (of ``x``, and of its
    fractional part ``x - trunc(x)``, which is exact), with no host sync."""
    x = x if x.is_floating_point() else x.float()
    lo, hi = torch.aminmax(x)
    flo, fhi = torch.aminmax(torch.frac(x))
    return (lo >= -1) & (hi <= 1) & (flo == 0) & (fhi == 0), lo >= 0


def _binary_on_host(x: torch.Tensor, spiking: torch.Tensor, non_negative: torch.Tensor) -> bool:
    """Whether ``x`` holds only 0 and 1, decided on the host where that costs no device sync
    (the CPU); elsewhere False, and the count takes the indicator path."""
    return x.device.type == "cpu" and bool(spiking & non_negative)


class _Fanout:
    """For one connection layer and one input shape: fan[i] = the number of (non-zero weight,
    output) pairs that input element i enters, so that a batch's effective operations are
    sum_i (non-zero count of input i over the batch) x fan[i], and its dense SynOps are
    (input vectors) x sum of the all-ones fan-out. The fan-out is the gradient of
    sum(layer(x, binary weights)) with respect to x (the layer is linear in x), taken on
    one all-ones input: it holds stride, padding (and padding_mode), dilation and groups
    exactly. Computed once per input shape and device while the counter is attached (the
    weights must not change then; ``EnergyCounter.attach`` starts afresh), so a batch costs
    no host sync for it (issue 26: it compared the weights with ``torch.equal`` per layer per
    batch)."""

    def __init__(self):
        self.key = None
        self.fan = None  # [*sample_shape] float64
        self.dense = 0.0  # dense SynOps of one input vector/map

    def get(self, module: nn.Module, shape: tuple[int, ...], device) -> tuple[torch.Tensor, float]:
        key = (shape, str(device))
        if key != self.key:
            w = module.weight.detach()
            self.fan = self._grad(module, shape, (w != 0).to(w.dtype), device).double()
            self.dense = float(self._grad(module, shape, torch.ones_like(w), device).double().sum())
            self.key = key
        return self.fan, self.dense

    @staticmethod
    def _grad(module: nn.Module, shape, weight: torch.Tensor, device) -> torch.Tensor:
        with torch.enable_grad():
            x = torch.ones((1, *shape), device=device, dtype=weight.dtype, requires_grad=True)
            if isinstance(module, nn.Linear):
                y = nn.functional.linear(x, weight)
            else:
                y = module._conv_forward(x, weight, None)
            (grad,) = torch.autograd.grad(y.sum(), x)
        return grad[0]


class EnergyCounter:
    """Forward hooks that count synaptic operations and spikes while a multi-step net runs.

    Use as a context manager around ordinary forward passes (e.g. the validation pass of the
    fitness); the hooks only read tensors, so outputs are unchanged::

        with EnergyCounter(net) as counter:
            acc = accuracy(net, val)          # x_seq: [T, N, C, H, W] batches
        report = counter.report()             # EnergyReport, per sample

    model: a spikingjelly net in multi-step mode whose forward takes ``x_seq: [T, N, ...]``
    (samples are counted from dim 1 of its first argument). e_ac_pj / e_mac_pj: energy per
    accumulate / multiply-accumulate in pJ (defaults: 0.9 / 4.6, 45 nm, Horowitz 2014).
    Weights must not change while the counter is attached (eval passes).
    raises ValueError when ``model`` has no connection layer.
    """

    def __init__(self, model: nn.Module, e_ac_pj: float = E_AC_PJ, e_mac_pj: float = E_MAC_PJ):
        self.model = model
        self.e_ac_pj, self.e_mac_pj = float(e_ac_pj), float(e_mac_pj)
        self.layers = connection_layers(model)
        if not self.layers:
            raise ValueError(f"{type(model).__name__} has no connection layer (Linear, Conv1d/2d/3d) to count")
        self.neurons = neuron_layers(model)
        self._handles: list = []
        self.reset()

    def reset(self) -> None:
        """Zero every count (the hooks stay attached)."""
        self.samples = 0
        self._ops = {n: torch.zeros(4, dtype=torch.float64) for n in self.layers}  # dense AC, dense MAC, eff AC, eff MAC
        self._spikes = {n: torch.zeros((), dtype=torch.float64) for n in self.neurons}
        self._outputs = {n: 0 for n in self.neurons}
        self._fanout = {n: _Fanout() for n in self.layers}

    def __enter__(self) -> "EnergyCounter":
        self.attach()
        return self

    def __exit__(self, *exc) -> None:
        self.detach()

    def attach(self) -> None:
        if self._handles:
            return
        self._fanout = {n: _Fanout() for n in self.layers}  # weights may have changed since the last attach
        self._handles.append(self.model.register_forward_pre_hook(self._count_samples))
        for name, m in self.layers.items():
            self._handles.append(m.register_forward_pre_hook(self._layer_hook(name)))
        for name, m in self.neurons.items():
            self._handles.append(m.register_forward_hook(self._neuron_hook(name)))

    def detach(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def _count_samples(self, module, args) -> None:
        x_seq = args[0]
        if x_seq.dim() < 2:
            raise ValueError(f"EnergyCounter expects x_seq: [T, N, ...], got shape {tuple(x_seq.shape)}")
        self.samples += int(x_seq.shape[1])

    def _layer_hook(self, name: str):
        def hook(module, args) -> None:
            x = args[0].detach()
            if x.numel() == 0:
                return  # nothing entered the layer: every count stays as it was
            k = _sample_dims(module)
            shape = tuple(x.shape[-k:])
            fan, dense_one = self._fanout[name].get(module, shape, x.device)
            spiking, non_negative = spike_check(x)
            per_input = nonzero_per_input(x.reshape(-1, *shape), _binary_on_host(x, spiking, non_negative))
            n_vectors = x.numel() // per_input.numel()
            effective = (per_input.to(torch.float64) * fan).sum()
            dense = torch.full((), n_vectors * dense_one, dtype=torch.float64, device=x.device)  # no H2D copy
            zero = torch.zeros((), dtype=torch.float64, device=x.device)
            counts = torch.stack([torch.where(spiking, dense, zero), torch.where(spiking, zero, dense),
                                  torch.where(spiking, effective, zero), torch.where(spiking, zero, effective)])
            if self._ops[name].device != x.device:
                self._ops[name] = self._ops[name].to(x.device)
            self._ops[name] += counts

        return hook

    def _neuron_hook(self, name: str):
        def hook(module, args, out) -> None:
            out = out[0] if isinstance(out, tuple) else out
            out = out.detach()
            if out.numel():
                binary = _binary_on_host(out, *spike_check(out))
                spikes = nonzero_per_input(out.reshape(-1, out.shape[-1]), binary).to(torch.float64).sum()
                if self._spikes[name].device != spikes.device:
                    self._spikes[name] = self._spikes[name].to(spikes.device)
                self._spikes[name] += spikes
            self._outputs[name] += out.numel()

        return hook

    def report(self) -> EnergyReport:
        """The counts so far, per sample. raises ValueError when no sample was counted."""
        if self.samples == 0:
            raise ValueError("EnergyCounter counted no sample: run the model on x_seq [T, N, ...] inside the counter")
        n = self.samples
        layers = {}
        for name, m in self.layers.items():
            d_ac, d_mac, e_ac, e_mac = (float(v) / n for v in self._ops[name].cpu())
            w = m.weight.detach()
            layers[name] = LayerOps(d_ac, d_mac, e_ac, e_mac, float((w == 0).sum()) / w.numel())
        neurons = {name: NeuronActivity(float(self._spikes[name]) / n, self._outputs[name] / n) for name in self.neurons}
        return EnergyReport(n, layers, neurons, self.e_ac_pj, self.e_mac_pj)


def _batches(data) -> Iterable[torch.Tensor]:
    """x_seq tensors from a tensor [T, N, ...] or an iterable of tensors or (x_seq, y) pairs."""
    if isinstance(data, torch.Tensor):
        yield data
        return
    for item in data:
        yield item[0] if isinstance(item, (tuple, list)) else item


@torch.no_grad()
def count_energy(model: nn.Module, data, *, e_ac_pj: float = E_AC_PJ, e_mac_pj: float = E_MAC_PJ) -> EnergyReport:
    """Run ``model`` in eval mode over ``data`` and return its ``EnergyReport`` (per sample).

    data: one ``x_seq: [T, N, ...]`` tensor, or an iterable (a loader) of them or of
    ``(x_seq, y)`` pairs, already in the spikingjelly layout and on the model's device.
    ``functional.reset_net(model)`` runs after every batch; the training mode is restored.
    e_ac_pj / e_mac_pj: pJ per AC / MAC (defaults 0.9 / 4.6, 45 nm, Horowitz 2014).
    """
    was_training = model.training
    model.eval()
    try:
        with EnergyCounter(model, e_ac_pj, e_mac_pj) as counter:
            for x_seq in _batches(data):
                model(x_seq)
                functional.reset_net(model)
    finally:
        model.train(was_training)
    return counter.report()


def layer_table(report: EnergyReport):
    """A pandas table of ``report``: one row per connection layer (synops, effective_acs,
    effective_macs, connection_sparsity, per sample) and one per neuron layer (spikes,
    firing_rate), with a total row."""
    import pandas as pd

    rows = [{"layer": n, "synops": v.synops, "effective_acs": v.effective_acs, "effective_macs": v.effective_macs,
             "connection_sparsity": v.connection_sparsity} for n, v in report.layers.items()]
    rows += [{"layer": n, "spikes": v.spikes, "firing_rate": v.firing_rate} for n, v in report.neurons.items()]
    rows.append({"layer": "total", "synops": report.synops, "effective_acs": report.effective_acs,
                 "effective_macs": report.effective_macs, "spikes": report.spikes, "firing_rate": report.firing_rate})
    return pd.DataFrame(rows)


def synops_per_weight(model, x_seq, names: Sequence[str]) -> dict[str, float]:
    """{name: dense SynOps per weight per sample} of the named connection layers of ``model``.

    Measured with ``count_energy`` (forward hooks, NeuroBench dense SynOps: every
    (input element, weight) product, whatever the values; zero padding not counted) on
    ``x_seq: [T, N, ...]`` (spikingjelly multi-step layout, on the model's device), divided by
    each layer's number of weights: about T x output positions for a conv without groups,
    T for a linear layer. Dense counts depend on the input's shape only, so an all-zero
    ``x_seq`` of the data's frame shape measures the same as real data.
    raises KeyError for a name that is not a connection layer of ``model``, ValueError when
    a layer performed no operation."""
    report = count_energy(model, x_seq)
    modules = dict(model.named_modules())
    out = {}
    for name in names:
        if name not in report.layers:
            raise KeyError(f"{name!r} is not a connection layer of {type(model).__name__}")
        ops = report.layers[name].synops
        if not ops > 0:
            raise ValueError(f"layer {name!r} performed no synaptic operation on x_seq {tuple(x_seq.shape)}")
        out[name] = float(ops) / modules[name].weight.numel()
    return out


__all__ = ["CONNECTION_TYPES", "E_AC_PJ", "E_MAC_PJ", "EnergyCounter", "EnergyReport", "LayerOps", "NeuronActivity",
           "connection_layers", "count_energy", "layer_table", "neuron_layers", "synops_per_weight"]
