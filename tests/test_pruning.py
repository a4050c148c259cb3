import numpy as np
import torch

from evo_snn.config import ModelConfig
from evo_snn.structure.genome import magnitude_mask
from evo_snn.models import build_model
from evo_snn.structure.pruning import apply_masks, make_permanent, prunable_layers, sparse_copy, weight_sparsity
from evo_snn.training.train import ce_loss, train_steps


def _net():
    torch.manual_seed(0)
    return build_model(ModelConfig(channels=(4,), hidden=8), (2, 2, 8, 8), 3)


def _masks(net, ratio):
    return {n: magnitude_mask(m.weight.detach().abs().numpy(), ratio) for n, m in prunable_layers(net).items()}


def test_prunable_layers_are_convs_and_linears():
    assert list(prunable_layers(_net())) == ["features.0", "classifier.1", "classifier.3"]


def test_masked_weights_stay_zero_after_training(tiny_splits):
    net = build_model(ModelConfig(channels=(4,)), tiny_splits.frame_shape, tiny_splits.num_classes)
    masks = _masks(net, 0.6)
    apply_masks(net, masks)
    before = {n: m.weight_orig.detach().clone() for n, m in prunable_layers(net).items()}
    train_steps(net, tiny_splits.train, epochs=1, batch_size=8, lr=1e-2, loss_fn=ce_loss, seed=0)
    make_permanent(net)
    for name, module in prunable_layers(net).items():
        w = module.weight.detach().numpy()
        keep = masks[name]
        assert (w[~keep] == 0).all()
        # the kept weights did train: compare kept with kept (pruned entries differ from
        # weight_orig even without training, so they must not enter the comparison)
        moved = np.abs(w[keep] - before[name].numpy()[keep])
        assert np.mean(moved > 1e-4) > 0.5, name
    overall, per_layer = weight_sparsity(net, masks)
    expected = sum((~m).sum() for m in masks.values()) / sum(m.size for m in masks.values())
    assert overall == expected
    assert set(net.state_dict()) == set(_net_keys(tiny_splits))


def _net_keys(splits):
    return build_model(ModelConfig(channels=(4,)), splits.frame_shape, splits.num_classes).state_dict().keys()


def test_sparse_copy_is_frozen_and_leaves_original_dense():
    net = _net()
    masks = _masks(net, 0.5)
    sparse = sparse_copy(net, masks)
    assert not any(p.requires_grad for p in sparse.parameters())
    assert not sparse.training
    assert weight_sparsity(sparse, masks)[0] == sum((~m).sum() for m in masks.values()) / sum(m.size for m in masks.values())
    assert weight_sparsity(net, masks)[0] == 0.0
    for name, m in prunable_layers(sparse).items():
        np.testing.assert_array_equal(m.weight.numpy() != 0, masks[name] & (prunable_layers(net)[name].weight.detach().numpy() != 0))
