"""``python -m evo_snn.data describe``: JSON on stdout, one-line errors with exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from evo_snn.config import SEARCH_SPACES_DIR, load_config
from evo_snn.data.__main__ import main

REPO = Path(__file__).resolve().parents[2]


def _run(*args: str) -> subprocess.CompletedProcess:
    """``python -m evo_snn.data ...`` as its own process (~2 s: a fresh interpreter imports torch);
    used once, for the exit status and the streams of the real entry point. The other tests call
    ``main`` in this process (``_describe``)."""
    return subprocess.run(
        [sys.executable, "-m", "evo_snn.data", *args], cwd=REPO, capture_output=True, text=True, timeout=120
    )


def _need_yaml(dataset: str) -> None:
    if not (SEARCH_SPACES_DIR / f"{dataset}.yaml").is_file():
        pytest.skip(f"search_spaces/{dataset}.yaml not written yet")


def _check_summary(out: dict, dataset: str) -> None:
    assert set(out) == {"dataset", "layout", "encoding", "num_classes", "classes", "frame_shape", "splits"}
    assert out["dataset"] == dataset
    assert out["classes"] is None or len(out["classes"]) == out["num_classes"]
    assert set(out["splits"]) == {"train", "val", "test"}
    for split in out["splits"].values():
        assert set(split) == {"samples", "class_counts", "events_per_sample"}
        assert sum(split["class_counts"].values()) == split["samples"]
        assert list(split["class_counts"]) == [str(c) for c in range(out["num_classes"])]


def test_describe_synthetic(tmp_path, capsys):
    _need_yaml("synthetic")
    code, out, err = _describe(capsys, "--dataset", "synthetic", "--set", f"data.cache_dir={tmp_path}", "--set", "data.frames=5",
                               "--seed", "3")
    assert code == 0, err
    _check_summary(out, "synthetic")
    d = load_config("synthetic").data
    assert out["frame_shape"] == [5, 2, d.synthetic_size // d.downsample, d.synthetic_size // d.downsample]
    assert out["num_classes"] == d.synthetic_classes
    assert out["splits"]["train"]["samples"] + out["splits"]["val"]["samples"] == d.synthetic_classes * d.synthetic_train_per_class
    assert out["splits"]["test"]["samples"] == d.synthetic_classes * d.synthetic_test_per_class
    eps = out["splits"]["test"]["events_per_sample"]
    assert 0 < eps["min"] <= eps["mean"] <= eps["max"]


def test_describe_nmnist_fixture(nmnist_root, tmp_path, capsys):
    _need_yaml("nmnist")
    code, out, err = _describe(capsys, "--dataset", "nmnist", "--data-root", str(nmnist_root),
                               "--set", f"data.cache_dir={tmp_path}", "--set", "data.frames=4", "--set", "data.downsample=2")
    assert code == 0, err
    _check_summary(out, "nmnist")
    assert out["num_classes"] == 10 and out["frame_shape"] == [4, 2, 17, 17]
    s = out["splits"]
    assert s["train"]["samples"] + s["val"]["samples"] == 1000 and s["test"]["samples"] == 100
    train_counts = [s["train"]["class_counts"][str(c)] + s["val"]["class_counts"][str(c)] for c in range(10)]
    assert train_counts == [97, 116, 99, 93, 105, 92, 94, 117, 87, 100]
    assert s["test"]["events_per_sample"]["min"] > 500


def test_describe_errors_exit_2(tmp_path, capsys):
    _need_yaml("dvs_gesture")
    r = _run("describe", "--dataset", "dvs_gesture", "--data-root", str(tmp_path / "absent"), "--set", f"data.cache_dir={tmp_path}")
    assert r.returncode == 2 and r.stdout == ""  # the process: nothing on stdout (not even at import), one line on stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "--data-root PATH" in lines[0]
    code, out, err = _describe(capsys, "--dataset", "dvs_gesture", "--set", "data.nope=1")
    assert code == 2 and out is None and err.startswith("error: ") and len(err.strip().splitlines()) == 1


def test_help_documents_every_flag(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["describe", "--help"])
    assert exit_.value.code in (0, None)
    help_text = capsys.readouterr().out
    for flag in ("--dataset", "--data-root", "--set", "--seed", "--progress"):
        assert flag in help_text


def _describe(capsys, *args: str) -> tuple[int, dict | None, str]:
    """Run ``python -m evo_snn.data describe ...`` in this process (fast); (exit code, JSON or None, stderr)."""
    code = main(["describe", *args])
    captured = capsys.readouterr()
    return code, (json.loads(captured.out) if code == 0 else None), captured.err


@pytest.mark.filterwarnings("ignore:.*single training sample")  # cifar100 fixture: 100 images, 100 classes
@pytest.mark.parametrize("dataset, classes, size", [("cifar10", 10, 32), ("cifar100", 100, 32)])
def test_describe_cifar_fixtures(writers, tmp_path, capsys, dataset, classes, size):
    _need_yaml(dataset)
    writers.make_cifar_tree(tmp_path / "data", dataset, per_batch=20, n_test=7)
    code, out, err = _describe(capsys, "--dataset", dataset, "--data-root", str(tmp_path / "data"),
                               "--set", f"data.cache_dir={tmp_path / 'c'}", "--set", "data.frames=3")
    assert code == 0, err
    _check_summary(out, dataset)
    assert out["encoding"] == "direct" and out["num_classes"] == classes and out["frame_shape"] == [3, 3, size, size]
    s = out["splits"]
    assert s["train"]["samples"] + s["val"]["samples"] == 100 and s["test"]["samples"] == 7
    rows = writers.cifar_image_rows(7, 99 if dataset == "cifar10" else 2).astype(int).sum(1)  # pixel sums
    assert s["test"]["events_per_sample"] == {"min": int(rows.min()), "mean": round(float(rows.mean()), 3), "max": int(rows.max())}
    if dataset == "cifar10":
        assert [s["test"]["class_counts"][str(c)] for c in range(10)] == [1] * 7 + [0] * 3


def test_describe_tiny_imagenet_fixture(writers, tmp_path, capsys):
    _need_yaml("tiny_imagenet")
    writers.make_tiny_imagenet_tree(tmp_path / "data", wnids=("n09", "n04", "n01", "n05"), per_class=5, n_val=8)
    code, out, err = _describe(capsys, "--dataset", "tiny_imagenet", "--data-root", str(tmp_path / "data"),
                               "--set", f"data.cache_dir={tmp_path / 'c'}", "--set", "data.val_fraction=0.2")
    assert code == 0, err
    _check_summary(out, "tiny_imagenet")
    assert out["num_classes"] == 4 and out["frame_shape"][1:] == [3, 64, 64]
    s = out["splits"]
    assert (s["train"]["samples"], s["val"]["samples"], s["test"]["samples"]) == (16, 4, 8)
    # val_i is wnids[i % 4] = n09, n04, n01, n05 -> sorted index 3, 1, 0, 2
    assert s["test"]["class_counts"] == {"0": 2, "1": 2, "2": 2, "3": 2}
    assert [s["train"]["class_counts"][str(c)] + s["val"]["class_counts"][str(c)] for c in range(4)] == [5] * 4


def test_describe_dvs_gesture_real_fixture(dvs_root, tmp_path, capsys):
    _need_yaml("dvs_gesture")
    import warnings

    import numpy as np

    from evo_snn.data.aedat import read_aedat31
    from evo_snn.data.dvs_gesture import read_labels_csv

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # one training sample per class: val falls back, with a warning
        code, out, err = _describe(capsys, "--dataset", "dvs_gesture", "--data-root", str(dvs_root),
                                   "--set", f"data.cache_dir={tmp_path}", "--set", "data.frames=4")
    assert code == 0, err
    _check_summary(out, "dvs_gesture")
    assert out["encoding"] == "events" and out["num_classes"] == 11
    d = load_config("dvs_gesture").data
    assert out["frame_shape"] == [4, 2, 128 // d.downsample, 128 // d.downsample]
    s = out["splits"]
    assert (s["train"]["samples"] + s["val"]["samples"], s["test"]["samples"]) == (10, 10)
    assert [s["test"]["class_counts"][str(c)] for c in range(11)] == [1] * 10 + [0]
    ev = read_aedat31(dvs_root / "user24_fluorescent.aedat")
    counts = [int(np.count_nonzero((ev.t >= w.start_us) & (ev.t < w.end_us)))
              for w in read_labels_csv(dvs_root / "user24_fluorescent_labels.csv")]
    assert s["test"]["events_per_sample"] == {"min": min(counts), "mean": round(sum(counts) / 10, 3), "max": max(counts)}


def test_describe_bad_file_is_one_line_exit_2(writers, tmp_path, capsys):
    root = writers.make_gesture_tree(tmp_path / "g")
    (root / "tB.aedat").write_bytes((root / "tB.aedat").read_bytes()[:-3])
    code, _, err = _describe(capsys, "--dataset", "dvs_gesture", "--data-root", str(root), "--set", f"data.cache_dir={tmp_path}")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1
    assert lines[0].startswith("error: ") and "tB.aedat: byte " in lines[0] and "truncated packet payload" in lines[0]
    (root / "tA_labels.csv").write_text("class,startTime_usec,endTime_usec\n3,30,10\n")
    code, _, err = _describe(capsys, "--dataset", "dvs_gesture", "--data-root", str(root), "--set", f"data.cache_dir={tmp_path}")
    assert code == 2 and "tA_labels.csv: line 2: expected 0 <= startTime_usec <= endTime_usec" in err
    code, _, err = _describe(capsys, "--dataset", "cifar10", "--data-root", str(tmp_path / "none"))
    assert code == 2 and err.startswith("error: ") and "does not exist" in err
