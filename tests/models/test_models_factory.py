"""Nets take a neuron factory (``spiking_neuron=...``); ``build_model`` is the one reader of ModelConfig."""

import pickle
from functools import partial

import pytest
import torch
import torch.nn as nn
from spikingjelly.activation_based import functional, neuron, surrogate

from evo_snn.config import ModelConfig
from evo_snn.models import (
    SpikingNeuronFactory,
    SpikingResNet,
    SpikingVGG,
    SpikingWideResNet,
    build_model,
    conv_snn,
    dvs_gesture_net_tiny,
    model_names,
    neuron_factory,
    resnet18_tiny,
    spiking_nodes,
    vgg16_tiny,
)
from evo_snn.models.registry import _REGISTRY, arch_arguments
from evo_snn.models.resnet import RESNET18_BLOCKS, RESNET18_TINY_WIDTHS
from evo_snn.models.vgg import VGG16_TINY_CFG
from evo_snn.models.wrn import WRN16_DEPTH

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FRAME = (2, 2, 32, 32)  # (T, C, H, W)
IF_ATAN = partial(neuron.IFNode, surrogate_function=surrogate.ATan(), v_threshold=1.0, v_reset=0.0, detach_reset=True)
"""What ModelConfig()'s neuron settings mean, written the way spikingjelly's own models take a neuron."""


def _seeded(fn, seed=0):
    torch.manual_seed(seed)
    net = fn()
    functional.set_step_mode(net, "m")
    return net


def _assert_same_net(direct, built, x):
    assert list(direct.state_dict()) == list(built.state_dict())
    for k, v in built.state_dict().items():
        assert torch.equal(direct.state_dict()[k], v), k
    # remove_duplicate=False: a partial shares one surrogate instance among its neurons, build_model does not
    layout = [(n, type(m)) for n, m in built.named_modules(remove_duplicate=False)]
    assert [(n, type(m)) for n, m in direct.named_modules(remove_duplicate=False)] == layout
    ys = []
    for net in (direct, built):  # train mode: BN on batch statistics makes even the deep tiny nets fire
        torch.manual_seed(1)  # same dropout masks
        with torch.no_grad():
            ys.append(net.train()(x))
        functional.reset_net(net)
    torch.testing.assert_close(ys[0], ys[1], rtol=0, atol=0)
    assert ys[1].abs().sum() > 0 and ys[1].std() > 0


DIRECT = {
    "tiny_conv": (dict(channels=(4, 8), hidden=16, dropout=0.1),
                  lambda f: conv_snn(FRAME, 5, spiking_neuron=f, channels=(4, 8), hidden=16, dropout=0.1)),
    "dvs_gesture_net_tiny": (dict(dropout=0.2), lambda f: dvs_gesture_net_tiny(FRAME, 5, spiking_neuron=f, dropout=0.2)),
    "resnet18_tiny": (dict(dropout=0.1),
                      lambda f: SpikingResNet(2, 5, RESNET18_TINY_WIDTHS, RESNET18_BLOCKS, spiking_neuron=f, dropout=0.1)),
    "wrn16_4_tiny": (dict(width=0.5),
                     lambda f: SpikingWideResNet(2, 5, (2, 4, 8, 16), WRN16_DEPTH, spiking_neuron=f)),  # 4-8-16-32 x 0.5
    "vgg16_tiny": (dict(), lambda f: SpikingVGG(2, 5, VGG16_TINY_CFG, spiking_neuron=f)),
}


@pytest.mark.parametrize("name", list(DIRECT))
def test_net_from_a_neuron_factory_equals_build_model(name):
    arch, direct_fn = DIRECT[name]
    built = _seeded(lambda: build_model(ModelConfig(name=name, **arch), FRAME, 5))
    direct = _seeded(lambda: direct_fn(IF_ATAN))
    x = torch.rand(8, 3, *FRAME[1:]) * 3  # (T, N, C, H, W): 8 steps, so that the 2-layer DVS head fires
    _assert_same_net(direct, built, x)
    assert all(type(m) is neuron.IFNode and isinstance(m.surrogate_function, surrogate.ATan) for m in spiking_nodes(direct))


def test_relu_factory_gives_the_ann_twin_of_build_model():
    built = _seeded(lambda: build_model(ModelConfig(name="resnet18_tiny", neuron="relu"), FRAME, 5))
    direct = _seeded(lambda: resnet18_tiny(FRAME, 5, spiking_neuron=nn.ReLU))
    assert spiking_nodes(direct) == [] and sum(isinstance(m, nn.ReLU) for m in direct.modules()) == 17
    _assert_same_net(direct, built, torch.rand(2, 3, *FRAME[1:]))


@pytest.mark.parametrize("neuron_name,cls,tau_kw", [("lif", neuron.LIFNode, "tau"), ("plif", neuron.ParametricLIFNode, "init_tau")])
def test_leaky_neuron_settings_reach_every_node(neuron_name, cls, tau_kw):
    cfg = ModelConfig(name="vgg16_tiny", neuron=neuron_name, surrogate="sigmoid", tau=3.0, v_threshold=0.5, v_reset=None,
                      detach_reset=False)
    factory = neuron_factory(cfg)
    assert isinstance(factory, SpikingNeuronFactory) and factory.cls is cls and factory.surrogate is surrogate.Sigmoid
    assert factory.kwargs == {"v_threshold": 0.5, "v_reset": None, "detach_reset": False, tau_kw: 3.0}
    built = _seeded(lambda: build_model(cfg, FRAME, 5))
    direct = _seeded(lambda: vgg16_tiny(FRAME, 5, spiking_neuron=partial(cls, surrogate_function=surrogate.Sigmoid(), **factory.kwargs)))
    _assert_same_net(direct, built, torch.rand(2, 2, *FRAME[1:]) * 3)
    nodes = spiking_nodes(built)
    assert len(nodes) == 13 and all(type(m) is cls and m.v_threshold == 0.5 and m.v_reset is None for m in nodes)
    assert all(not m.detach_reset and isinstance(m.surrogate_function, surrogate.Sigmoid) for m in nodes)
    if neuron_name == "lif":
        assert all(m.tau == 3.0 for m in nodes)
    else:  # PLIF learns w with tau = 1 / sigmoid(w): initialised at 3
        assert all(float(1 / m.w.detach().sigmoid()) == pytest.approx(3.0) for m in nodes)


def test_factory_makes_a_new_neuron_and_surrogate_per_call_and_pickles():
    factory = neuron_factory(ModelConfig())
    a, b = factory(), factory()
    assert a is not b and a.surrogate_function is not b.surrogate_function
    assert (a.v_threshold, a.v_reset, a.detach_reset, a.step_mode) == (1.0, 0.0, True, "s")
    assert factory(step_mode="m", v_threshold=2.0).v_threshold == 2.0  # keyword overrides
    clone = pickle.loads(pickle.dumps(factory))  # Ray ships configs, not nets, but a factory must travel too
    assert clone == factory and type(clone()) is neuron.IFNode
    assert neuron_factory(ModelConfig(neuron="relu")) is nn.ReLU
    with pytest.raises(ValueError, match="unknown surrogate"):
        neuron_factory(ModelConfig(surrogate="erf"))


def test_build_model_hands_each_builder_only_the_arguments_it_names():
    cfg = ModelConfig(channels=[4, 8], hidden=3, dropout=0.25, width=0.5)
    assert arch_arguments(_REGISTRY["tiny_conv"], cfg) == {"channels": (4, 8), "hidden": 3, "dropout": 0.25}
    assert arch_arguments(_REGISTRY["resnet18"], cfg) == {"dropout": 0.25, "width": 0.5}
    assert arch_arguments(_REGISTRY["dvs_gesture_net_tiny"], cfg) == {"dropout": 0.25}

    def takes_all(frame_shape, num_classes, *, spiking_neuron, **arch):
        return arch

    assert arch_arguments(takes_all, cfg) == {"channels": (4, 8), "hidden": 3, "dropout": 0.25, "width": 0.5}


def test_no_builder_or_net_takes_a_model_config():
    """Only build_model reads ModelConfig: no builder names a ``cfg`` parameter."""
    import inspect

    for name in model_names():
        params = inspect.signature(_REGISTRY[name]).parameters
        assert "cfg" not in params and "spiking_neuron" in params, name
        assert params["spiking_neuron"].kind is inspect.Parameter.KEYWORD_ONLY
    for cls in (SpikingResNet, SpikingWideResNet, SpikingVGG):
        assert "cfg" not in inspect.signature(cls).parameters


# state_dict keys of checkpoints written before nets took a factory: they must still load.
TINY_CONV_KEYS = [
    "features.0.weight", "features.1.weight", "features.1.bias", "features.1.running_mean", "features.1.running_var",
    "features.1.num_batches_tracked", "features.4.weight", "features.5.weight", "features.5.bias",
    "features.5.running_mean", "features.5.running_var", "features.5.num_batches_tracked",
    "classifier.1.weight", "classifier.1.bias", "classifier.3.weight", "classifier.3.bias",
]


def test_state_dict_keys_of_earlier_checkpoints():
    net = build_model(ModelConfig(channels=(4, 8), hidden=16), FRAME, 5)
    assert list(net.state_dict()) == TINY_CONV_KEYS
    plif = build_model(ModelConfig(name="resnet18_tiny", neuron="plif"), FRAME, 5)
    keys = list(plif.state_dict())
    assert len(keys) == 122 + 17 and keys[:3] == ["conv1.weight", "bn1.weight", "bn1.bias"]
    assert "sn1.w" in keys and "layer4.1.sn2.w" in keys and keys[-2:] == ["fc.weight", "fc.bias"]
