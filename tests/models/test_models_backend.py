"""``select_backend``: 'torch' on CPU; the GPU choice logic with the device probe stubbed out."""

import pytest
import torch
import torch.nn as nn
from spikingjelly.activation_based import functional, neuron, surrogate

from evo_snn.config import ModelConfig
from evo_snn.models import build_model, select_backend, spiking_nodes
from evo_snn.models import neurons as neurons_mod


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_cpu_gives_torch_and_the_net_still_works():
    net = build_model(ModelConfig(name="resnet18_tiny"), (2, 2, 16, 16), 3).eval()
    x = torch.rand(2, 2, 2, 16, 16)
    with torch.no_grad():
        y0 = net(x)
        functional.reset_net(net)
        assert select_backend(net, "cpu") == "torch"
        assert select_backend(net, torch.device("cpu")) == "torch"
        y1 = net(x)
    torch.testing.assert_close(y0, y1)


def test_ann_twin_has_no_spiking_backend():
    net = build_model(ModelConfig(name="vgg16_tiny", neuron="relu"), (2, 3, 32, 32), 3)
    assert select_backend(net, "cpu") == "torch"
    assert select_backend(net, torch.device("cuda")) == "torch"  # nothing to set, no GPU touched


class _LegacyIF(neuron.IFNode):
    """An IF node with the spikingjelly 0.0.0.x backend API."""

    supported_backends = ("torch", "cupy")

    def __init__(self):
        super().__init__(step_mode="m")
        self.backend = "unset"


def _legacy_net(n=3):
    return nn.Sequential(*[_LegacyIF() for _ in range(n)])


def test_legacy_api_on_cpu_sets_torch_everywhere():
    net = _legacy_net()
    assert select_backend(net, "cpu") == "torch"
    assert [m.backend for m in net] == ["torch"] * 3


def test_legacy_api_on_cuda_tries_triton_then_cupy(monkeypatch):
    tried = []

    def probe(node, device, backend=None):
        tried.append(backend)
        return backend == "cupy"

    monkeypatch.setattr(neurons_mod, "_probe", probe)
    net = _legacy_net()
    assert select_backend(net, "cuda") == "cupy"
    assert tried == ["cupy"]  # 'triton' is not in supported_backends, so it is never probed
    assert [m.backend for m in net] == ["cupy"] * 3
    monkeypatch.setattr(neurons_mod, "_probe", lambda node, device, backend=None: False)
    assert select_backend(net, "cuda") == "torch"  # cupy does not work: fall back
    assert [m.backend for m in net] == ["torch"] * 3


def test_spikingjelly2_on_cuda_reports_its_dispatch(monkeypatch):
    monkeypatch.setattr(neurons_mod, "_probe", lambda node, device, backend=None: True)
    monkeypatch.setattr(functional, "neuron_implementation", lambda kind, device, execution="eager": {"implementation": "triton"})
    net = build_model(ModelConfig(name="resnet18_tiny"), (2, 2, 16, 16), 3)
    assert select_backend(net, "cuda") == "triton"
    spiking_nodes(net)[0].surrogate_function = surrogate.Rect()  # not a fused surrogate: torch reference
    assert select_backend(net, "cuda") == "torch+triton"
    monkeypatch.setattr(neurons_mod, "_probe", lambda node, device, backend=None: False)
    with pytest.raises(RuntimeError, match="CUDA_IMPLEMENTATION=torch"):
        select_backend(net, "cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_real_gpu_backend_runs():
    net = build_model(ModelConfig(name="resnet18_tiny"), (2, 3, 32, 32), 10).cuda()
    name = select_backend(net, torch.device("cuda"))
    assert name and name != "none"
    y = net(torch.rand(2, 2, 3, 32, 32, device="cuda"))
    y.sum().backward()
    assert y.shape == (2, 10)


def test_probe_runs_a_node_on_cpu():
    assert neurons_mod._probe(neuron.IFNode(surrogate_function=surrogate.ATan()), torch.device("cpu"))
