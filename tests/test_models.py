import pytest
import torch
from spikingjelly.activation_based import functional, neuron

from evo_snn.config import ModelConfig
from evo_snn.models import build_model, model_names, register_model


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


def test_dvs_gesture_net_rejects_bad_resolution():
    with pytest.raises(ValueError, match="divisible by 32"):
        build_model(ModelConfig(name="dvs_gesture_net", channels=(4,)), (2, 2, 34, 34), 11)


def test_registry_refuses_duplicates_and_unknown_names():
    assert {"conv_snn", "tiny_conv", "dvs_gesture_net"} <= set(model_names())
    with pytest.raises(ValueError, match="already registered"):
        register_model("conv_snn")(lambda *a: None)
    with pytest.raises(ValueError, match="unknown model"):
        build_model(ModelConfig(name="nope"), (2, 2, 8, 8), 3)
    with pytest.raises(ValueError, match="unknown neuron"):
        build_model(ModelConfig(neuron="hh"), (2, 2, 8, 8), 3)
