"""The configuration schema (issue 24, item 4): every key declared once with a type, a range,
a default and a description; pydantic validates; a bad value is one ConfigError line naming
the key, the value and what is allowed; configs written before the schema still load."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import typing
from pathlib import Path

import pytest

from evo_snn import config as C
from evo_snn.config import Config, ConfigError, DataConfig, config_keys, load_config
from evo_snn.schema import key_parts, section_class

ROOT = Path(__file__).resolve().parents[1]
OLD_RUN_CONFIG = ROOT / "tests" / "golden" / "config_before_schema.json"  # a run's, written before the schema

# Config().to_dict() of the version before the schema, spelled out (ints where floats are
# declared, as a hand-written YAML file or an older run might have them).
OLD_DEFAULTS = {
    "dataset": "synthetic",
    "data": {"frames": 8, "split_by": "number", "downsample": 1, "val_fraction": 0.1, "split_seed": None,
             "cache_dir": None, "synthetic_classes": 4, "synthetic_train_per_class": 48,
             "synthetic_test_per_class": 16, "synthetic_size": 16, "aug_translate_px": None, "aug_hflip": None,
             "aug_event_drop": 0, "image_size": None, "resize_filter": "bilinear", "classes": []},
    "model": {"name": "tiny_conv", "channels": [8, 16], "hidden": 0, "neuron": "if", "surrogate": "atan",
              "tau": 2, "v_threshold": 1, "v_reset": 0, "detach_reset": True, "dropout": 0, "width": 1,
              "neuron_backend": "auto"},
    "teacher": {"epochs": 10, "batch_size": 32, "lr": 0.001, "weight_decay": 0},
    "genome": {"prunable": "all", "ratio_min": 0, "ratio_max": 0.95, "init_swap_fraction": 0.02,
               "ratio_mutation_prob": 0.3, "ratio_mutation_sigma": 0.1, "mask_mutation_prob": 0.3,
               "mask_swap_fraction": 0.01, "crossover_prob": 0.9, "init_global_fraction": 0,
               "mask_mutation": "random", "init_allocations": [], "init_allocation_fraction": 0.5,
               "mutation": "free", "smooth_sigma": 0.2, "level_switch_prob": 0.5, "level_switch_fraction": 0.02,
               "stage_exponents": False},
    "kd": {"mode": "sparse", "alpha": 0.9, "temperature": 4, "default_prob": 0.95, "default_form": "paper",
           "epochs": 1, "batch_size": 32, "lr": 0.0005, "student_init": "teacher", "student_mask": "genome"},
    "train": {"amp": "none", "channels_last": False, "threads": None, "eval_batch_size": None},
    "search": {"population": 8, "generations": 3, "workers": 1, "seed": 0, "tag": "search", "measure_teacher": True,
               "final_epochs": 0, "inherit_weights": False, "max_retries": 2, "max_failed_generations": 3,
               "eval_timeout_s": 0, "objectives": ["accuracy", "sparsity"],
               "hv_reference": {"accuracy": 0, "sparsity": 0, "energy": 1}, "students_per_batch": 1,
               "fidelity_fraction": 1, "promote_fraction": 0.5, "screen": "none", "screen_bn_batches": 20,
               "screen_samples": 1000, "screen_first_share": 0.25, "screen_keep": 0.5, "screen_promote": 0,
               "screen_group": 1, "finetune_share": None},
    "faults": {"fail_rate": 0, "kinds": ["raise", "exit", "hang"], "seed": 0},
    "energy": {"e_ac_pj": 0.9, "e_mac_pj": 4.6},
}


def _base_types() -> dict[str, type]:
    """{dotted key: its declared type without Annotated and None} for every plain key."""
    out = {}
    for f in dataclasses.fields(Config):
        cls = section_class(Config, f.name)
        for owner, g, prefix in ([(cls, g, f.name + ".") for g in dataclasses.fields(cls)] if cls else
                                 [(Config, f, "")]):
            tp = key_parts(owner, g.name)[0]
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            out[prefix + g.name] = args[0] if typing.get_origin(tp) is typing.Union and len(args) == 1 else tp
    return out


FLOAT_KEYS = sorted(k for k, t in _base_types().items() if t is float)
INT_KEYS = sorted(k for k, t in _base_types().items() if t is int)


# ------------------------------------------------------------------ one line per bad value
@pytest.mark.parametrize("item,line", [
    ("kd.epochs=nan", "kd.epochs must be a finite number > 0, got 'nan'"),
    ("kd.epochs=inf", "kd.epochs must be a finite number > 0, got 'inf'"),
    ("kd.epochs=.nan", "kd.epochs must be a finite number > 0, got nan"),
    ("kd.epochs=.inf", "kd.epochs must be a finite number > 0, got inf"),
    ("kd.batch_size=0", "kd.batch_size must be an integer >= 1, got 0"),
    ("kd.batch_size=true", "kd.batch_size must be an integer >= 1, got True"),
    ("kd.lr=-0.1", "kd.lr must be a finite number > 0, got -0.1"),
    ("teacher.epochs=-1", "teacher.epochs must be an integer >= 1, got -1; an untrained teacher teaches nothing; "
                          "reuse a trained one with --teacher PATH"),
    ("data.val_fraction=1", "data.val_fraction must be a number in (0, 1), got 1"),
    ("search.population=6", "search.population must be a multiple of 4 (>= 4), got 6"),
    ("search.seed=-1", "search.seed must be an integer in [0, 2**32), got -1"),
    ("train.threads=0", "train.threads must be null (fit to the machine) or an integer >= 1, got 0"),
    ("model.channels=[8, 0]", "model.channels must be a list of integers >= 1, got [8, 0]"),
    ("data.split_by=space", "data.split_by must be one of ['number', 'time'], got 'space'"),
    ("kd=magic", "kd.mode must be one of ['sparse', 'self', 'default', 'ann', 'none'], got 'magic'"),
    ("genome.prunable=conv1", "genome.prunable must be 'all' or a list of module names, got 'conv1'"),
    ("data.image_size=[32]", "data.image_size must be null, an integer >= 1 or [H, W] (integers >= 1), got [32]"),
    ("search.hv_reference.energy=.inf", "search.hv_reference must be a mapping of objectives "
                                        "['accuracy', 'sparsity', 'energy'] to finite numbers, got"),
])
def test_a_bad_value_is_one_line_naming_key_value_and_what_is_allowed(item, line):
    with pytest.raises(ConfigError) as e:
        load_config("synthetic", overrides=[item])
    assert str(e.value).startswith(line) and "\n" not in str(e.value)


def test_several_bad_values_still_give_one_line():
    with pytest.raises(ConfigError) as e:
        load_config("synthetic", overrides=["kd.epochs=0", "kd.lr=0", "teacher.epochs=0"])
    assert "\n" not in str(e.value) and str(e.value).startswith("teacher.epochs must be an integer >= 1, got 0")
    assert str(e.value).endswith("(also bad: kd.epochs, kd.lr)")


def test_unknown_keys_and_sections_are_refused_in_one_line():
    with pytest.raises(ConfigError, match=r"^unknown key\(s\) \['kd.temprature', 'kd.x'\]; known: \['alpha', "):
        Config.from_dict({"kd": {"temprature": 3, "x": 1, "epochs": 0}})
    with pytest.raises(ConfigError, match=r"^unknown key\(s\) \['nosection'\]; known: \['data', 'dataset', "):
        Config.from_dict({"nosection": {}})
    with pytest.raises(ConfigError, match="^kd: expected a mapping, got int$"):
        Config.from_dict({"kd": 3})
    with pytest.raises(ConfigError, match="^config: expected a mapping, got list$"):
        Config.from_dict([])


@pytest.mark.parametrize("key", FLOAT_KEYS)
@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf"])
def test_nan_and_inf_are_refused_in_every_number(key, value):
    assert len(FLOAT_KEYS) == 37  # every float key of the schema (Optional ones included)
    with pytest.raises(ConfigError, match=f"^{key} must be .*, got {value.lstrip('.').replace('.', '')}"):
        Config().override([f"{key}={value}"])


@pytest.mark.parametrize("key", INT_KEYS)
def test_integers_refuse_bools_floats_and_strings(key):
    assert len(INT_KEYS) >= 20
    for value in ("true", "1.5", "'1'"):
        with pytest.raises(ConfigError, match=f"^{key} must be "):
            Config().override([f"{key}={value}"])


def test_the_checks_run_on_configs_built_in_code_too():
    """Building a section checks nothing (dataclasses.replace stays free); validate() does."""
    cfg = Config()
    bad = dataclasses.replace(cfg, kd=dataclasses.replace(cfg.kd, epochs=float("nan")))
    with pytest.raises(ConfigError, match=r"^kd.epochs must be a finite number > 0, got nan$"):
        bad.validate()
    with pytest.raises(ConfigError, match=r"^data.frames must be an integer >= 1, got 0$"):
        DataConfig(frames=0).check()
    assert cfg.validate() is cfg


def test_cross_key_rules_stay_explicit():
    with pytest.raises(ConfigError, match=r"^genome.ratio_min must be <= genome.ratio_max, got 0.9 > 0.5$"):
        load_config("synthetic", overrides=["genome.ratio_min=0.9", "genome.ratio_max=0.5"])
    with pytest.raises(ConfigError, match="need Ray workers"):
        load_config("synthetic", overrides=["faults.fail_rate=0.2"])
    with pytest.raises(ConfigError, match=r"search.hv_reference lacks \['energy'\]"):
        Config.from_dict({"search": {"objectives": ["accuracy", "energy"], "hv_reference": {"accuracy": 0}}}).validate()


def test_the_cli_prints_one_line_and_exits_2(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "EVO_SNN_THREADS": "1", "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-m", "evo_snn.search", "--dataset", "synthetic", "--set", "kd.epochs=nan",
                        "--out", str(tmp_path / "run"), "--no-progress"], capture_output=True, text=True, env=env,
                       timeout=300)
    assert r.returncode == 2
    assert r.stdout == "" and r.stderr == "error: kd.epochs must be a finite number > 0, got 'nan'\n"
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------ old configs load
def test_a_run_config_written_before_the_schema_loads_and_round_trips():
    old = json.loads(OLD_RUN_CONFIG.read_text())
    cfg = Config.from_dict(old).validate()
    assert cfg.to_dict() == old
    assert cfg.data.classes == ("direction_0deg", "direction_90deg", "direction_180deg", "direction_270deg")
    assert C.read_run_config(OLD_RUN_CONFIG, generations=5).search.generations == 5


def test_old_defaults_load_with_numbers_as_floats():
    cfg = Config.from_dict(OLD_DEFAULTS).validate()
    # the one default changed since (issue 26: search.measure_teacher false); an old file keeps its own value
    now = dataclasses.replace(Config(), search=dataclasses.replace(Config().search, measure_teacher=True))
    assert cfg.search.measure_teacher is True and Config().search.measure_teacher is False
    assert cfg == now
    assert json.loads(cfg.to_json()) == now.to_dict()
    assert isinstance(cfg.kd.epochs, float) and isinstance(cfg.search.fidelity_fraction, float)
    assert all(isinstance(v, float) for v in cfg.search.hv_reference.values())
    assert Config.from_dict(json.loads(Config().to_json())) == Config()


def test_lists_become_tuples_and_set_keys_keep_their_names():
    cfg = load_config("synthetic", overrides=["model.channels=[4, 8]", "data.image_size=[24, 32]",
                                              "genome.prunable=[conv1, fc]", "genome.init_allocations=[erk, lamp]",
                                              "faults.kinds=[raise]", "search.hv_reference.energy=0.5"])
    assert cfg.model.channels == (4, 8) and cfg.data.image_size == (24, 32) and cfg.genome.prunable == ("conv1", "fc")
    assert cfg.genome.init_allocations == ("erk", "lamp") and cfg.faults.kinds == ("raise",)
    assert cfg.search.hv_reference == {"accuracy": 0.0, "sparsity": 0.0, "energy": 0.5}
    assert [k.key for k in config_keys()] == ["dataset"] + [
        f"{s.name}.{g.name}" for s in dataclasses.fields(Config) if s.name != "dataset"
        for g in dataclasses.fields(section_class(Config, s.name))]


# ------------------------------------------------------------------ one place per key
def test_every_key_has_a_type_a_range_a_default_and_a_description():
    keys = config_keys()
    assert len(keys) >= 90
    for k in keys:
        assert k.description.strip() and "\n" not in k.description, k.key
        assert k.allowed and "\n" not in k.allowed, k.key
    defaults = Config().to_dict()
    for k in keys:  # the defaults are valid values of the schema (and the ones Config() holds)
        node = defaults
        for part in k.key.split("."):
            node = node[part]
        assert C.to_jsonable(k.default) == node, k.key
    Config().validate()


def test_the_synthetic_class_bound_is_the_data_sets():
    from evo_snn.data import synthetic

    assert synthetic.MAX_CLASSES == C.SYNTHETIC_MAX_CLASSES
