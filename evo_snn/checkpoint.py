"""Search checkpoints: the state of a ``StructureSearch`` in ``<run>/checkpoints/``, for ``--resume``.

Layout (every file written atomically: tmp + ``os.replace``)::

  checkpoints/
    state.json              the pointer, replaced last: {"format", "gen", "dir", "written"}
    gen-0003-<token>/       one generation's search state (the one state.json names)
      search.json           StructureSearch.state_dict() minus genomes/students, plus
                            "results" ({genome key: metrics}) and "logbook" (generations.csv rows)
      torch_rng.pt          {"cpu": torch.get_rng_state()} (uint8 tensor)
    genomes/<key>/          genome.json + masks.npz (``Genome.save``) of every live genome
    students/<key>.pt       student state_dict of every live genome with a result

A generation is written into ``checkpoints/tmp-<pid>/`` first, renamed to a fresh
``gen-<GGGG>-<token>/`` and only then does ``state.json`` switch to it; genome and
student files it needs are in place before that. So an interruption at any point
leaves ``state.json`` naming a complete checkpoint. Files no longer referenced
(older generation folders, genomes and students that left the population and the
archive, stale tmp folders) are deleted after the switch, which keeps the folder
bounded by the population plus the archive. Every ``.pt`` holds plain tensors only
and loads with ``torch.load(path, weights_only=True)``.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import torch

from .atomic import atomic_write_bytes, json_default
from .genome import Genome
from .outcome import FitnessResult
from .rundir import now_iso, save_state_dict

CHECKPOINT_FORMAT = 1
POINTER = "state.json"


class CheckpointError(RuntimeError):
    """A run directory has no usable checkpoint (missing, incomplete or unreadable)."""


@dataclass
class Checkpoint:
    """A loaded checkpoint.

    gen: last completed generation; state: input for ``StructureSearch.load_state_dict``
    (with ``genomes`` {key: Genome} and ``results`` {key: FitnessResult}); logbook: the
    generations.csv rows up to ``gen``; torch_rng: the driver's torch CPU RNG state (uint8).
    """

    gen: int
    state: dict
    logbook: list[dict]
    torch_rng: torch.Tensor | None


def has_checkpoint(directory: str | Path) -> bool:
    """True when ``directory`` (a run's ``checkpoints/``) holds a ``state.json`` pointer."""
    return (Path(directory) / POINTER).is_file()


class CheckpointWriter:
    """Writes ``StructureSearch.state_dict()`` after each generation (see the module docstring).

    directory: the run's ``checkpoints/`` folder (created if needed).
    """

    def __init__(self, directory: str | Path):
        self.root = Path(directory)
        self.genomes = self.root / "genomes"
        self.students = self.root / "students"
        self._written: dict[str, FitnessResult] = {}  # key -> result whose student file is on disk

    def adopt(self, results: dict[str, FitnessResult]) -> None:
        """Mark the students of ``results`` (loaded from this folder) as already written."""
        self._written = dict(results)

    def save(self, state: dict, logbook: list[dict] | tuple = ()) -> Path:
        """Write one generation's checkpoint; returns its folder. ``state``: a
        ``StructureSearch.state_dict()``; ``logbook``: the generations.csv rows so far."""
        self.genomes.mkdir(parents=True, exist_ok=True)
        self.students.mkdir(parents=True, exist_ok=True)
        for key, genome in state["genomes"].items():  # a key fixes the masks: write once
            if not (self.genomes / key / "genome.json").is_file():
                genome.save(self.genomes / key)
        for key, res in state["results"].items():
            path = self.students / f"{key}.pt"
            if self._written.get(key) is not res or not path.is_file():
                save_state_dict(path, res.student_state)
                self._written[key] = res

        doc = {k: v for k, v in state.items() if k not in ("genomes", "results")}
        doc["results"] = {key: res.metrics for key, res in state["results"].items()}
        doc["logbook"] = list(logbook)
        tmp = self.root / f"tmp-{os.getpid()}"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        atomic_write_bytes(tmp / "search.json", (json.dumps(doc, indent=1, default=json_default) + "\n").encode())
        save_state_dict(tmp / "torch_rng.pt", {"cpu": torch.get_rng_state()})
        name = f"gen-{state['gen']:04d}-{uuid.uuid4().hex[:8]}"
        os.replace(tmp, self.root / name)
        pointer = {"format": CHECKPOINT_FORMAT, "gen": state["gen"], "dir": name, "written": now_iso()}
        atomic_write_bytes(self.root / POINTER, (json.dumps(pointer, indent=2) + "\n").encode())
        self._collect(name, set(state["genomes"]), set(state["results"]))
        return self.root / name

    def _collect(self, current: str, genome_keys: set[str], student_keys: set[str]) -> None:
        """Delete what the checkpoint named ``current`` does not reference."""
        for p in self.root.iterdir():
            if p.is_dir() and (p.name.startswith("gen-") or p.name.startswith("tmp-")) and p.name != current:
                shutil.rmtree(p, ignore_errors=True)
        for p in self.genomes.iterdir():
            if p.name in genome_keys:
                for tmp in p.glob("*.tmp-*"):  # left by an interrupted Genome.save
                    tmp.unlink(missing_ok=True)
                continue
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
        for p in self.students.iterdir():
            if p.suffix != ".pt" or p.stem not in student_keys:
                p.unlink(missing_ok=True)
                self._written.pop(p.stem, None)


def load_checkpoint(directory: str | Path) -> Checkpoint:
    """Read the checkpoint that ``<directory>/state.json`` names.

    Students load with ``torch.load(weights_only=True)`` onto the CPU. Raises
    CheckpointError (no pointer, a missing or unreadable file, a genome that does not
    match its key).
    """
    root = Path(directory)
    if not has_checkpoint(root):
        raise CheckpointError(f"{root.parent} has no checkpoints/{POINTER}: nothing to resume "
                              "(only runs started by this version, after generation 0, can be resumed)")
    try:
        pointer = json.loads((root / POINTER).read_text())
        if pointer.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointError(f"{root / POINTER}: format {pointer.get('format')!r}, expected {CHECKPOINT_FORMAT}")
        folder = root / pointer["dir"]
        doc = json.loads((folder / "search.json").read_text())
        keys = {rec["genome_key"] for rec in doc["population"] + doc["archive"]}
        genomes = {key: Genome.load(root / "genomes" / key) for key in sorted(keys)}
        results = {key: FitnessResult(metrics, _load_pt(root / "students" / f"{key}.pt"))
                   for key, metrics in doc.pop("results").items()}
        rng_file = folder / "torch_rng.pt"
        torch_rng = _load_pt(rng_file)["cpu"] if rng_file.is_file() else None
    except CheckpointError:
        raise
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        raise CheckpointError(f"checkpoint in {root} is incomplete or unreadable: {type(e).__name__}: {e}") from e
    logbook = doc.pop("logbook", [])
    state = {**doc, "genomes": genomes, "results": results}
    return Checkpoint(int(doc["gen"]), state, logbook, torch_rng)


def _load_pt(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)
