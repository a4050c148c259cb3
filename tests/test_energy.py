"""evo_snn.evaluation.energy against counts computed by hand, a brute-force loop, and the neurobench package.

The 2-layer net (Linear 3->2, IF, Linear 2->2, no bias) has weights and inputs small
enough to count every non-zero (weight, input) pair on paper; the convolution counts are
checked against a plain Python loop over output positions and kernel taps, written
independently of the fan-out shortcut in ``evo_snn.evaluation.energy``.
"""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn as nn
from spikingjelly.activation_based import functional, layer, neuron

from evo_snn.evaluation.energy import E_AC_PJ, E_MAC_PJ, EnergyCounter, count_energy, layer_table

W1 = [[1.0, 0.0, 2.0], [0.0, 0.0, 1.0]]  # column non-zero counts (1, 0, 2)
W2 = [[1.0, 0.0], [1.0, 1.0]]  # column non-zero counts (2, 1)
# x_seq [T=3, N=2, 3]: real-valued (not spikes), so the first layer counts MACs
X = [[[0.5, 0.0, 2.0], [1.0, 1.0, 0.0]],
     [[0.0, 0.0, 0.0], [3.0, 0.0, 1.0]],
     [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]]


def two_layer_net() -> nn.Module:
    l1, l2 = layer.Linear(3, 2, bias=False), layer.Linear(2, 2, bias=False)
    with torch.no_grad():
        l1.weight.copy_(torch.tensor(W1))
        l2.weight.copy_(torch.tensor(W2))
    net = nn.Sequential(l1, neuron.IFNode(v_threshold=1.0), l2)
    functional.set_step_mode(net, "m")
    return net


# By hand (per batch of N=2 samples):
# layer 0 (MACs): non-zero inputs per vector times the column counts (1, 0, 2):
#   t0n0 {0, 2}: 1 + 2 = 3; t0n1 {0, 1}: 1 + 0 = 1; t1n1 {0, 2}: 3; others 0  -> 7 MACs; dense 6 vectors x 6 = 36
# IF (threshold 1, hard reset to 0), inputs W1 x: n0: t0 (4.5, 2) -> spikes (1, 1); t1 (0, 0); t2 (0, 0)
#   n1: t0 (1, 0) -> (1, 0); t1 (5, 1) -> (1, 1); t2 (0, 0)       -> 5 spikes of 12 outputs
# layer 2 (ACs): spike vectors (1,1): 2 + 1 = 3 (twice), (1,0): 2   -> 8 ACs; dense 6 x 4 = 24
HAND = {"macs": 7 / 2, "acs": 8 / 2, "dense": (36 + 24) / 2, "spikes": 5 / 2, "firing_rate": 5 / 12}


def test_two_layer_net_matches_hand_counts():
    rep = count_energy(two_layer_net(), torch.tensor(X))
    assert rep.samples == 2
    assert rep.effective_macs == HAND["macs"] and rep.effective_acs == HAND["acs"]
    assert rep.synops == HAND["dense"]
    assert rep.layers["0"].effective_macs == 3.5 and rep.layers["0"].effective_acs == 0
    assert rep.layers["2"].effective_acs == 4.0 and rep.layers["2"].effective_macs == 0
    assert (rep.layers["0"].dense_macs, rep.layers["2"].dense_acs) == (18.0, 12.0)
    assert rep.spikes == HAND["spikes"] and rep.neurons["1"].firing_rate == pytest.approx(HAND["firing_rate"])
    assert rep.activation_sparsity == pytest.approx(7 / 12)
    assert rep.layers["0"].connection_sparsity == pytest.approx(3 / 6)
    assert rep.energy_pj == pytest.approx(E_AC_PJ * 4.0 + E_MAC_PJ * 3.5)  # 19.7 pJ per sample
    assert rep.dense_energy_pj == pytest.approx(E_AC_PJ * 12 + E_MAC_PJ * 18)
    assert rep.energy_fraction == pytest.approx((0.9 * 4 + 4.6 * 3.5) / (0.9 * 12 + 4.6 * 18))


def test_counts_are_per_sample_over_batches_and_constants_are_used():
    """Two batches, the second the first again: per-sample counts do not change; the energy
    follows the constants given."""
    x = torch.tensor(X)
    rep = count_energy(two_layer_net(), [(x, None), x], e_ac_pj=1.0, e_mac_pj=10.0)
    assert rep.samples == 4
    assert (rep.effective_macs, rep.effective_acs, rep.synops) == (HAND["macs"], HAND["acs"], HAND["dense"])
    assert rep.energy_pj == pytest.approx(1.0 * 4.0 + 10.0 * 3.5)


def test_binary_input_counts_acs_and_event_counts_count_macs():
    """NeuroBench's rule: a layer whose input holds only {-1, 0, 1} receives spikes (ACs)."""
    x = (torch.tensor(X) != 0).float()
    rep = count_energy(two_layer_net(), x)
    assert rep.layers["0"].effective_macs == 0 and rep.layers["0"].effective_acs == 3.5  # same pattern of non-zeros
    assert rep.layers["0"].dense_acs == 18.0 and rep.layers["0"].dense_macs == 0
    rep2 = count_energy(two_layer_net(), x * 2)  # event counts of 2: not spikes
    assert rep2.layers["0"].effective_macs == 3.5 and rep2.layers["0"].effective_acs == 0


def _brute_force_conv(x, w, stride, padding):
    """(effective, dense) operations of a 2-D convolution by a loop over every output position,
    output channel, input channel and kernel tap; x: [B, C, H, W], w: [O, C, k, k]."""
    B, C, H, W = x.shape
    O, _, k, _ = w.shape
    Ho, Wo = (H + 2 * padding - k) // stride + 1, (W + 2 * padding - k) // stride + 1
    eff = dense = 0
    for b, o, i, j, c, u, v in itertools.product(range(B), range(O), range(Ho), range(Wo), range(C), range(k), range(k)):
        h, wi = i * stride - padding + u, j * stride - padding + v
        if 0 <= h < H and 0 <= wi < W:  # a padded position is not an input
            dense += 1
            eff += int(w[o, c, u, v] != 0 and x[b, c, h, wi] != 0)
    return eff, dense


@pytest.mark.parametrize("stride,padding", [(1, 1), (2, 1), (1, 0)])
def test_pruned_conv_matches_brute_force(stride, padding):
    g = torch.Generator().manual_seed(0)
    conv = layer.Conv2d(2, 3, 3, stride=stride, padding=padding, bias=True)
    with torch.no_grad():
        conv.weight.mul_((torch.rand(conv.weight.shape, generator=g) > 0.5).float())  # about half pruned
    net = nn.Sequential(conv)
    functional.set_step_mode(net, "m")
    x = (torch.rand(2, 3, 2, 5, 6, generator=g) > 0.6).float()  # x_seq [T=2, N=3, C=2, 5, 6] spikes
    rep = count_energy(net, x)
    eff, dense = _brute_force_conv(x.reshape(6, 2, 5, 6), conv.weight.detach(), stride, padding)
    assert 0 < eff < dense
    assert rep.layers["0"].effective_acs == pytest.approx(eff / 3) and rep.layers["0"].effective_macs == 0
    assert rep.synops == pytest.approx(dense / 3)
    assert rep.layers["0"].connection_sparsity == pytest.approx(float((conv.weight == 0).float().mean()))


def test_all_ones_conv_counts_in_bounds_taps_only():
    """3x3 kernel, padding 1, on a 3x3 map: 4 corners x 4 + 4 edges x 6 + centre 9 = 49 taps."""
    conv = layer.Conv2d(1, 1, 3, padding=1, bias=False)
    nn.init.ones_(conv.weight)
    net = nn.Sequential(conv)
    functional.set_step_mode(net, "m")
    rep = count_energy(net, torch.ones(1, 1, 1, 3, 3))
    assert rep.synops == 49 and rep.effective_acs == 49


def test_counter_does_not_change_outputs_and_detaches(tiny_cfg):
    from evo_snn.models import build_model

    torch.manual_seed(0)
    net = build_model(tiny_cfg.model, (4, 2, 8, 8), 3).eval()
    x = torch.randint(0, 3, (4, 5, 2, 8, 8)).float()
    with torch.no_grad():
        plain = net(x)
        functional.reset_net(net)
        with EnergyCounter(net) as counter:
            counted = net(x)
            functional.reset_net(net)
        after = net(x)
        functional.reset_net(net)
    assert torch.equal(plain, counted) and torch.equal(plain, after)
    rep = counter.report()
    assert rep.samples == 5 and 0 < rep.effective_acs < rep.synops and rep.effective_macs > 0
    assert counter._handles == [] and not net._forward_pre_hooks
    assert 0 < rep.energy_fraction < 1
    table = layer_table(rep)
    assert table.iloc[-1]["layer"] == "total" and table.iloc[-1]["synops"] == rep.synops


def test_errors_say_what_is_wrong():
    with pytest.raises(ValueError, match="no connection layer"):
        EnergyCounter(nn.Sequential(neuron.IFNode()))
    with pytest.raises(ValueError, match="counted no sample"):
        EnergyCounter(two_layer_net()).report()


# ---------------------------------------------------------------------- neurobench parity
class _BatchFirst(nn.Module):
    """neurobench normalises by ``data[0].size(0)``: it needs batch-first input."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x.transpose(0, 1))


def _neurobench(net, x_seq, batch_first=True):
    nb_models = pytest.importorskip("neurobench.models", reason="neurobench not installed (optional, parity check only)")
    from neurobench.metrics.workload import ActivationSparsity, SynapticOperations

    model = nb_models.TorchModel(_BatchFirst(net) if batch_first else net)
    model.add_activation_module(neuron.BaseNode)  # spikingjelly's neurons are not activations to neurobench by default
    model.register_hooks()
    data = x_seq.transpose(0, 1) if batch_first else x_seq
    with torch.no_grad():
        preds = model(data)
    ops = SynapticOperations()(model, preds, (data, None))
    act = ActivationSparsity()(model, preds, (data, None))
    model.cleanup_hooks()
    functional.reset_net(net)
    return ops, act


def test_neurobench_agrees_behind_a_batch_first_wrapper_and_not_without():
    x = torch.tensor(X)
    ops, act = _neurobench(two_layer_net(), x)
    assert ops == {"Effective_MACs": HAND["macs"], "Effective_ACs": HAND["acs"], "Dense": HAND["dense"]}
    assert act == pytest.approx(7 / 12)
    raw, _ = _neurobench(two_layer_net(), x, batch_first=False)
    assert raw["Effective_MACs"] == pytest.approx(7 / 3)  # divided by T = 3 instead of N = 2: why evo_snn.evaluation.energy exists


@pytest.mark.parametrize("model", ["tiny_conv", "resnet18_tiny"])
def test_registry_models_agree_with_neurobench(tiny_cfg, model):
    from dataclasses import replace

    from evo_snn.models import build_model
    from evo_snn.structure.pruning import apply_masks, make_permanent, prunable_layers

    torch.manual_seed(0)
    net = build_model(replace(tiny_cfg.model, name=model), (3, 2, 8, 8), 3).eval()
    g = torch.Generator().manual_seed(1)
    masks = {n: (torch.rand(m.weight.shape, generator=g) > 0.4).numpy() for n, m in prunable_layers(net).items()}
    make_permanent(apply_masks(net, masks))
    x = torch.randint(0, 3, (3, 4, 2, 8, 8), generator=g).float()  # event counts: the first layer counts MACs
    rep = count_energy(net, x)
    ops, act = _neurobench(net, x)
    assert rep.effective_acs == pytest.approx(ops["Effective_ACs"]) and rep.effective_macs == pytest.approx(ops["Effective_MACs"])
    assert rep.synops == pytest.approx(ops["Dense"])
    assert rep.activation_sparsity == pytest.approx(act)
    assert rep.effective_acs > 0 and rep.effective_macs > 0


def test_the_fan_out_follows_weights_changed_between_attaches():
    """The fan-out is computed once per attach (no per-batch weight comparison, issue 26):
    a counter re-attached after pruning counts the pruned layer's new fan-out."""
    net = two_layer_net()
    counter = EnergyCounter(net)
    with counter:
        net(torch.tensor(X))
    functional.reset_net(net)
    assert counter.report().effective_macs == HAND["macs"]
    with torch.no_grad():
        net[0].weight[0, 2] = 0.0  # column counts (1, 0, 1): t0n0 {0, 2} -> 2, t0n1 -> 1, t1n1 {0, 2} -> 2
    counter.reset()
    with counter:
        net(torch.tensor(X))
    assert counter.report().effective_macs == 5 / 2


# --- issue 26: the counts in float kernels, against the boolean formulas they replace -------------

SPECIAL = [0.0, -0.0, 1.0, -1.0, 0.5, -0.5, 2.0, -2.0, 1.0 - 2.0 ** -24, 1.0 + 2.0 ** -23, 2.0 ** -149, -(2.0 ** -149),
           float("inf"), float("-inf"), float("nan"), 3.0]


def _tensors():
    g = torch.Generator().manual_seed(0)
    spikes = (torch.rand(3, 5, 4, 6, generator=g) < 0.3).float()
    signed = spikes - (torch.rand(3, 5, 4, 6, generator=g) < 0.2).float()  # -1, 0, 1
    yield "spikes", spikes
    yield "signed spikes", signed
    yield "all zero", torch.zeros(3, 5, 4, 6)
    yield "event counts", torch.randint(0, 4, (3, 5, 4, 6), generator=g).float()
    yield "images", torch.randn(3, 5, 4, 6, generator=g)
    for v in SPECIAL:  # one odd value among spikes
        t = spikes.clone()
        t[1, 2, 3, 4] = v
        yield f"spikes and {v!r}", t
    yield "float64 spikes", spikes.double()
    yield "bfloat16 spikes", spikes.bfloat16()


@pytest.mark.parametrize("name,x", list(_tensors()), ids=[n for n, _ in _tensors()])
def test_float_counts_equal_the_boolean_ones(name, x):
    """spike_check and nonzero_per_input give what ``((x == 0) | (x == 1) | (x == -1)).all()``
    and ``(x != 0).sum(0)`` give, for spikes, signed spikes, counts, images and every odd float
    (+-0, subnormals, 1 -+ 1 ulp, +-inf, NaN); the 0/1 shortcut only where it applies."""
    from evo_snn.evaluation.energy import nonzero_per_input, spike_check

    xs = x.reshape(-1, *x.shape[-2:])
    want_spiking = bool(((x == 0) | (x == 1) | (x == -1)).all())
    want_counts = (xs != 0).sum(0, dtype=torch.float64)
    spiking, non_negative = spike_check(x)
    assert bool(spiking) == want_spiking
    assert bool(non_negative) == bool((x >= 0).all())
    got = nonzero_per_input(xs)
    assert got.shape == want_counts.shape and torch.equal(got.double(), want_counts)
    if want_spiking and bool((x >= 0).all()):
        assert torch.equal(nonzero_per_input(xs, binary=True).double(), want_counts)


def test_counts_over_more_vectors_than_float32_holds_exactly_are_float64():
    from evo_snn.evaluation import energy

    xs = torch.ones(8, 3)
    old = energy._EXACT_FLOAT32_COUNT
    try:
        energy._EXACT_FLOAT32_COUNT = 4  # as if 8 vectors were over 2**24
        got = energy.nonzero_per_input(xs)
    finally:
        energy._EXACT_FLOAT32_COUNT = old
    assert got.dtype == torch.float64 and torch.equal(got, torch.full((3,), 8.0, dtype=torch.float64))


class _BooleanCounter(EnergyCounter):
    """The hooks before issue 26 (boolean kernels, count_nonzero): the reference the float ones must equal."""

    def _layer_hook(self, name):
        from evo_snn.evaluation.energy import _sample_dims

        def hook(module, args):
            x = args[0].detach()
            shape = tuple(x.shape[-_sample_dims(module):])
            fan, dense_one = self._fanout[name].get(module, shape, x.device)
            nonzero = (x != 0).reshape(-1, *shape)
            effective = float((nonzero.sum(0, dtype=torch.float64) * fan).sum())
            dense = nonzero.shape[0] * dense_one
            spiking = bool(((x == 0) | (x == 1) | (x == -1)).all())
            self._ops[name] += torch.tensor([dense, 0, effective, 0] if spiking else [0, dense, 0, effective],
                                            dtype=torch.float64)
        return hook

    def _neuron_hook(self, name):
        def hook(module, args, out):
            self._spikes[name] += torch.count_nonzero(out.detach()).double()
            self._outputs[name] += out.numel()
        return hook


@pytest.mark.parametrize("model", ["conv_snn", "resnet18_tiny"])
def test_the_float_counters_report_exactly_what_the_boolean_ones_did(model, tiny_cfg):
    """Every per-layer count and total of the counter equals, to the bit, the boolean
    reference's, over two batches of event counts through a masked net (MAC first layer,
    AC layers after spiking nodes)."""
    from dataclasses import replace

    from evo_snn.models import build_model
    from evo_snn.structure.pruning import apply_masks, make_permanent, prunable_layers

    torch.manual_seed(0)
    net = build_model(replace(tiny_cfg.model, name=model), (3, 2, 8, 8), 3).eval()
    g = torch.Generator().manual_seed(2)
    masks = {n: (torch.rand(m.weight.shape, generator=g) > 0.5).numpy() for n, m in prunable_layers(net).items()}
    make_permanent(apply_masks(net, masks))
    batches = [torch.randint(0, 3, (3, 4, 2, 8, 8), generator=g).float() * 2.0 for _ in range(2)]
    reports = []
    for cls in (EnergyCounter, _BooleanCounter):
        with torch.no_grad(), cls(net) as counter:
            for x in batches:
                net(x)
                functional.reset_net(net)
        reports.append(counter.report())
    new, ref = reports
    assert new.layers == ref.layers and new.neurons == ref.neurons
    assert new.metrics() == ref.metrics()
    assert new.effective_acs > 0 and new.effective_macs > 0 and new.spikes > 0
