"""``tiny_config``: the synthetic search space shrunk so that a whole search takes seconds.

A module of its own (not conftest.py) so that test files can import it: ``from conftest
import ...`` is ambiguous once tests/data/conftest.py is collected too."""

from __future__ import annotations

from evo_snn.config import Config, load_config


def tiny_config(**overrides: str) -> Config:
    """The synthetic search space shrunk so that a whole search takes seconds."""
    sets = [
        "data.synthetic_classes=3", "data.synthetic_train_per_class=16", "data.synthetic_test_per_class=6",
        "data.synthetic_size=8", "data.frames=4", "data.val_fraction=0.25",
        "model.channels=[4]", "teacher.epochs=2", "kd.epochs=0.5",
        "search.population=4", "search.generations=1",
    ] + [f"{k}={v}" for k, v in overrides.items()]
    return load_config("synthetic", overrides=sets)
