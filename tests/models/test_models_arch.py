"""Spiking ResNet18, WRN16-4 and VGG16 (CIFAR style): structure, parameter counts, neurons, ANN twin."""

from dataclasses import replace

import pytest
import torch
import torch.nn as nn
from spikingjelly.activation_based import functional, neuron, surrogate

from evo_snn.config import ModelConfig
from evo_snn.models import build_model, spiking_nodes
from evo_snn.structure.pruning import prunable_layers


pytestmark = pytest.mark.usefixtures("one_torch_thread")

# Well-known CIFAR-10 counts: ResNet18 11,173,962 and VGG16-BN 14,728,266 (e.g. kuangliu/pytorch-cifar;
# our VGG convs have no bias before BN, 4,224 fewer), WRN-16-4 2,748,890 (Zagoruyko & Komodakis).
KNOWN_PARAMS = {"resnet18": 11_173_962, "wrn16_4": 2_748_890, "vgg16": 14_728_266}
FULL = list(KNOWN_PARAMS)
TINY = ["resnet18_tiny", "wrn16_4_tiny", "vgg16_tiny"]
TWINS = TINY + ["tiny_conv", "dvs_gesture_net_tiny"]


def _n_params(net):
    return sum(p.numel() for p in net.parameters())


def _convs(net):
    return [m for m in net.modules() if isinstance(m, nn.Conv2d)]


@pytest.mark.parametrize("name", FULL)
def test_full_size_parameter_counts(name):
    net = build_model(ModelConfig(name=name), (4, 3, 32, 32), 10)
    assert _n_params(net) == pytest.approx(KNOWN_PARAMS[name], rel=0.005)
    # CIFAR-100 only changes the FC: + 90 * (512 or 256) weights + 90 biases
    net100 = build_model(ModelConfig(name=name), (4, 3, 32, 32), 100)
    assert _n_params(net100) - _n_params(net) == 90 * (net.fc.in_features + 1)


@pytest.mark.parametrize("name", FULL)
def test_full_size_forward_on_a_small_input(name):
    net = build_model(ModelConfig(name=name), (1, 3, 32, 32), 10).eval()
    with torch.no_grad():
        assert net(torch.rand(1, 1, 3, 32, 32)).shape == (1, 10)


def test_resnet18_structure():
    net = build_model(ModelConfig(name="resnet18"), (4, 3, 32, 32), 10)
    layers = prunable_layers(net)
    convs = _convs(net)
    assert len(convs) == 20 and len(layers) == 21  # 17 3x3 + 3 1x1 shortcut convs, + fc
    assert (convs[0].kernel_size, convs[0].stride) == ((3, 3), (1, 1))  # CIFAR stem
    assert not any(isinstance(m, nn.MaxPool2d) for m in net.modules())  # no initial max-pool
    assert [len(getattr(net, f"layer{i}")) for i in range(1, 5)] == [2, 2, 2, 2]
    assert [getattr(net, f"layer{i}")[0].conv1.out_channels for i in range(1, 5)] == [64, 128, 256, 512]
    assert {"layer2.0.downsample.0", "layer3.0.downsample.0", "layer4.0.downsample.0", "fc"} <= set(layers)
    assert layers["layer2.0.downsample.0"].weight.shape == (128, 64, 1, 1)
    assert len(spiking_nodes(net)) == 1 + 8 * 2  # stem + 2 per block, the second after the residual add


def test_wrn16_4_structure():
    net = build_model(ModelConfig(name="wrn16_4"), (4, 3, 32, 32), 10)
    convs = _convs(net)
    assert len([c for c in convs if c.kernel_size == (3, 3)]) == 13  # 16 = 13 convs + 3 shortcuts (depth 6n + 4, n = 2)
    assert [c.weight.shape[:2] for c in convs if c.kernel_size == (1, 1)] == [(64, 16), (128, 64), (256, 128)]
    assert (convs[0].out_channels, convs[0].stride) == (16, (1, 1))
    assert net.fc.in_features == 256
    assert [len(getattr(net, f"block{i}")) for i in (1, 2, 3)] == [2, 2, 2]


def test_vgg16_structure():
    net = build_model(ModelConfig(name="vgg16"), (4, 3, 32, 32), 10)
    convs = _convs(net)
    assert [c.out_channels for c in convs] == [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
    assert sum(isinstance(m, nn.MaxPool2d) for m in net.modules()) == 5
    assert (net.fc.in_features, net.fc.out_features) == (512, 10)
    assert len(prunable_layers(net)) == 14  # 13 convs + one FC head


@pytest.mark.parametrize("name", TINY)
@pytest.mark.parametrize("shape", [(2, 3, 32, 32), (3, 2, 34, 34), (2, 2, 17, 23)])
def test_any_input_channels_and_size(name, shape):
    T, C, H, W = shape
    net = build_model(ModelConfig(name=name), shape, 4)
    assert _convs(net)[0].in_channels == C
    assert net(torch.rand(T, 2, C, H, W)).shape == (2, 4)


@pytest.mark.parametrize("tiny,full", zip(TINY, FULL))
def test_tiny_variant_has_the_full_models_layer_names(tiny, full):
    t = prunable_layers(build_model(ModelConfig(name=tiny), (2, 3, 32, 32), 10))
    f = prunable_layers(build_model(ModelConfig(name=full, width=1 / 16), (2, 3, 32, 32), 10))
    assert list(t) == list(f)
    assert _n_params(build_model(ModelConfig(name=tiny), (2, 3, 32, 32), 10)) < 100_000


def test_width_multiplier():
    net = build_model(ModelConfig(name="resnet18", width=0.5), (2, 3, 32, 32), 10)
    assert net.conv1.out_channels == 32 and net.fc.in_features == 256
    net = build_model(ModelConfig(name="vgg16_tiny", width=2.0), (2, 3, 32, 32), 10)
    assert _convs(net)[0].out_channels == 8 and net.fc.in_features == 64


@pytest.mark.parametrize("neuron_name,cls", [("if", neuron.IFNode), ("lif", neuron.LIFNode), ("plif", neuron.ParametricLIFNode)])
@pytest.mark.parametrize("surr_name,surr_cls", [("atan", surrogate.ATan), ("sigmoid", surrogate.Sigmoid), ("rect", surrogate.Rect)])
def test_neuron_and_surrogate_choice(neuron_name, cls, surr_name, surr_cls):
    cfg = ModelConfig(name="resnet18_tiny", neuron=neuron_name, surrogate=surr_name, v_threshold=0.5, v_reset=None)
    net = build_model(cfg, (2, 2, 16, 16), 3)
    nodes = spiking_nodes(net)
    assert len(nodes) == 17 and all(type(m) is cls for m in nodes)
    assert all(isinstance(m.surrogate_function, surr_cls) for m in nodes)
    assert all(m.v_threshold == 0.5 and m.v_reset is None for m in nodes)  # soft reset
    x = torch.rand(2, 2, 2, 16, 16, requires_grad=True)
    net(x).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_if_neuron_integrates_without_leak_and_resets_to_v_reset():
    """V(t) = V(t-1) + X(t); spike at V >= threshold, then V = v_reset (the paper's IF)."""
    net = build_model(ModelConfig(name="resnet18_tiny", v_reset=-0.25), (2, 2, 8, 8), 3)
    node = spiking_nodes(net)[0]
    x = torch.full((5, 1, 1), 0.5)  # (T, N, 1)
    s = node(x)
    # V starts at v_reset: -0.25, then 0.25, 0.75, 1.25 -> fire, reset to -0.25, 0.25, 0.75
    assert s.flatten().tolist() == [0.0, 0.0, 1.0, 0.0, 0.0]
    assert node.v.item() == pytest.approx(0.75)


@pytest.mark.parametrize("name", TWINS)
def test_relu_twin_is_an_ann_of_the_same_topology(name):
    cfg = ModelConfig(name=name, channels=(4, 8))
    snn = build_model(cfg, (2, 2, 32, 32), 5)
    ann = build_model(replace(cfg, neuron="relu"), (2, 2, 32, 32), 5)
    assert spiking_nodes(ann) == []
    relus = [m for m in ann.modules() if isinstance(m, nn.ReLU)]
    assert len(relus) == len(spiking_nodes(snn)) > 0
    s_layers, a_layers = prunable_layers(snn), prunable_layers(ann)
    assert list(s_layers) == list(a_layers)
    assert [m.weight.shape for m in s_layers.values()] == [m.weight.shape for m in a_layers.values()]
    ann.load_state_dict(snn.state_dict())  # IF nodes hold no parameters: the state_dicts are interchangeable
    # stateless: with the same frame at every step, T=3 gives the T=1 output (an SNN's would differ)
    ann.eval()
    frame = torch.rand(1, 2, 2, 32, 32)
    with torch.no_grad():
        y1 = ann(frame)
        functional.reset_net(ann)
        y3 = ann(frame.expand(3, -1, -1, -1, -1))
    torch.testing.assert_close(y1, y3)
    assert y1.abs().sum() > 0


@pytest.mark.parametrize("name", TINY)
def test_genome_masks_apply_to_every_conv_and_fc(name):
    from evo_snn.structure.pruning import apply_masks, make_permanent, weight_sparsity

    net = build_model(ModelConfig(name=name), (2, 3, 32, 32), 10)
    layers = prunable_layers(net)
    gen = torch.Generator().manual_seed(0)
    masks = {n: (torch.rand(m.weight.shape, generator=gen) > 0.5).numpy() for n, m in layers.items()}
    apply_masks(net, masks)
    assert net(torch.rand(2, 1, 3, 32, 32)).shape == (1, 10)
    make_permanent(net)
    overall, per_layer = weight_sparsity(net, list(layers))
    assert 0.4 < overall < 0.6 and set(per_layer) == set(layers)
    assert set(net.state_dict()) == set(build_model(ModelConfig(name=name), (2, 3, 32, 32), 10).state_dict())
