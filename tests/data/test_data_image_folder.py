"""Image-folder data sets: labels, sizes, grey to RGB, the cache, parallel decoding, every error case."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from evo_snn.config import ConfigError, DataConfig
from evo_snn.data import DatasetFormatError, get_dataset, image_folder, load_splits
from evo_snn.data.__main__ import main


def _cfg(tmp_path, **kw) -> DataConfig:
    return DataConfig(cache_dir=str(tmp_path / "cache"), **kw)


def _cache_folders(tmp_path, name="image_folder") -> list[str]:
    d = tmp_path / "cache"
    return sorted(p.name for p in d.iterdir() if p.is_dir() and p.name.startswith(f"{name}-")) if d.is_dir() else []


# ------------------------------------------------------------------ reading
def test_labels_are_sorted_class_folders_and_pixels_exact(writers, tmp_path):
    rows = writers.make_image_folder(tmp_path / "d", classes=("cat", "ant", "bee"), size=(6, 5))
    root = image_folder.resolve_root(tmp_path / "d")
    assert image_folder.list_classes(root) == ["ant", "bee", "cat"]
    images, labels = image_folder.read_split(root, "train")
    assert images.shape == (12, 3, 6, 5) and images.dtype == np.uint8
    assert labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    np.testing.assert_array_equal(images, np.stack([a for _, _, a in rows["train"]]))  # PNG: lossless
    test_images, test_labels = image_folder.read_split(root, "test")
    np.testing.assert_array_equal(test_images, np.stack([a for _, _, a in rows["test"]]))
    assert test_labels.tolist() == [0, 0, 1, 1, 2, 2]


def test_formats_grey_hidden_and_other_files(writers, tmp_path):
    writers.make_image_folder(tmp_path, classes=("a", "b"), per_class={"train": 1, "test": 1}, size=(4, 4))
    d = tmp_path / "train" / "a"
    grey = np.arange(16, dtype=np.uint8).reshape(4, 4) * 10
    Image.fromarray(grey, "L").save(d / "grey.PNG")  # upper-case suffix, grey -> RGB
    Image.fromarray(np.full((4, 4, 3), 7, np.uint8)).save(d / "b.bmp")
    Image.fromarray(np.full((4, 4, 3), 9, np.uint8)).save(d / "c.webp", lossless=True)
    Image.fromarray(np.full((4, 4, 3), 200, np.uint8)).save(d / "d.jpeg", quality=95)
    Image.fromarray(np.zeros((4, 4, 4), np.uint8), "RGBA").save(d / "e.png")  # alpha dropped
    (d / "sub").mkdir()
    Image.fromarray(np.full((4, 4, 3), 3, np.uint8)).save(d / "sub" / "f.png")  # sub-folders are read
    (d / ".hidden.png").write_bytes(b"not an image")  # hidden: skipped
    (d / ".cache").mkdir()
    (d / ".cache" / "x.png").write_bytes(b"not an image")  # hidden folder: skipped
    (d / "notes.txt").write_text("not an image")  # other suffix: skipped
    (tmp_path / "train" / ".git").mkdir()  # hidden class folder: not a class
    root = image_folder.resolve_root(tmp_path)
    items = image_folder.list_split(root, "train")
    names = [p.relative_to(root / "train").as_posix() for p, _ in items]
    assert names == ["a/000.png", "a/b.bmp", "a/c.webp", "a/d.jpeg", "a/e.png", "a/grey.PNG", "a/sub/f.png", "b/000.png"]
    images, labels = image_folder.read_split(root, "train")
    assert labels.tolist() == [0] * 7 + [1]
    np.testing.assert_array_equal(images[5], np.stack([grey] * 3))
    assert (images[1] == 7).all() and (images[2] == 9).all() and (images[6] == 3).all()
    assert abs(int(images[3].astype(int).mean()) - 200) <= 2 and (images[4] == 0).all()


def test_image_size_resizes_with_the_named_filter(writers, tmp_path):
    writers.make_image_folder(tmp_path, classes=("a", "b"), size=(8, 8))
    big = np.zeros((16, 24, 3), np.uint8)
    big[:, 12:] = 255  # left half black, right half white
    Image.fromarray(big).save(tmp_path / "train" / "a" / "big.png")
    root = image_folder.resolve_root(tmp_path)
    near, _ = image_folder.read_split(root, "train", image_size=[4, 6], resize_filter="nearest")
    assert near.shape == (9, 3, 4, 6)
    np.testing.assert_array_equal(near[4, 0], np.array([[0, 0, 0, 255, 255, 255]] * 4, np.uint8))
    box, _ = image_folder.read_split(root, "train", image_size=4, resize_filter="box")
    assert box.shape == (9, 3, 4, 4) and box[4, 0, 0].tolist() == [0, 0, 255, 255]


def test_jpeg_draft_mode_decodes_large_jpegs_reduced(tmp_path):
    arr = np.kron(np.arange(4, dtype=np.uint8).reshape(2, 2) * 80, np.ones((64, 64), np.uint8))
    Image.fromarray(arr, "L").save(tmp_path / "x.jpg", quality=95)
    out = image_folder.decode_image(tmp_path / "x.jpg", size=(16, 16), resize_filter="bilinear")
    assert out.shape == (3, 16, 16)
    assert abs(int(out[0, 0, 0]) - 0) <= 3 and abs(int(out[0, 15, 15]) - 240) <= 3


def test_load_splits_image_folder_cache_and_describe(writers, tmp_path, capsys, monkeypatch):
    rows = writers.make_image_folder(tmp_path / "d", classes=("x", "y"), per_class={"train": 5, "test": 3})
    cfg = _cfg(tmp_path, frames=2, val_fraction=0.2)
    s = load_splits("image_folder", tmp_path / "d", cfg, seed=0)
    assert s.num_classes == 2 and s.class_names == ("x", "y") and s.layout == "image_folder"
    assert s.frame_shape == (2, 3, 6, 5) and s.train.memory_mapped and s.train.encoding == "direct"
    assert (len(s.train), len(s.val), len(s.test)) == (8, 2, 6) and s.val.class_counts() == {0: 1, 1: 1}
    assert s.train.transform.hflip and s.train.transform.translate_px == 0
    np.testing.assert_array_equal(s.test.frames[:, 0].numpy(), np.stack([a for _, _, a in rows["test"]]))
    assert s.test.to_seq(s.test.frames).shape == (2, 6, 3, 6, 5)
    assert len(_cache_folders(tmp_path)) == 1
    # a second load decodes nothing
    with monkeypatch.context() as m:
        m.setattr(image_folder, "decode_images", lambda *a, **k: pytest.fail("decoded again"))
        again = load_splits("image_folder", tmp_path / "d", cfg, seed=0)
    assert torch.equal(again.test.frames, s.test.frames)
    # changing an image, or the size settings, selects another cache folder
    Image.fromarray(np.zeros((6, 5, 3), np.uint8)).save(rows["test"][0][0])
    changed = load_splits("image_folder", tmp_path / "d", cfg, seed=0)
    assert int(changed.test.frames[0].sum()) == 0
    load_splits("image_folder", tmp_path / "d", _cfg(tmp_path, image_size=4), seed=0)
    assert len(_cache_folders(tmp_path)) == 3
    # classes recorded in a config must match
    with pytest.raises(DatasetFormatError, match=r"classes \['x', 'y'\] are not data.classes \['x', 'z'\]"):
        load_splits("image_folder", tmp_path / "d", _cfg(tmp_path, classes=("x", "z")), seed=0)
    assert load_splits("image_folder", tmp_path / "d", _cfg(tmp_path, classes=("x", "y")), seed=0).num_classes == 2

    import json

    code = main(["describe", "--dataset", "image_folder", "--data-root", str(tmp_path / "d"),
                 "--set", f"data.cache_dir={tmp_path / 'cache'}", "--set", "data.frames=3"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["layout"] == "image_folder" and out["classes"] == ["x", "y"]
    assert out["frame_shape"] == [3, 3, 6, 5] and out["splits"]["test"]["class_counts"] == {"0": 3, "1": 3}


def test_parallel_decoding_equals_serial_and_reports_the_first_bad_file(writers, tmp_path, monkeypatch):
    rows = writers.make_image_folder(tmp_path, classes=("a", "b", "c"), per_class={"train": 5})
    paths = [p for p, _, _ in rows["train"]]
    serial = image_folder.decode_images(paths, None, (6, 5), "bilinear", workers=1)
    monkeypatch.setattr(image_folder, "PARALLEL_MIN_IMAGES", 1)
    monkeypatch.setattr(image_folder, "CHUNK_IMAGES", 2)
    parallel = image_folder.decode_images(paths, None, (6, 5), "bilinear", workers=2)
    np.testing.assert_array_equal(parallel, serial)
    paths[13].write_bytes(b"garbage")
    paths[5].write_bytes(paths[5].read_bytes()[:40])
    with pytest.raises(DatasetFormatError, match=rf"{paths[5]}: byte 0: cannot decode"):
        image_folder.decode_images(paths, None, (6, 5), "bilinear", workers=2)


# ------------------------------------------------------------------ hostile input
def _truncate(p: Path) -> None:
    p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2])


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda r: (r / "train" / "empty").mkdir(), r"train/empty: empty class folder: no image files"),
        (lambda r: [p.unlink() for p in (r / "test" / "b").iterdir()], r"test/b: empty class folder"),
        (lambda r: (r / "test" / "zebra").mkdir() or Image.new("RGB", (5, 6)).save(r / "test" / "zebra" / "0.png"),
         r"test/zebra: class 'zebra' is in test/ but not in train/"),
        (lambda r: _truncate(r / "train" / "b" / "001.png"), r"train/b/001.png: byte 0: cannot decode .*truncated"),
        (lambda r: (r / "test" / "a" / "001.png").write_text("hello, not a picture"),
         r"test/a/001.png: byte 0: cannot decode as a JPEG, PNG, BMP or WebP image"),
        (lambda r: Image.new("RGB", (5, 6)).save(r / "train" / "a" / "gif.jpg", format="GIF"),
         r"train/a/gif.jpg: byte 0: cannot decode"),  # a decoder we do not open
        (lambda r: Image.new("RGB", (7, 6)).save(r / "test" / "b" / "wide.png"),
         r"test/b/wide.png: image is 6x7 \(HxW\), others are 6x5; images of different sizes need data.image_size"),
        (lambda r: os.rename(r / "train", r / "training"), r"no train/ folder"),
        (lambda r: os.rename(r / "test", r / "testing"), r"no test/ folder"),
        (lambda r: [os.rename(r / "train" / c, r / "train" / f".{c}") for c in ("a", "b")],
         r"train: no class folders"),
    ],
)
def test_hostile_image_folder(writers, tmp_path, capsys, edit, match):
    """Each case is a one-line error naming the file or folder, exit 2 from the CLI, and no cache folder."""
    writers.make_image_folder(tmp_path / "d", classes=("a", "b"))
    edit(tmp_path / "d")
    with pytest.raises(DatasetFormatError, match=match):
        load_splits("image_folder", tmp_path / "d", _cfg(tmp_path), seed=0)
    assert _cache_folders(tmp_path) == [] and not list((tmp_path / "cache").glob("*.tmp-*"))
    code = main(["describe", "--dataset", "image_folder", "--data-root", str(tmp_path / "d"),
                 "--set", f"data.cache_dir={tmp_path / 'cache'}"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1


def test_image_folder_root_and_setting_errors(writers, tmp_path):
    with pytest.raises(DatasetFormatError, match="does not exist; pass --data-root PATH"):
        load_splits("image_folder", tmp_path / "absent", _cfg(tmp_path), seed=0)
    with pytest.raises(DatasetFormatError, match="image_folder needs its data files: pass --data-root PATH"):
        load_splits("image_folder", None, _cfg(tmp_path), seed=0)
    for bad in (0, [3], [2, 0], True, "32"):
        with pytest.raises(ConfigError, match="data.image_size must be null"):
            load_splits("image_folder", tmp_path, _cfg(tmp_path, image_size=bad), seed=0)
    with pytest.raises(ConfigError, match="data.resize_filter must be one of"):
        load_splits("image_folder", tmp_path, _cfg(tmp_path, resize_filter="cubic"), seed=0)
    with pytest.raises(ConfigError, match="data.image_size applies to image-folder data sets only"):
        load_splits("synthetic", None, DataConfig(image_size=8), seed=0)


# ------------------------------------------------------------------ CIFAR in the image-folder layout
def test_cifar10_accepts_the_image_folder_layout(writers, tmp_path, capsys):
    classes = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
    writers.make_image_folder(tmp_path / "jpg", classes=classes, per_class={"train": 2, "test": 1}, size=(32, 32),
                              fmt="JPEG")
    s = load_splits("cifar10", tmp_path / "jpg", _cfg(tmp_path, frames=2, val_fraction=0.5), seed=0)
    assert s.layout == "image_folder" and s.class_names == classes and s.num_classes == 10
    assert s.frame_shape == (2, 3, 32, 32) and s.train.transform.translate_px == 4 and s.train.transform.hflip
    assert (len(s.train), len(s.val), len(s.test)) == (10, 10, 10)
    assert _cache_folders(tmp_path, "cifar10")
    writers.make_cifar_tree(tmp_path / "py", "cifar10", per_batch=4, n_test=3)
    b = load_splits("cifar10", tmp_path / "py", _cfg(tmp_path, frames=2), seed=0)
    assert b.layout == "python_batches" and b.class_names == tuple(f"class{i}" for i in range(10))
    with pytest.raises(ConfigError, match="data.image_size applies to the image-folder layout"):
        load_splits("cifar10", tmp_path / "py", _cfg(tmp_path, image_size=16), seed=0)
    (tmp_path / "jpg" / "train" / "truck").rename(tmp_path / "jpg" / "train" / ".truck")
    with pytest.raises(DatasetFormatError, match=r"train: 9 class folders; cifar10 has 10"):
        load_splits("cifar10", tmp_path / "jpg", _cfg(tmp_path), seed=0)
    with pytest.raises(DatasetFormatError, match=r"or the image-folder layout train/<class>/ and test/<class>/"):
        load_splits("cifar100", tmp_path, _cfg(tmp_path), seed=0)


def test_registry_facts():
    spec = get_dataset("image_folder")
    assert spec.encoding == "direct" and spec.num_classes is None and spec.needs_root
    assert get_dataset("cifar100").num_classes == 100 and get_dataset("nmnist").sensor_size == (34, 34)
    with pytest.raises(ConfigError, match="unknown dataset 'mnist'"):
        get_dataset("mnist")
    from evo_snn.data.registry import DatasetSpec, register_dataset

    with pytest.raises(ValueError, match="already registered"):
        register_dataset("nmnist")(type("Again", (DatasetSpec,), {}))


@pytest.mark.slow
def test_shared_cifar10_jpeg_counts(cifar10_jpeg_root, tmp_path):
    s = load_splits("cifar10", cifar10_jpeg_root, _cfg(tmp_path, frames=4), seed=0)
    assert s.layout == "image_folder" and (len(s.train), len(s.val), len(s.test)) == (18000, 2000, 10000)
    assert s.test.class_counts() == {c: 1000 for c in range(10)}
    assert s.class_names[:3] == ("airplane", "automobile", "bird")
