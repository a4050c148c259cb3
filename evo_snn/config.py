"""Run configuration: frozen dataclasses loaded from a search-space YAML, checked by a schema.

A config is pure data (no torch). Every key is declared once, in its section's dataclass:
its type, range and description (``key(...)``, a pydantic ``Field``) and its default.
pydantic validates a whole config against those declarations (``Config.from_dict``,
``Config.validate``); a bad value is one ``ConfigError`` line naming the key, the value and
what is allowed, e.g. ``kd.epochs must be a finite number > 0, got nan``. Unknown keys are
refused, so a typo in a YAML file or in ``--set`` fails loudly instead of being ignored;
NaN and infinity are refused in every number. ``--set section.key=value`` parses
``value`` as YAML (``0.5`` -> float, ``[8, 16]`` -> list, ``null`` -> None).
docs/configuration.md is generated from the schema (``config_keys``).

The sections stay standard frozen dataclasses (``dataclasses.replace``, ``asdict`` and
``fields`` work as ever, and building one checks nothing: ``validate`` does). The few rules
that tie keys together are explicit checks in ``Config.validate``.

This module holds the whole ``Config``, YAML loading (``load_config``), ``--set`` overrides
(``Config.override``) and a run's config.json (``read_run_config``); it re-exports the
parts it is built from, so ``evo_snn.config`` is the one import: the schema's machinery
(``evo_snn.schema``), the tables of choices (``evo_snn.choices``) and the sections
(``evo_snn.net_sections``: data, model, teacher, train; ``evo_snn.search_sections``:
genome, kd, search, energy, faults).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import yaml

from evo_snn.atomic import to_jsonable
from evo_snn.choices import (  # noqa: F401  (re-exported: the tables of choices)
    AMP_MODES, FAULT_KINDS, FINETUNE_SHARE_SCREENED, INIT_ALLOCATIONS, KD_MODES, MODES, NEURON_BACKENDS, OBJECTIVES,
    RESIZE_FILTERS, SCREENS, SPLIT_MODES, SYNTHETIC_MAX_CLASSES, KDMode, kd_mode)
from evo_snn.net_sections import DataConfig, ModelConfig, TeacherConfig, TrainConfig
from evo_snn.schema import (  # noqa: F401  (re-exported: the schema's machinery)
    SCHEMA, SEED_BOUND, ConfigError, ConfigKey, Int, Num, OneOf, PosInt, Str, allowed, key, schema_keys, validated)
from evo_snn.search_sections import EnergyConfig, FaultsConfig, GenomeConfig, KDConfig, SearchConfig

SEARCH_SPACES_DIR = Path(__file__).resolve().parent.parent / "search_spaces"


@dataclass(frozen=True)
class Config:
    """A run's whole configuration: the data set and one dataclass per section."""

    __pydantic_config__ = SCHEMA

    dataset: Annotated[str, key(
        "the data set (``--dataset``): synthetic, nmnist, dvs_gesture, cifar10, cifar100, tiny_imagenet, "
        "image_folder; selects search_spaces/<dataset>.yaml.")] = "synthetic"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    genome: GenomeConfig = field(default_factory=GenomeConfig)
    kd: KDConfig = field(default_factory=KDConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    faults: FaultsConfig = field(default_factory=FaultsConfig)
    energy: EnergyConfig = field(default_factory=EnergyConfig)

    def split_seed(self) -> int:
        """The seed of the train/validation split: ``data.split_seed``, or ``search.seed`` when null."""
        return int(self.search.seed if self.data.split_seed is None else self.data.split_seed)

    # ------------------------------------------------------------------ I/O
    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Config":
        """Build from nested dicts (a YAML file, a run's config.json), checked against the
        schema; raises ConfigError (one line) on an unknown key or a bad value."""
        return validated(cls, d, "")

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable(dataclasses.asdict(self))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def override(self, assignments: list[str]) -> "Config":
        """Apply ``section.key=value`` strings; raises ConfigError naming the bad one."""
        d = self.to_dict()
        for item in assignments:
            if "=" not in item:
                raise ConfigError(f"--set {item!r}: expected key=value, e.g. kd.alpha=0.5")
            name, raw = item.split("=", 1)
            if name.strip() == "kd":  # --set kd=MODE is shorthand for kd.mode=MODE
                name = "kd.mode"
            parts = name.strip().split(".")
            node = d
            for p in parts[:-1]:
                if not isinstance(node.get(p), dict):
                    raise ConfigError(f"--set {item!r}: unknown section {p!r}; known: {sorted(k for k, v in node.items() if isinstance(v, dict))}")
                node = node[p]
            if parts[-1] not in node or isinstance(node[parts[-1]], dict):
                raise ConfigError(f"--set {item!r}: unknown key {name!r}; known: {sorted(node)}")
            node[parts[-1]] = yaml.safe_load(raw)
        return Config.from_dict(d)

    def validate(self) -> "Config":
        """Check every value against the schema (pydantic), then the rules that tie keys
        together; returns self or raises ConfigError."""
        validated(Config, self.to_dict(), "")
        g, s, f = self.genome, self.search, self.faults
        checks = [
            (g.ratio_min <= g.ratio_max,
             f"genome.ratio_min must be <= genome.ratio_max, got {g.ratio_min} > {g.ratio_max}"),
            (f.fail_rate == 0 or s.workers > 1 or set(f.kinds) <= {"raise"},
             "faults.kinds 'exit' and 'hang' need Ray workers (search.workers > 1); "
             "with one worker use --set faults.kinds=[raise]"),
            (f.fail_rate == 0 or "hang" not in f.kinds or s.eval_timeout_s > 0,
             "faults.kinds 'hang' needs search.eval_timeout_s > 0 (a hung evaluation is ended by the timeout)"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ConfigError(msg)
        self._check_objectives()
        return self

    def _check_objectives(self) -> None:
        """search.objectives against OBJECTIVES and search.hv_reference; raises ConfigError."""
        objs, ref = list(self.search.objectives), self.search.hv_reference
        unknown = [o for o in objs if o not in OBJECTIVES]
        checks = [
            (not unknown, f"search.objectives: unknown {unknown}; known: {list(OBJECTIVES)}"),
            (len(objs) >= 2 and len(set(objs)) == len(objs) and "accuracy" in objs,
             f"search.objectives must name 2 or more distinct objectives including 'accuracy', got {objs}"),
            (all(o in ref for o in objs), f"search.hv_reference lacks {[o for o in objs if o not in ref]}"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ConfigError(msg)



def config_keys() -> list[ConfigKey]:
    """Every key of the schema, in declaration order: top-level keys and each section's."""
    return schema_keys(Config)


def read_run_config(path: str | Path, generations: int | None = None, workers: int | None = None,
                    threads: int | None = None) -> Config:
    """The resolved config of a run (its config.json), with ``search.generations`` /
    ``search.workers`` / ``train.threads`` replaced where given (``--resume``,
    ``evo_snn.analysis.baselines``); raises ConfigError naming the file."""
    path = Path(path)
    try:
        cfg = Config.from_dict(json.loads(path.read_text()))
        search = cfg.search
        if generations is not None:
            search = dataclasses.replace(search, generations=generations)
        if workers is not None:
            search = dataclasses.replace(search, workers=workers)
        cfg = dataclasses.replace(cfg, search=search)
        if threads is not None:
            cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, threads=threads))
        return cfg.validate()
    except FileNotFoundError as e:
        raise ConfigError(f"{path} not found; RUN_DIR must be a run directory of evo_snn.search.run") from e
    except (OSError, ValueError) as e:  # ConfigError and json.JSONDecodeError are ValueErrors
        raise ConfigError(f"{path}: {e}") from e


def load_config(dataset: str, config_file: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults from ``search_spaces/<dataset>.yaml`` (or ``config_file``), then ``overrides``.

    raises ConfigError (unknown key, bad value, missing file).
    """
    path = Path(config_file) if config_file else SEARCH_SPACES_DIR / f"{dataset}.yaml"
    if not path.is_file():
        raise ConfigError(f"config file {path} not found; pass --config FILE or add search_spaces/{dataset}.yaml")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections")
    raw = dict(raw)
    raw["dataset"] = dataset
    try:
        cfg = Config.from_dict(raw)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from e
    return cfg.override(overrides or []).validate()
