"""The model registry, the conv/DVS nets, and one training step on every tiny variant."""

import pytest
import torch
import torch.nn.functional as F
from spikingjelly.activation_based import functional, neuron

from evo_snn.config import ModelConfig
from evo_snn.models import build_model, model_names, register_model, spiking_nodes
from evo_snn.structure.pruning import prunable_layers


pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = ["tiny_conv", "dvs_gesture_net_tiny", "resnet18_tiny", "wrn16_4_tiny", "vgg16_tiny"]
# Config fields a model needs beyond the defaults to build at all.
NEEDS = {"dvs_gesture_net": dict(channels=(4,), hidden=16)}


@pytest.mark.parametrize("neuron_name", ["if", "lif", "plif"])
def test_conv_snn_forward_shape_and_reset(neuron_name):
    net = build_model(ModelConfig(name="conv_snn", channels=(4, 8), hidden=16, neuron=neuron_name), (3, 2, 16, 16), 5)
    x = torch.rand(3, 7, 2, 16, 16)  # (T, N, C, H, W)
    y = net(x)
    assert y.shape == (7, 5)
    nodes = [m for m in net.modules() if isinstance(m, neuron.BaseNode)]
    assert nodes and all(m.step_mode == "m" for m in nodes)
    functional.reset_net(net)
    y2 = net(x)
    torch.testing.assert_close(y, y2)  # reset makes the forward pass repeatable


def test_dvs_gesture_net_is_5conv_with_vote_pooling():
    net = build_model(ModelConfig(name="dvs_gesture_net", channels=(4,), hidden=16), (2, 2, 32, 32), 11)
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    linears = [m for m in net.modules() if isinstance(m, torch.nn.Linear)]
    assert len(convs) == 5 and len(linears) == 2
    assert linears[-1].out_features == 110
    y = net(torch.rand(2, 3, 2, 32, 32))
    assert y.shape == (3, 11)
    assert ((y >= 0) & (y <= 1)).all()  # voted firing rates


def test_dvs_gesture_net_full_size_128_channels_t16():
    """Fang et al. 2021: 5 x conv(128), FC 2048 -> 512 -> 110 on 128x128 frames, T=16."""
    cfg = ModelConfig(name="dvs_gesture_net", channels=(128,), hidden=512)
    net = build_model(cfg, (16, 2, 128, 128), 11)
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [128] * 5
    linears = [m for m in net.modules() if isinstance(m, torch.nn.Linear)]
    assert [(l.in_features, l.out_features) for l in linears] == [(128 * 4 * 4, 512), (512, 110)]
    conv_w = 2 * 128 * 9 + 4 * 128 * 128 * 9
    expected = conv_w + 5 * 2 * 128 + (2048 * 512 + 512) + (512 * 110 + 110)
    assert sum(p.numel() for p in net.parameters()) == expected == 1_698_926
    # the same width runs on a tiny input (32x32, one sample, T=2)
    small = build_model(cfg, (2, 2, 32, 32), 11).eval()
    with torch.no_grad():
        assert small(torch.rand(2, 1, 2, 32, 32)).shape == (1, 11)


def test_dvs_gesture_net_rejects_bad_resolution():
    with pytest.raises(ValueError, match="divisible by 32"):
        build_model(ModelConfig(name="dvs_gesture_net", channels=(4,)), (2, 2, 34, 34), 11)


def test_registry_refuses_duplicates_and_unknown_names():
    expected = {"conv_snn", "tiny_conv", "dvs_gesture_net", "dvs_gesture_net_tiny", "resnet18", "resnet18_tiny",
                "wrn16_4", "wrn16_4_tiny", "vgg16", "vgg16_tiny"}
    assert expected <= set(model_names())
    assert model_names() == sorted(model_names())
    with pytest.raises(ValueError, match="already registered"):
        register_model("conv_snn")(lambda *a: None)
    with pytest.raises(ValueError, match="unknown model"):
        build_model(ModelConfig(name="nope"), (2, 2, 8, 8), 3)
    with pytest.raises(ValueError, match="unknown neuron"):
        build_model(ModelConfig(neuron="hh"), (2, 2, 8, 8), 3)
    with pytest.raises(ValueError, match="unknown surrogate"):
        build_model(ModelConfig(surrogate="erf"), (2, 2, 8, 8), 3)
    with pytest.raises(ValueError, match="width"):
        build_model(ModelConfig(name="resnet18_tiny", width=0.0), (2, 2, 8, 8), 3)
    with pytest.raises(ValueError, match="v_reset"):
        build_model(ModelConfig(v_reset="zero"), (2, 2, 8, 8), 3)


@pytest.mark.parametrize("name", model_names())
def test_every_registered_model_builds_in_multi_step_mode(name):
    net = build_model(ModelConfig(name=name, **NEEDS.get(name, {})), (2, 2, 32, 32), 7)
    nodes = spiking_nodes(net)
    assert nodes and all(m.step_mode == "m" for m in nodes)
    assert all(isinstance(m, neuron.IFNode) for m in nodes)  # IF is the default neuron
    layers = prunable_layers(net)
    assert layers and list(layers.values())[-1].out_features in (7, 70)  # readout FC last (DVS: 10 voters/class)


@pytest.mark.parametrize("name", TINY)
@pytest.mark.parametrize("neuron_name", ["if", "relu"])
def test_one_training_step_changes_every_prunable_layer(name, neuron_name):
    torch.manual_seed(0)
    net = build_model(ModelConfig(name=name, neuron=neuron_name, channels=(4, 8)), (2, 2, 32, 32), 5)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    layers = prunable_layers(net)
    before = {n: m.weight.detach().clone() for n, m in layers.items()}
    x, y = torch.rand(2, 2, 2, 32, 32), torch.tensor([0, 3])  # (T, N, C, H, W), labels
    logits = net(x)
    assert logits.shape == (2, 5)
    loss = F.cross_entropy(logits, y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    functional.reset_net(net)
    assert torch.isfinite(loss)
    unchanged = [n for n, m in layers.items() if torch.equal(m.weight, before[n])]
    assert unchanged == []
    assert all(isinstance(m.v, float) for m in spiking_nodes(net))  # reset_net cleared the membrane state
