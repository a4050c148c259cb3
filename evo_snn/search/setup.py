"""What a search does before its first stage writes anything big: the config (search
space YAML + ``--set`` + flags), the data set (``data_stage``: loaded, and the model
checked against it, ``check_model``), and a new run directory, locked, with config.json
and manifest.json (``new_search``, for ``python -m evo_snn.search`` without ``--resume``;
``evo_snn.search.resume`` prepares a continued run).

Every failure here is a usage error: one line on stderr and exit 2 (``EXIT_USAGE``),
before any output is written where it can be (a bad config, model or data set, a missing
``--teacher``, an output directory that is not empty).
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path
from typing import Callable

import torch
from tqdm.auto import tqdm

from evo_snn.cli import show_progress
from evo_snn.config import ConfigError, load_config
from evo_snn.data import DatasetFormatError, load_splits
from evo_snn.evaluation.fitness import default_device
from evo_snn.models import build_model, check_backend_request, select_backend
from evo_snn.search.options import EXIT_USAGE, cli_overrides
from evo_snn.search.supervise import announce
from evo_snn.state.rundir import RunDir, RunDirError
from evo_snn.structure.pruning import prunable_layers
from evo_snn.training.train import check_hot_path


def check_model(cfg, splits, device: torch.device | None = None) -> None:
    """Build the configured model once so that a bad model.* or genome.prunable fails
    before any output is written, and check that ``model.neuron_backend`` and ``train.amp``
    can run on ``device`` (default: the run's device); raises ConfigError."""
    try:
        net = build_model(cfg.model, splits.frame_shape, splits.num_classes)
        prunable_layers(net, cfg.genome.prunable)
    except ValueError as e:
        raise ConfigError(f"model {cfg.model.name!r} with input {list(splits.frame_shape)}: {e}") from e
    device = device or default_device()
    check_hot_path(cfg.train, device)
    check_backend_request(cfg.model.neuron_backend, device)
    if device.type == "cuda" and cfg.model.neuron_backend != "auto":
        select_backend(net.to(device), device, cfg.model.neuron_backend)  # imports and runs here, or ConfigError


def data_stage(cfg, data_root: str | None, progress: bool):
    """The data stage: the splits of ``cfg.dataset`` from ``data_root`` (None: embedded or
    default data), split with the run's split seed, and ``check_model`` against them.
    Raises ConfigError or DatasetFormatError."""
    splits = load_splits(cfg.dataset, data_root, cfg.data, seed=cfg.split_seed(), progress=progress)
    check_model(cfg, splits)
    return splits


def new_search(args, argv: list[str], execute: Callable[..., int]) -> int:
    """A new run: config, data (``data_stage``), a new run directory (``--out``, or
    ``runs/<timestamp>-<dataset>-<tag>``), locked, with config.json (the data set's class
    names included) and manifest.json ('running', ``argv``); then ``execute(run, cfg,
    splits, device, args)`` (the stages, ``evo_snn.search.run._execute``), whose exit code
    it returns. Exit 2 with a one-line error for a bad config, model or data set, a
    missing ``--teacher`` file or an unusable output directory."""
    try:
        cfg = load_config(args.dataset or "synthetic", args.config, list(args.overrides) + cli_overrides(args))
        splits = data_stage(cfg, args.data_root, show_progress(args))
        cfg = replace(cfg, data=replace(cfg.data, classes=splits.class_names or ()))  # into config.json
        if args.teacher is not None and not Path(args.teacher).is_file():  # before any output is written
            raise RunDirError(f"--teacher {args.teacher}: no such file; pass the teacher/teacher.pt of an earlier run")
        run = RunDir.create(args.out, cfg.dataset, cfg.search.tag)
        announce(run.path)
        run.lock()  # one writer per run directory (released by _execute, or when this process ends)
    except (ConfigError, DatasetFormatError, RunDirError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE

    device = default_device()
    n_evals = cfg.search.population * (cfg.search.generations + 1)
    if n_evals > 2000:  # a typo in --population or --generations should not run for days unnoticed
        tqdm.write(f"note: population {cfg.search.population} x {cfg.search.generations + 1} generations = {n_evals} "
                   "genome evaluations; the generation lines give the ETA after generation 0 (Ctrl-C stops, --resume continues)")
    run.write_json("config.json", cfg.to_dict())
    run.start(argv, cfg.search.seed, str(device), data_root=str(Path(args.data_root).resolve()) if args.data_root else None)
    tqdm.write(f"run directory: {run.path}")
    return execute(run, cfg, splits, device, args)
