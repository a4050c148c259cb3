"""Training-loop plumbing: batching order, no full copy of memory-mapped sets, budgets."""

import math
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from evo_snn.config import DataConfig, ModelConfig
from evo_snn.data import load_splits
from evo_snn.models import build_model
from evo_snn.training.train import accuracy, ce_loss, loader, train_steps

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.mark.parametrize("shuffle", [True, False])
def test_loader_matches_a_plain_dataloader(tiny_splits, shuffle):
    fs = tiny_splits.train
    ours = list(loader(fs, 7, shuffle, seed=3))
    ref = list(DataLoader(TensorDataset(fs.frames, fs.labels), batch_size=7, shuffle=shuffle,
                          generator=torch.Generator().manual_seed(3)))
    assert len(ours) == len(ref) == math.ceil(len(fs) / 7)
    for (x, y), (rx, ry) in zip(ours, ref):
        assert torch.equal(x, rx) and torch.equal(y, ry)


@pytest.mark.skipif(not (SHARED_DATA / "nmnist_subset").is_dir(), reason=f"{SHARED_DATA}/nmnist_subset is absent")
def test_memory_mapped_train_split_is_batched_without_a_full_copy(tmp_path):
    s = load_splits("nmnist", SHARED_DATA / "nmnist_subset", DataConfig(cache_dir=str(tmp_path)), seed=0)
    s = load_splits("nmnist", SHARED_DATA / "nmnist_subset", DataConfig(cache_dir=str(tmp_path)), seed=0)  # cached
    fs = s.train
    assert fs.memory_mapped
    n = sum(len(y) for _, y in loader(fs, 64, shuffle=True, seed=0))
    assert n == len(fs) == 900
    assert fs._frames is None  # iterating never materialised the [N, T, C, H, W] array


def test_fractional_budget_runs_ceil_of_steps(tiny_splits):
    net = build_model(ModelConfig(channels=(4,)), tiny_splits.frame_shape, tiny_splits.num_classes)
    calls = []

    def counting_loss(z, y, x_seq):
        calls.append(x_seq.shape)
        return ce_loss(z, y, x_seq)

    train_steps(net, tiny_splits.train, epochs=0.5, batch_size=4, lr=1e-3, loss_fn=counting_loss, seed=0)
    assert len(calls) == math.ceil(0.5 * math.ceil(len(tiny_splits.train) / 4))
    T = tiny_splits.frame_shape[0]
    assert calls[0][0] == T and calls[0][1] == 4  # x_seq is [T, N, C, H, W]
    assert 0.0 <= accuracy(net, tiny_splits.val) <= 1.0


@pytest.mark.skipif(not (SHARED_DATA / "nmnist_subset").is_dir(), reason=f"{SHARED_DATA}/nmnist_subset is absent")
def test_in_memory_copy_pickles_with_its_frames(tmp_path):
    import pickle

    s = load_splits("nmnist", SHARED_DATA / "nmnist_subset", DataConfig(cache_dir=str(tmp_path)), seed=0)
    s = load_splits("nmnist", SHARED_DATA / "nmnist_subset", DataConfig(cache_dir=str(tmp_path)), seed=0)
    assert s.val.memory_mapped and len(pickle.dumps(s.val)) < 100_000  # a path and an index
    mem = s.val.in_memory()
    assert not mem.memory_mapped
    blob = pickle.dumps(mem)
    assert len(blob) > mem.frames.numel()  # the frames travel
    back = pickle.loads(blob)
    assert torch.equal(back.frames, s.val.frames) and torch.equal(back.labels, s.val.labels)
