"""``python -m evo_snn.data describe``: JSON on stdout, one-line errors with exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from evo_snn.config import SEARCH_SPACES_DIR, load_config

REPO = Path(__file__).resolve().parents[2]


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "evo_snn.data", *args], cwd=REPO, capture_output=True, text=True, timeout=120
    )


def _need_yaml(dataset: str) -> None:
    if not (SEARCH_SPACES_DIR / f"{dataset}.yaml").is_file():
        pytest.skip(f"search_spaces/{dataset}.yaml not written yet")


def _check_summary(out: dict, dataset: str) -> None:
    assert set(out) == {"dataset", "num_classes", "frame_shape", "splits"}
    assert out["dataset"] == dataset
    assert set(out["splits"]) == {"train", "val", "test"}
    for split in out["splits"].values():
        assert set(split) == {"samples", "class_counts", "events_per_sample"}
        assert sum(split["class_counts"].values()) == split["samples"]
        assert list(split["class_counts"]) == [str(c) for c in range(out["num_classes"])]


def test_describe_synthetic(tmp_path):
    _need_yaml("synthetic")
    r = _run("describe", "--dataset", "synthetic", "--set", f"data.cache_dir={tmp_path}", "--set", "data.frames=5", "--seed", "3")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    _check_summary(out, "synthetic")
    d = load_config("synthetic").data
    assert out["frame_shape"] == [5, 2, d.synthetic_size // d.downsample, d.synthetic_size // d.downsample]
    assert out["num_classes"] == d.synthetic_classes
    assert out["splits"]["train"]["samples"] + out["splits"]["val"]["samples"] == d.synthetic_classes * d.synthetic_train_per_class
    assert out["splits"]["test"]["samples"] == d.synthetic_classes * d.synthetic_test_per_class
    eps = out["splits"]["test"]["events_per_sample"]
    assert 0 < eps["min"] <= eps["mean"] <= eps["max"]


def test_describe_nmnist_fixture(nmnist_root, tmp_path):
    _need_yaml("nmnist")
    r = _run("describe", "--dataset", "nmnist", "--data-root", str(nmnist_root),
             "--set", f"data.cache_dir={tmp_path}", "--set", "data.frames=4", "--set", "data.downsample=2")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    _check_summary(out, "nmnist")
    assert out["num_classes"] == 10 and out["frame_shape"] == [4, 2, 17, 17]
    s = out["splits"]
    assert s["train"]["samples"] + s["val"]["samples"] == 1000 and s["test"]["samples"] == 100
    train_counts = [s["train"]["class_counts"][str(c)] + s["val"]["class_counts"][str(c)] for c in range(10)]
    assert train_counts == [97, 116, 99, 93, 105, 92, 94, 117, 87, 100]
    assert s["test"]["events_per_sample"]["min"] > 500


def test_describe_errors_exit_2(tmp_path):
    _need_yaml("dvs_gesture")
    r = _run("describe", "--dataset", "dvs_gesture", "--data-root", str(tmp_path / "absent"), "--set", f"data.cache_dir={tmp_path}")
    assert r.returncode == 2 and r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "--data-root PATH" in lines[0]
    r = _run("describe", "--dataset", "dvs_gesture", "--set", "data.nope=1")
    assert r.returncode == 2 and r.stderr.startswith("error: ")


def test_help_documents_every_flag():
    r = _run("describe", "--help")
    assert r.returncode == 0
    for flag in ("--dataset", "--data-root", "--set", "--seed", "--progress"):
        assert flag in r.stdout
