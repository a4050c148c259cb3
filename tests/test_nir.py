"""evo_snn.deploy.nir_export: the student written as NIR, read back with ``nir.read``, checked node by
node against the student and run step by step by a small NIR interpreter written here.

The interpreter follows the NIR definitions with dt = 1 (one frame per step): a node's input
is the sum of its predecessors' outputs; IF: v += r x; LIF: v += (v_leak - v + r x) / tau;
spike when v > v_threshold, then v = v_reset. It shares no code with ``evo_snn.deploy.nir_export``.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from spikingjelly.activation_based import functional

nir = pytest.importorskip("nir", reason="nir not installed (optional extra: pip install -e '.[deploy]')")
pytest.importorskip("nirtorch", reason="nirtorch not installed (optional extra: pip install -e '.[deploy]')")

from evo_snn.config import load_config  # noqa: E402
from evo_snn.models import build_model  # noqa: E402
from evo_snn.deploy.nir_export import NIRExportError, write_nir  # noqa: E402
from evo_snn.structure.pruning import apply_masks, make_permanent, prunable_layers  # noqa: E402

FRAME = (4, 2, 8, 8)  # T, C, H, W


def _student(name="tiny_conv", seed=0, frame=FRAME, **model):
    """A pruned registry net (about 40 % of every prunable weight zero) with non-trivial BN
    statistics that make every layer fire."""
    cfg = load_config("synthetic", overrides=["model.channels=[4, 6]"])
    torch.manual_seed(seed)
    net = build_model(replace(cfg.model, name=name, **model), frame, 3)
    g = torch.Generator().manual_seed(seed)
    masks = {n: (torch.rand(m.weight.shape, generator=g) > 0.4).numpy() for n, m in prunable_layers(net).items()}
    make_permanent(apply_masks(net, masks))
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2, generator=g)
                m.running_var.uniform_(0.5, 2.0, generator=g)
                m.weight.uniform_(1.0, 2.0, generator=g)
                m.bias.uniform_(0.0, 0.5, generator=g)
    return net.eval(), masks


def _per_step(net, x_seq):
    """The student's output at each time step [T, N, classes] (its logits are the mean over T)."""
    with torch.no_grad():
        if hasattr(net, "classifier"):
            y = net.classifier(net.features(x_seq))
        else:
            y = net.fc(net.dropout(net.flatten(net.avgpool(net.trunk(x_seq)))))
    functional.reset_net(net)
    return y


def simulate(graph, x_seq: torch.Tensor) -> torch.Tensor:
    """Run a NIR graph on x_seq [T, N, C, H, W] -> [T, N, classes] (see the module docstring)."""
    preds = {k: [a for a, b in graph.edges if b == k] for k in graph.nodes}
    order, done = [], set()
    while len(order) < len(graph.nodes):
        ready = [k for k in graph.nodes if k not in done and all(p in done for p in preds[k])]
        assert ready, "cycle"
        order += ready
        done |= set(ready)
    t_ = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float32)  # noqa: E731
    v = {}
    outs = []
    for x in x_seq:
        val = {}
        for k in order:
            n = graph.nodes[k]
            if isinstance(n, nir.Input):
                val[k] = x
                continue
            inp = sum(val[p] for p in preds[k])
            if isinstance(n, nir.Conv2d):
                y = F.conv2d(inp, t_(n.weight), t_(n.bias), tuple(n.stride), tuple(n.padding), tuple(n.dilation), n.groups)
            elif isinstance(n, (nir.IF, nir.LIF)):
                vk = v.get(k, torch.zeros_like(inp))
                if isinstance(n, nir.IF):
                    vk = vk + t_(n.r) * inp
                else:
                    vk = vk + (t_(n.v_leak) - vk + t_(n.r) * inp) / t_(n.tau)
                y = (vk > t_(n.v_threshold)).float()
                v[k] = torch.where(y > 0, t_(n.v_reset).expand_as(vk), vk)
            elif isinstance(n, nir.SumPool2d):
                y = F.avg_pool2d(inp, tuple(n.kernel_size), tuple(n.stride), tuple(n.padding), divisor_override=1)
            elif isinstance(n, nir.AvgPool2d):
                y = F.avg_pool2d(inp, tuple(n.kernel_size), tuple(n.stride), tuple(n.padding))
            elif isinstance(n, nir.Threshold):
                y = (inp > t_(n.threshold)).float()
            elif isinstance(n, nir.Flatten):
                y = inp.flatten(n.start_dim + 1, n.end_dim if n.end_dim < 0 else n.end_dim + 1)
            elif isinstance(n, nir.Affine):
                y = inp @ t_(n.weight).T + t_(n.bias)
            elif isinstance(n, nir.Linear):
                y = inp @ t_(n.weight).T
            elif isinstance(n, nir.Output):
                y = inp
            else:
                raise AssertionError(f"no simulation of {type(n).__name__}")
            val[k] = y
        outs.append(val["output"])
    return torch.stack(outs)


def test_conv_student_reads_back_with_pruned_weights_zero_and_folded_batchnorm(tmp_path):
    net, masks = _student()
    path = tmp_path / "student.nir"
    write_nir(net, FRAME, path)
    g = nir.read(str(path))
    by_module = {n.metadata.get("module"): (k, n) for k, n in g.nodes.items()}
    kinds = sorted(type(n).__name__ for n in g.nodes.values())
    assert kinds == ["Affine", "Conv2d", "Conv2d", "Flatten", "IF", "IF", "Input", "Output", "SumPool2d", "SumPool2d",
                     "Threshold", "Threshold"]
    for i, (conv, bn) in enumerate([("features.0", "features.1"), ("features.4", "features.5")]):
        key, node = by_module[conv]
        assert key == conv.replace(".", "_") and node.metadata["folded_batchnorm"] == bn
        c, b = net.get_submodule(conv), net.get_submodule(bn)
        s = (b.weight / torch.sqrt(b.running_var + b.eps)).detach().numpy()
        np.testing.assert_allclose(node.weight, c.weight.detach().numpy() * s[:, None, None, None], rtol=1e-6)
        np.testing.assert_allclose(node.bias, (b.bias - b.running_mean * torch.as_tensor(s)).detach().numpy(), rtol=1e-5, atol=1e-7)
        assert np.array_equal(node.weight != 0, masks[conv])  # pruned weights stay exactly zero, kept ones stay non-zero
        assert tuple(node.input_shape) == ((8, 8) if i == 0 else (4, 4))
    _, fc = by_module["classifier.1"]
    assert np.array_equal(fc.weight, net.classifier[1].weight.detach().numpy()) and np.array_equal(fc.weight != 0, masks["classifier.1"])
    _, neuron = by_module["features.2"]
    assert isinstance(neuron, nir.IF) and neuron.v_threshold.shape == (4, 8, 8)
    assert (neuron.v_threshold == 1.0).all() and (neuron.v_reset == 0.0).all() and (neuron.r == 1.0).all()
    chain = ["input", "features_0", "features_2", "features_3", "features_3_threshold", "features_4", "features_6",
             "features_7", "features_7_threshold", "classifier_0", "classifier_1", "output"]
    assert sorted(g.edges) == sorted(zip(chain[:-1], chain[1:]))
    assert g.metadata["time_steps"] == 4


@pytest.mark.parametrize("name,neuron", [("tiny_conv", "if"), ("tiny_conv", "lif"), ("tiny_conv", "plif"),
                                         ("resnet18_tiny", "lif"), ("wrn16_4_tiny", "if"), ("vgg16_tiny", "if")])
def test_read_back_graph_runs_like_the_student(tmp_path, name, neuron):
    """Spikes and readout of every time step equal the student's (residual sums, LIF leak,
    max-pooling as sum + threshold, BN folding all included)."""
    frame = {"tiny_conv": FRAME, "vgg16_tiny": (4, 3, 32, 32)}.get(name, (4, 3, 8, 8))  # VGG: five 2x2 poolings
    leaky = {"v_threshold": 0.4} if neuron != "if" and name != "tiny_conv" else {}  # else deep leaky nets go quiet
    net, _ = _student(name, frame=frame, neuron=neuron, **leaky)
    path = tmp_path / "s.nir"
    write_nir(net, frame, path)
    g = nir.read(str(path))
    x = (torch.rand(frame[0], 3, *frame[1:], generator=torch.Generator().manual_seed(2)) * 4).floor()
    expected = _per_step(net, x)
    got = simulate(g, x)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    assert expected.flatten(0, 1).std(0).max() > 1e-3  # the readout varies with the spikes: not a constant == constant


def test_student_itself_is_not_changed(tmp_path):
    net, _ = _student()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    write_nir(net, FRAME, tmp_path / "s.nir")
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_unmappable_layers_are_named(tmp_path):
    net, _ = _student(v_reset=None)
    with pytest.raises(NIRExportError, match=r"'features\.2'.*soft reset"):
        write_nir(net, FRAME, tmp_path / "a.nir")
    cfg = load_config("synthetic")
    dvs = build_model(replace(cfg.model, name="dvs_gesture_net_tiny"), (2, 2, 32, 32), 3)
    with pytest.raises(NIRExportError, match=r"'classifier\.7' \(VotingLayer\)"):
        write_nir(dvs, (2, 2, 32, 32), tmp_path / "b.nir")
    with pytest.raises(NIRExportError, match="frame_shape"):
        write_nir(_student()[0], (4, 3, 8, 8), tmp_path / "c.nir")  # 3 channels for a 2-channel net
    assert not any(tmp_path.iterdir())
