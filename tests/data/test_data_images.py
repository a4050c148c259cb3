"""Static images: CIFAR-10/100 python batches, Tiny-ImageNet-200 folders, direct encoding, hostile files."""

from __future__ import annotations

import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from evo_snn.config import ConfigError, DataConfig
from evo_snn.data import DatasetFormatError, load_splits
from evo_snn.data import cifar, tiny_imagenet


def _cfg(tmp_path, **kw) -> DataConfig:
    return DataConfig(cache_dir=str(tmp_path / "cache"), **kw)


# ------------------------------------------------------------------ CIFAR
@pytest.mark.parametrize("bytes_keys", [False, True])
def test_cifar10_batches_layout_and_labels(writers, tmp_path, bytes_keys):
    folder = writers.make_cifar_tree(tmp_path, "cifar10", per_batch=4, n_test=6, seed=5, bytes_keys=bytes_keys)
    root = cifar.resolve_root(tmp_path, "cifar10")
    assert root == folder.resolve()
    images, labels = cifar.read_split(root, "cifar10", "train")
    assert images.shape == (20, 3, 32, 32) and images.dtype == np.uint8
    assert labels.tolist() == [(b * 4 + i) % 10 for b in range(1, 6) for i in range(4)]
    rows = writers.cifar_image_rows(4, 5 + 2)  # data_batch_2
    # row layout: 1024 red values, then green, then blue, each 32x32 row-major
    assert images[4, 0, 0, 0] == rows[0, 0] and images[4, 0, 1, 0] == rows[0, 32]
    assert images[4, 1, 0, 0] == rows[0, 1024] and images[4, 2, 31, 31] == rows[0, 3071]
    test_images, test_labels = cifar.read_split(root, "cifar10", "test")
    assert test_images.shape == (6, 3, 32, 32) and test_labels.tolist() == [0, 1, 2, 3, 4, 5]
    assert cifar.class_names(root, "cifar10")[3] == "class3"


def test_cifar100_fine_labels(writers, tmp_path):
    writers.make_cifar_tree(tmp_path, "cifar100", per_batch=4, n_test=5, protocol=4)
    root = cifar.resolve_root(tmp_path / "cifar-100-python", "cifar100")
    _, labels = cifar.read_split(root, "cifar100", "train")
    assert labels.tolist() == [(7 * i) % 100 for i in range(20)]


def test_load_splits_cifar10_direct_encoding(writers, tmp_path):
    writers.make_cifar_tree(tmp_path / "data", "cifar10", per_batch=6, n_test=4)
    s = load_splits("cifar10", tmp_path / "data", _cfg(tmp_path, frames=3, val_fraction=0.2), seed=0)
    assert s.name == "cifar10" and s.num_classes == 10 and s.frame_shape == (3, 3, 32, 32)
    assert (len(s.train) + len(s.val), len(s.test)) == (30, 4)
    assert s.train.encoding == "direct" and s.train.memory_mapped
    assert s.test.frames.dtype == torch.uint8 and s.test.frames.shape == (4, 1, 3, 32, 32)
    # normalisation: per-channel mean/std of the whole training split (before the val hold-out)
    train_all = np.concatenate([cifar.read_batch(tmp_path / "data" / "cifar-10-batches-py" / f"data_batch_{b}", "labels", 10)[0]
                                for b in range(1, 6)]) / 255.0
    mean, std = train_all.mean(axis=(0, 2, 3)), train_all.std(axis=(0, 2, 3))
    np.testing.assert_allclose(s.test.transform.mean, mean, rtol=1e-9)
    np.testing.assert_allclose(s.test.transform.std, std, rtol=1e-9)
    x_seq = s.test.to_seq(s.test.frames)  # evaluation: no augmentation
    assert x_seq.shape == (3, 4, 3, 32, 32) and x_seq.dtype == torch.float32
    expected = (s.test.frames[:, 0].double() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    for t in range(3):  # the same image at every step
        torch.testing.assert_close(x_seq[t].double(), expected, rtol=1e-5, atol=1e-5)
    assert s.test.events_per_sample().tolist() == s.test.frames.reshape(4, -1).sum(1).tolist()  # pixel sums


def test_image_training_augmentation_is_crop_with_padding_and_flip(writers, tmp_path):
    writers.make_cifar_tree(tmp_path / "data", "cifar10", per_batch=4, n_test=8)
    s = load_splits("cifar10", tmp_path / "data", _cfg(tmp_path, frames=2), seed=0)
    assert (s.train.transform.translate_px, s.train.transform.hflip) == (4, True)  # data set defaults
    x = s.test.frames
    a = s.test.to_seq(x, train=True, generator=torch.Generator().manual_seed(1))
    b = s.test.to_seq(x, train=True, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and torch.equal(a[0], a[1])  # seeded; the same crop at every step
    plain = s.test.to_seq(x)
    assert not torch.equal(a, plain)
    mean = torch.tensor(s.test.transform.mean).view(3, 1, 1)
    std = torch.tensor(s.test.transform.std).view(3, 1, 1)
    pixels = (a[0] * std + mean) * 255  # back to pixel values
    for n in range(8):  # each output is a 32x32 window of the zero-padded (maybe mirrored) image
        padded = torch.nn.functional.pad(x[n, 0].float(), (4, 4, 4, 4))
        found = any(torch.allclose(pixels[n], img[:, oy:oy + 32, ox:ox + 32], atol=1e-3)
                    for img in (padded, padded.flip(-1)) for oy in range(9) for ox in range(9))
        assert found, n
    off = DataConfig(cache_dir=str(tmp_path / "cache"), frames=2, aug_translate_px=0, aug_hflip=False)
    s2 = load_splits("cifar10", tmp_path / "data", off, seed=0)
    assert torch.equal(s2.test.to_seq(x, train=True, generator=torch.Generator()), plain)


def test_cifar_downsample_is_rejected(writers, tmp_path):
    writers.make_cifar_tree(tmp_path, "cifar10")
    with pytest.raises(ConfigError, match="data.downsample=2: cifar10 is read at its own resolution"):
        load_splits("cifar10", tmp_path, _cfg(tmp_path, downsample=2), seed=0)


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch /tmp/evo_snn_pwned",))


def _dump(path: Path, obj, protocol=2) -> Path:
    path.write_bytes(pickle.dumps(obj, protocol=protocol))
    return path


@pytest.mark.parametrize(
    "obj, match",
    [
        ({"data": np.zeros((2, 3072), np.uint8), "labels": [0, 1], "x": _Evil()}, r"refers to (posix|os)\.system; expected only builtin containers"),
        ({"data": np.zeros((2, 3072), np.float32), "labels": [0, 1]}, r"key 'data': expected a uint8 array \[n, 3072\], got float32"),
        ({"data": np.zeros((2, 3000), np.uint8), "labels": [0, 1]}, r"expected a uint8 array \[n, 3072\], got uint8 \[2, 3000\]"),
        ({"data": np.zeros((2, 3072), np.uint8), "labels": [0]}, r"1 labels for 2 images"),
        ({"data": np.zeros((2, 3072), np.uint8), "labels": [0, 10]}, r"label 10 of image 1 outside 0-9"),
        ({"data": np.zeros((2, 3072), np.uint8), "labels": [0, "a"]}, r"expected a list of ints"),
        ({"data": np.zeros((2, 3072), np.uint8)}, r"has no key 'labels'"),
        ([1, 2, 3], r"expected a pickled dict"),
    ],
)
def test_hostile_cifar_batches(tmp_path, obj, match):
    marker = Path("/tmp/evo_snn_pwned")
    marker.unlink(missing_ok=True)
    path = _dump(tmp_path / "data_batch_1", obj)
    with pytest.raises(DatasetFormatError, match=match) as e:
        cifar.read_batch(path, "labels", 10)
    assert str(path) in str(e.value)
    assert not marker.exists()  # the restricted unpickler never calls os.system


def test_truncated_and_trailing_pickles(tmp_path):
    good = pickle.dumps({"data": np.zeros((2, 3072), np.uint8), "labels": [0, 1]}, protocol=2)
    (tmp_path / "t").write_bytes(good[:100])
    with pytest.raises(DatasetFormatError, match=r"/t: byte \d+: not a readable python pickle"):
        cifar.read_batch(tmp_path / "t", "labels", 10)
    (tmp_path / "u").write_bytes(good + b"junk")
    with pytest.raises(DatasetFormatError, match=rf"/u: byte {len(good)}: 4 bytes after the end of the pickle"):
        cifar.read_batch(tmp_path / "u", "labels", 10)
    (tmp_path / "v").write_bytes(b"\x80\x02garbage" + struct.pack("<I", 7))
    with pytest.raises(DatasetFormatError, match="not a readable python pickle"):
        cifar.read_batch(tmp_path / "v", "labels", 10)


def test_cifar_root_errors(writers, tmp_path):
    with pytest.raises(DatasetFormatError, match="does not exist; pass --data-root PATH"):
        load_splits("cifar100", tmp_path / "absent", _cfg(tmp_path), seed=0)
    folder = writers.make_cifar_tree(tmp_path / "d", "cifar10")
    (folder / "data_batch_3").unlink()
    with pytest.raises(DatasetFormatError, match=r"not a cifar10 folder: expected data_batch_1, .*test_batch"):
        load_splits("cifar10", tmp_path / "d", _cfg(tmp_path), seed=0)


# ------------------------------------------------------------------ Tiny-ImageNet
def test_tiny_imagenet_layout(writers, tmp_path):
    folder = writers.make_tiny_imagenet_tree(tmp_path, wnids=("n02", "n01", "n03"), per_class=3, n_val=5)
    root = tiny_imagenet.resolve_root(tmp_path)
    assert root == folder.resolve()
    images, labels = tiny_imagenet.read_split(root, "train")
    assert images.shape == (9, 3, 64, 64) and images.dtype == np.uint8
    assert labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]  # sorted wnids: n01, n02, n03
    # pixels equal Pillow's own decoding; the grayscale image (n02_0) is replicated over RGB
    ref = np.asarray(Image.open(folder / "train" / "n01" / "images" / "n01_1.JPEG").convert("RGB")).transpose(2, 0, 1)
    np.testing.assert_array_equal(images[1], ref)
    gray = images[3]
    assert np.array_equal(gray[0], gray[1]) and np.array_equal(gray[1], gray[2])
    val_images, val_labels = tiny_imagenet.read_split(root, "test")
    # val_i has wnid ("n02", "n01", "n03")[i % 3] -> sorted index 1, 0, 2, 1, 0
    assert val_images.shape == (5, 3, 64, 64) and val_labels.tolist() == [1, 0, 2, 1, 0]


def test_tiny_imagenet_load_splits(writers, tmp_path):
    writers.make_tiny_imagenet_tree(tmp_path / "d", per_class=4, n_val=6)
    s = load_splits("tiny_imagenet", tmp_path / "d", _cfg(tmp_path, frames=2, val_fraction=0.25), seed=0)
    assert s.num_classes == 3 and s.frame_shape == (2, 3, 64, 64)
    assert (len(s.train), len(s.val), len(s.test)) == (9, 3, 6)
    assert s.train.transform.translate_px == 8 and s.train.transform.hflip
    x_seq = s.train.to_seq(s.train.frames[:2], train=True, generator=torch.Generator().manual_seed(0))
    assert x_seq.shape == (2, 2, 3, 64, 64)


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda f: (f / "wnids.txt").write_text(""), r"wnids.txt: lists no wnids"),
        (lambda f: (f / "wnids.txt").write_text("n01\nn01\n"), r"wnids.txt: line 2: duplicate wnid 'n01'"),
        (lambda f: (f / "val" / "val_annotations.txt").write_text("val_0.JPEG\tn01\t0\t0\t1\t1\nval_1.JPEG\n"),
         r"val_annotations.txt: line 2: expected tab-separated"),
        (lambda f: (f / "val" / "val_annotations.txt").write_text("val_0.JPEG\tn99\t0\t0\t1\t1\n"),
         r"val_annotations.txt: line 1: wnid 'n99' is not in wnids.txt"),
        (lambda f: (f / "val" / "val_annotations.txt").write_text("val_9.JPEG\tn01\t0\t0\t1\t1\n"),
         r"val_9.JPEG: not found; listed in .*val_annotations.txt line 1"),
        (lambda f: (f / "val" / "images" / "val_0.JPEG").write_bytes(b"\xff\xd8\xff garbage"),
         r"val_0.JPEG: byte 0: cannot decode as a JPEG image"),
        (lambda f: Image.new("RGB", (32, 64)).save(f / "train" / "n01" / "images" / "n01_0.JPEG"),
         r"n01_0.JPEG: image is 32x64; expected 64x64"),
        (lambda f: [p.unlink() for p in (f / "train" / "n03" / "images").iterdir()],
         r"n03/images: no .JPEG images"),
    ],
)
def test_hostile_tiny_imagenet(writers, tmp_path, edit, match):
    folder = writers.make_tiny_imagenet_tree(tmp_path / "d", wnids=("n01", "n02", "n03"))
    edit(folder)
    with pytest.raises(DatasetFormatError, match=match):
        load_splits("tiny_imagenet", tmp_path / "d", _cfg(tmp_path), seed=0)


def test_tiny_imagenet_root_errors(tmp_path):
    with pytest.raises(DatasetFormatError, match="does not exist; pass --data-root PATH"):
        load_splits("tiny_imagenet", tmp_path / "nope", _cfg(tmp_path), seed=0)
    with pytest.raises(DatasetFormatError, match="expected wnids.txt, train/ and val/"):
        load_splits("tiny_imagenet", tmp_path, _cfg(tmp_path), seed=0)
