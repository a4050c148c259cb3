"""Spiking nets built by name from a registry (spikingjelly ``activation_based``).

Every net runs in multi-step mode: input ``x_seq: [T, N, C, H, W]`` float32 (event
counts or images repeated over T), output ``[N, num_classes]`` logits (the output
averaged over the T time steps). Call
``spikingjelly.activation_based.functional.reset_net(net)`` after every batch;
``evo_snn.training.train`` does so.

Registered models (``model_names()``):

=======================  ==================================================
``conv_snn``/``tiny_conv``  small conv SNN (N-MNIST, synthetic)          conv.py
``dvs_gesture_net``      5Conv-1FC of Fang et al. 2021 (DVS128 Gesture)   dvs.py
``resnet18``             spiking ResNet18, CIFAR style                    resnet.py
``wrn16_4``              spiking WRN-16-4, CIFAR style (pre-activation)   wrn.py
``vgg16``                spiking VGG16-BN, CIFAR style, one-FC head       vgg.py
``*_tiny``               the same topology at 4-32 channels, for tests
=======================  ==================================================

Nets and builders take plain arguments (``channels``, ``widths``, ``dropout``, ...) and
the neuron as a factory, as spikingjelly's own models do::

    net = SpikingResNet(3, 10, (4, 8, 16, 32), (2, 2, 2, 2),
                        spiking_neuron=partial(neuron.IFNode, surrogate_function=surrogate.ATan()))

``build_model(cfg, frame_shape, num_classes)`` is the one reader of ``ModelConfig``: it
turns the neuron settings into that factory (``neuron_factory``) and sets step mode 'm'.
``ModelConfig.neuron = 'relu'`` builds the ANN twin of any of them (factory ``nn.ReLU``).
``select_backend(net, device, requested)`` picks the spikingjelly neuron backend on a GPU
(``ModelConfig.neuron_backend``).
"""

import logging as _logging

import torch as _torch


def _no_triton_warning(record: _logging.LogRecord) -> bool:
    """False for torch's 'Triton not available' warning (printed twice per process by the
    first custom op spikingjelly registers): Triton only matters on a CUDA GPU."""
    return "Triton not available" not in record.getMessage()


if not _torch.cuda.is_available():
    _logging.getLogger("torch._library.triton").addFilter(_no_triton_warning)


from evo_snn.models.neurons import (
    ANN_ACTIVATIONS,
    NEURON_CHOICES,
    NEURONS,
    SURROGATES,
    NeuronFactory,
    SpikingNeuronFactory,
    check_backend_request,
    neuron_factory,
    select_backend,
    spiking_nodes,
)
from evo_snn.models.registry import ModelBuilder, build_model, model_names, register_model, scale_width
from evo_snn.models.conv import SpikingNet, conv_snn  # registers conv_snn, tiny_conv
from evo_snn.models.dvs import dvs_gesture_net, dvs_gesture_net_tiny
from evo_snn.models.resnet import SpikingResNet, resnet18, resnet18_tiny
from evo_snn.models.wrn import SpikingWideResNet, wrn16_4, wrn16_4_tiny
from evo_snn.models.vgg import SpikingVGG, vgg16, vgg16_tiny

__all__ = [
    "ANN_ACTIVATIONS", "NEURON_CHOICES", "NEURONS", "SURROGATES", "ModelBuilder", "NeuronFactory",
    "SpikingNet", "SpikingNeuronFactory", "SpikingResNet", "SpikingVGG", "SpikingWideResNet",
    "build_model", "check_backend_request", "conv_snn", "dvs_gesture_net", "dvs_gesture_net_tiny", "model_names",
    "neuron_factory", "register_model", "resnet18", "resnet18_tiny", "scale_width", "select_backend",
    "spiking_nodes", "vgg16", "vgg16_tiny", "wrn16_4", "wrn16_4_tiny",
]
