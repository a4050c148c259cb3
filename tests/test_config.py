import json

import re

import pytest

from evo_snn.config import Config, ConfigError, load_config


@pytest.mark.parametrize("dataset", ["synthetic", "nmnist", "dvs_gesture"])
def test_shipped_search_spaces_load(dataset):
    cfg = load_config(dataset)
    assert cfg.dataset == dataset
    assert Config.from_dict(json.loads(cfg.to_json())) == cfg


def test_set_overrides_parse_yaml_values():
    cfg = load_config("synthetic", overrides=["kd.alpha=0.25", "model.channels=[4, 8]", "data.cache_dir=null"])
    assert cfg.kd.alpha == 0.25
    assert cfg.model.channels == (4, 8)
    assert cfg.data.cache_dir is None


@pytest.mark.parametrize("bad", ["kd.alhpa=0.5", "nosection.x=1", "kd=1", "kd.alpha", "search.population=6",
                                 "kd.alpha=2", "kd=magic", "model.channels=3", "kd.student_init=magic"])
def test_bad_overrides_are_rejected(bad):
    with pytest.raises(ConfigError):
        load_config("synthetic", overrides=[bad])


def test_unknown_key_in_file_names_the_file(tmp_path):
    p = tmp_path / "space.yaml"
    p.write_text("kd:\n  alpha: 0.5\n  temprature: 3\n")
    with pytest.raises(ConfigError, match="space.yaml.*temprature"):
        load_config("synthetic", p)


@pytest.mark.parametrize("value,message", [
    ("kd.epochs=nan", "kd.epochs must be a finite number > 0, got 'nan'"),
    ("kd.epochs=inf", "kd.epochs must be a finite number > 0, got 'inf'"),
    ("kd.epochs=.inf", "kd.epochs must be a finite number > 0, got inf"),
    ("kd.batch_size=0", "kd.batch_size must be an integer >= 1, got 0"),
    ("kd.lr=-0.1", "kd.lr must be a finite number > 0, got -0.1"),
    ("kd.lr=.nan", "kd.lr must be a finite number > 0, got nan"),
    ("teacher.epochs=-1", "teacher.epochs must be an integer >= 1, got -1; an untrained teacher teaches nothing"),
    ("teacher.lr=0", "teacher.lr must be a finite number > 0, got 0"),
    ("kd.alpha=abc", "kd.alpha must be a number in [0, 1], got 'abc'"),
])
def test_values_that_used_to_give_a_traceback_or_a_nonsense_run_are_config_errors(value, message):
    """Issue 24's table: each was a TypeError / IndexError traceback or a run with an untrained teacher."""
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config("synthetic", overrides=[value])
