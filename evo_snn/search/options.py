"""The command line of ``python -m evo_snn.search`` (``evo_snn.search.run``): its parser
(``build_parser``), the flags that ``--resume`` refuses (``RESUME_REFUSED``), the flags
that are config keys (``cli_overrides``), and the exit code of a usage error
(``EXIT_USAGE``: a refused flag, a bad config, a run directory or data set that cannot
be used; the error is one line on stderr).
"""

from __future__ import annotations

import argparse

from evo_snn.data import DATASETS
from evo_snn.models import model_names

EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m evo_snn.search`` (what ``--help`` prints)."""
    p = argparse.ArgumentParser(
        prog="python -m evo_snn.search",
        description="Search sparse structure of a spiking neural network with NSGA-II: each genome's masks "
        "prune a dense teacher (the sparse teacher), which KD-trains a student; objectives are the student's "
        "validation accuracy and sparsity. Leaves a run directory with the Pareto front and exported checkpoints.",
    )
    p.add_argument("--dataset", choices=DATASETS, default=None,
                   help="data set (default: synthetic, embedded, needs no files)")
    p.add_argument("--data-root", default=None, help="folder of the data set (N-MNIST: holds Train/ and Test/; "
                   "DVS128 Gesture: the DvsGesture folder with the .aedat files and trials lists; CIFAR: "
                   "cifar-10-batches-py/ or cifar-100-python/ or their parent; Tiny-ImageNet: tiny-imagenet-200/)")
    p.add_argument("--config", default=None, help="search-space YAML (default: search_spaces/<dataset>.yaml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set kd.alpha=0.5 --set data.frames=16 (repeatable)")
    p.add_argument("--model", choices=model_names(), default=None,
                   help="model from the registry (model.name; default: the search space's)")
    p.add_argument("--population", type=int, default=None, help="population size, a multiple of 4 (search.population)")
    p.add_argument("--generations", type=int, default=None, help="generations after the initial one (search.generations)")
    p.add_argument("--workers", type=int, default=None, help="parallel evaluations; 1 = serial in this process, "
                   ">1 = local Ray actors (search.workers)")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="torch CPU threads of the driver and of each worker (train.threads; default: fitted to the "
                   "usable CPUs, the workers and the cores other processes keep busy, re-checked while training)")
    p.add_argument("--address", default=None, help="address of an existing Ray cluster (e.g. 'auto'); "
                   "evaluations then run on its workers")
    p.add_argument("--seed", type=int, default=None, help="root seed of the run (search.seed)")
    p.add_argument("--teacher", default=None, help="dense teacher state_dict (teacher/teacher.pt of an earlier run) "
                   "to load instead of training one")
    p.add_argument("--out", default=None, help="run directory (default: runs/<timestamp>-<dataset>-<tag>)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (per-generation lines remain); "
                   "bars are shown only when stderr is a terminal unless --progress is given")
    p.add_argument("--progress", action="store_true", help="progress bars even when stderr is not a terminal")
    p.add_argument("--resume", metavar="RUN_DIR", default=None,
                   help="continue the run in RUN_DIR from its last checkpoint (after an interruption, a crash, or to "
                   "extend a completed run with a larger --generations), with its own config.json, teacher and "
                   "data root; only --generations, --workers, --threads, --address, --data-root and --no-progress may be given")
    return p


# flags that would change the search space, the data or the output of a run: refused with --resume
RESUME_REFUSED = {"dataset": "--dataset", "config": "--config", "overrides": "--set", "seed": "--seed", "out": "--out",
                  "model": "--model", "population": "--population", "teacher": "--teacher"}


def cli_overrides(args) -> list[str]:
    """The ``--set`` overrides (KEY=VALUE) of the flags that set a config key, e.g. ``--population 8`` -> search.population=8."""
    flags = {"model": "model.name", "population": "search.population", "generations": "search.generations",
             "workers": "search.workers", "seed": "search.seed", "threads": "train.threads"}
    return [f"{key}={getattr(args, name)}" for name, key in flags.items() if getattr(args, name) is not None]
