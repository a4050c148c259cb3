"""Search checkpoints: the state of a ``StructureSearch`` in ``<run>/checkpoints/``, for ``--resume``.

Layout (every file written atomically: tmp + ``os.replace``)::

  checkpoints/
    state.json              the pointer, replaced last: {"format", "gen", "dir", "written"}
    gen-0003-<token>/       one generation's search state (the one state.json names)
      search.json           StructureSearch.state_dict() minus genomes (its "results" are
                            {genome key: metrics}), plus "logbook" (generations.csv rows)
      torch_rng.pt          {"cpu": torch.get_rng_state()} (uint8 tensor)
    genomes/<key>/          genome.json + masks.npz (``Genome.save``) of every live genome
    students/<key>.pt       the run's ``StudentStore`` (``evo_snn.state.store``): the search puts each
                            student there as its result arrives; a checkpoint references them

A generation is written into ``checkpoints/tmp-<pid>/`` first, renamed to a fresh
``gen-<GGGG>-<token>/`` and only then does ``state.json`` switch to it; genome and
student files it needs are in place before that. So an interruption at any point
leaves ``state.json`` naming a complete checkpoint; a save that fails (e.g. a full
disk) also removes what it had written of the new generation folder. Files no longer referenced
(older generation folders, genomes that left the population and the archive, stale
tmp folders) are deleted after the switch, and the store is told that the checkpoint
needs only its own students (``StudentStore.retain``): the store deletes a student
once neither the search nor the last complete checkpoint needs it, which keeps the
folder bounded by the population plus the archive. Every ``.pt`` holds plain tensors
only and loads with ``torch.load(path, weights_only=True)``.

``save_sparse_state`` / ``load_sparse_state``: the sparse weight format written beside a
dense ``.pt`` (an export's ``student.sparse.npz``): packed masks plus the kept values,
reloading to identical weights.
"""

from __future__ import annotations

import json
import pickle
import os
import shutil
import uuid
import warnings
import zipfile
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from evo_snn.atomic import atomic_write_bytes, json_default
from evo_snn.structure.genome import Genome
from evo_snn.names import plain_name
from evo_snn.state.rundir import now_iso, save_state_dict
from evo_snn.state.store import StudentStore

CHECKPOINT_FORMAT = 1
POINTER = "state.json"
STUDENTS = "students"  # the run's StudentStore folder, inside checkpoints/
CHECKPOINT_OWNER = "checkpoint"  # its StudentStore.retain owner: the students of the last complete checkpoint


class CheckpointError(RuntimeError):
    """A run directory has no usable checkpoint (missing, incomplete or unreadable)."""


@dataclass
class Checkpoint:
    """A loaded checkpoint.

    gen: last completed generation; state: input for ``StructureSearch.load_state_dict``
    (with ``genomes`` {key: Genome} and ``results`` {key: metrics}); logbook: the
    generations.csv rows up to ``gen``; torch_rng: the driver's torch CPU RNG state (uint8);
    students: the run's ``StudentStore`` (``checkpoints/students/``), holding a student
    for every key of ``state['results']``.
    """

    gen: int
    state: dict
    logbook: list[dict]
    torch_rng: torch.Tensor | None
    students: StudentStore


def has_checkpoint(directory: str | Path) -> bool:
    """True when ``directory`` (a run's ``checkpoints/``) holds a ``state.json`` pointer."""
    return (Path(directory) / POINTER).is_file()


def student_store(directory: str | Path) -> StudentStore:
    """The run's ``StudentStore``: ``<directory>/students/`` (directory: the run's ``checkpoints/``)."""
    return StudentStore(Path(directory) / STUDENTS)


class CheckpointWriter:
    """Writes ``StructureSearch.state_dict()`` after each generation (see the module docstring).

    directory: the run's ``checkpoints/`` folder (created if needed). store: the run's
    ``student_store(directory)``, which the search fills; a checkpoint references its
    files and, once it is complete, lets the store delete the students no longer
    referenced. logbook: returns the generations.csv rows so far (saved with each
    checkpoint when the writer is called as a search callback). raises ValueError for
    a store that is not ``<directory>/students``.
    """

    def __init__(self, directory: str | Path, store: StudentStore, logbook: Callable[[], list[dict]] | None = None):
        self.root = Path(directory)
        self.genomes = self.root / "genomes"
        if store.directory is None or Path(store.directory).resolve() != (self.root / STUDENTS).resolve():
            raise ValueError(f"checkpoints in {self.root} reference students in {self.root / STUDENTS}, "
                             f"not in {store.directory or 'memory'}")
        self.store = store
        self.logbook = logbook or list

    def __call__(self, search) -> None:
        """Search callback: checkpoint ``search`` after the generation it just finished."""
        self.save(search.state_dict(), self.logbook())

    def adopt(self, ckpt: Checkpoint) -> None:
        """Continue after ``ckpt`` (loaded from this folder): its students stay until a newer
        checkpoint replaces it; students of an unfinished generation are deleted."""
        self.store.retain(CHECKPOINT_OWNER, ckpt.state["results"])

    def save(self, state: dict, logbook: list[dict] | tuple = ()) -> Path:
        """Write one generation's checkpoint; returns its folder. ``state``: a
        ``StructureSearch.state_dict()`` whose students are in the store; ``logbook``:
        the generations.csv rows so far. raises CheckpointError (before anything of this
        checkpoint counts) when a student is missing from the store; any other error (OSError
        of a full disk) is raised after removing the new folder, ``state.json`` still
        naming the previous checkpoint."""
        missing = [key for key in state["results"] if key not in self.store]
        if missing:
            raise CheckpointError(f"{self.store.directory} lacks the students of {missing}: not checkpointed")
        self.genomes.mkdir(parents=True, exist_ok=True)
        for key, genome in state["genomes"].items():  # a key fixes the masks: write once
            if not (self.genomes / key / "genome.json").is_file():
                genome.save(self.genomes / key)

        doc = {k: v for k, v in state.items() if k != "genomes"}
        doc["logbook"] = list(logbook)
        tmp = self.root / f"tmp-{os.getpid()}"
        name = f"gen-{state['gen']:04d}-{uuid.uuid4().hex[:8]}"
        try:
            if tmp.exists():
                shutil.rmtree(tmp)
            tmp.mkdir()
            atomic_write_bytes(tmp / "search.json", (json.dumps(doc, indent=1, default=json_default) + "\n").encode())
            save_state_dict(tmp / "torch_rng.pt", {"cpu": torch.get_rng_state()})
            os.replace(tmp, self.root / name)
            pointer = {"format": CHECKPOINT_FORMAT, "gen": state["gen"], "dir": name, "written": now_iso()}
            atomic_write_bytes(self.root / POINTER, (json.dumps(pointer, indent=2) + "\n").encode())
        except BaseException:  # the previous checkpoint stays the one state.json names; leave nothing of this one
            shutil.rmtree(tmp, ignore_errors=True)
            if self._pointed_dir() != name:
                shutil.rmtree(self.root / name, ignore_errors=True)
            raise
        self._collect(name, set(state["genomes"]))
        self.store.retain(CHECKPOINT_OWNER, state["results"])
        return self.root / name

    def _pointed_dir(self) -> str | None:
        """The folder name ``state.json`` names now (None when it is absent or unreadable)."""
        try:
            return json.loads((self.root / POINTER).read_text()).get("dir")
        except (OSError, ValueError, AttributeError):
            return None

    def _collect(self, current: str, genome_keys: set[str]) -> None:
        """Delete the generation folders and genomes the checkpoint named ``current`` does not
        reference, and tmp files of the pointer left by an interrupted write."""
        for p in self.root.iterdir():
            if p.is_dir() and (p.name.startswith("gen-") or p.name.startswith("tmp-")) and p.name != current:
                shutil.rmtree(p, ignore_errors=True)
            elif p.is_file() and p.name.startswith(f"{POINTER}.tmp-"):
                p.unlink(missing_ok=True)
        for p in self.genomes.iterdir():
            if p.name in genome_keys:
                for tmp in p.glob("*.tmp-*"):  # left by an interrupted Genome.save
                    tmp.unlink(missing_ok=True)
                continue
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)


def load_checkpoint(directory: str | Path, verify_students: bool = True) -> Checkpoint:
    """Read the checkpoint that ``<directory>/state.json`` names.

    The students stay on disk (``Checkpoint.students``); each referenced one must be
    there, load as a state_dict of tensors and have the same keys and shapes as the
    others (a truncated or replaced student file is refused, named); ``verify_students=False``
    checks only that they exist (an export reads just the member it exports). Raises CheckpointError naming the file at fault (no pointer, a missing,
    truncated or unreadable file, a pointer and a search state of different
    generations, a genome that does not match its key).
    """
    root = Path(directory)
    if not has_checkpoint(root):
        raise CheckpointError(f"{root.parent} has no checkpoints/{POINTER}: nothing to resume "
                              "(only runs started by this version, after generation 0, can be resumed)")
    students = student_store(root)
    current = root / POINTER  # the file being read, for the error message
    try:
        pointer = _read_pointer(root)
        if pointer.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointError(f"{current}: format {pointer.get('format')!r}, expected {CHECKPOINT_FORMAT}")
        folder = root / plain_name(pointer["dir"], "checkpoint folder", current)
        current = folder / "search.json"
        doc = _read_search_doc(current, pointer.get("gen"), root / POINTER)
        gen = int(doc["gen"])
        keys = {rec["genome_key"] for rec in doc["population"] + doc["archive"]}
        genomes = {}
        for key in sorted(keys):
            current = root / "genomes" / key
            genomes[key] = Genome.load(current)
        signatures = {}  # every stored student is a state_dict of the same net (D4 of issue 27)
        for key in sorted(doc["results"]):
            current = students.path(key)
            if key not in students:
                raise FileNotFoundError("not found")
            if not verify_students:
                continue
            signatures[current] = _signature(students.get(key))
        if signatures:
            common = Counter(signatures.values()).most_common(1)[0][0]
            for current, sig in signatures.items():
                if sig != common:
                    raise ValueError(f"its tensors ({len(sig)}) differ from those of the other students "
                                     f"({len(common)}): the file was replaced")
        current = folder / "torch_rng.pt"
        torch_rng = _load_pt(current)["cpu"] if current.is_file() else None
        if torch_rng is None:
            warnings.warn(f"{current} is missing: the driver's torch RNG is not restored, so the rest of this run "
                          "is not the uninterrupted run's exactly", stacklevel=2)
    except CheckpointError:
        raise
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RuntimeError, EOFError, zipfile.BadZipFile,
            zlib.error, pickle.UnpicklingError) as e:
        raise CheckpointError(f"checkpoint in {root} is incomplete or unreadable: {current}: {type(e).__name__}: {e} "
                              f"(it cannot be resumed; start a new run, --teacher {root.parent / 'teacher' / 'teacher.pt'} "
                              "reuses its teacher)") from e
    logbook = doc.pop("logbook", [])
    state = {**doc, "genomes": genomes}
    return Checkpoint(gen, state, logbook, torch_rng, students)


def _read_search_doc(path: Path, pointer_gen, pointer_path: Path) -> dict:
    """A generation folder's ``search.json`` (at ``path``), its uids and genome keys checked
    as plain names (``names.plain_name``) and its generation against ``pointer_gen``, the
    one ``state.json`` (at ``pointer_path``) names; raises what the read or a check raises
    (OSError, ValueError, KeyError, ...)."""
    doc = json.loads(path.read_text())
    for rec in doc["population"] + doc["archive"]:
        plain_name(rec["genome_key"], "genome key", path)
        plain_name(rec["uid"], "uid", path)
    for key in doc["results"]:
        plain_name(key, "genome key", path)
    gen = int(doc["gen"])
    if gen != pointer_gen:
        raise ValueError(f"generation {gen}, but {pointer_path} says {pointer_gen!r}")
    return doc


def _signature(state) -> tuple:
    """A stored student's ``(name, shape)`` pairs, sorted: the same for every student of
    one run (D4 of issue 27); raises ValueError when ``state`` is not a state_dict of tensors."""
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError("not a state_dict of tensors")
    return tuple(sorted((k, tuple(v.shape)) for k, v in state.items()))


def _read_pointer(root: Path) -> dict:
    """``state.json``, or, when it is not readable JSON (D9 of issue 27), a pointer to the one
    complete checkpoint folder beside it (its ``search.json`` readable), with a warning; the
    error of ``state.json`` is raised when there is not exactly one such folder."""
    path = root / POINTER
    try:
        pointer = json.loads(path.read_text())
        if not isinstance(pointer, dict):
            raise ValueError(f"a JSON {type(pointer).__name__}, expected an object")
        return pointer
    except (OSError, ValueError) as e:
        found = []
        for d in sorted(p for p in root.glob("gen-*") if p.is_dir()):
            try:
                doc = json.loads((d / "search.json").read_text())
                found.append({"format": CHECKPOINT_FORMAT, "gen": int(doc["gen"]), "dir": d.name})
            except (OSError, ValueError, KeyError, TypeError):
                continue
        if len(found) != 1:
            raise
        warnings.warn(f"{path} is not readable ({e}); resuming from the complete checkpoint {root / found[0]['dir']} "
                      f"(generation {found[0]['gen']})", stacklevel=3)
        return found[0]


def _load_pt(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


# ---------------------------------------------------------------- sparse weights
SPARSE_FORMAT = 1
SPARSE_SUFFIX = ".sparse.npz"


class SparseFormatError(ValueError):
    """A sparse weight file is malformed, or a state does not fit its masks; the message names the file or tensor."""


def save_sparse_state(path: str | Path, state: dict[str, torch.Tensor], masks: dict[str, np.ndarray]) -> int:
    """Write ``state`` (a state_dict) as packed masks plus non-zero values, atomically; returns the file size in bytes.

    masks: {layer name: bool array shaped like ``<layer>.weight``, True = kept} (a genome's
    ``mask_dict()``). For each masked weight the file holds ``packed/<key>`` (``np.packbits``
    of the flattened mask, 1 bit per weight), ``values/<key>`` (the kept weights in
    row-major order, the weight's dtype) and ``shape/<key>``; every other tensor is stored
    whole under ``dense/<key>``; ``keys`` keeps the state_dict order and ``format`` the
    version. A numpy ``.npz`` (zip, compressed) that loads with ``allow_pickle=False``.

    raises SparseFormatError when a masked weight has non-zero values where its mask
    prunes (the masks are not the ones the weights were pruned with), a mask's shape
    differs from its weight's, or a tensor's dtype has no numpy equivalent (bfloat16).
    """
    import io

    arrays: dict[str, np.ndarray] = {"format": np.array(SPARSE_FORMAT), "keys": np.array(list(state), dtype=str)}
    masked = {f"{name}.weight": np.asarray(m, dtype=bool) for name, m in masks.items()}
    missing = sorted(set(masked) - set(state))
    if missing:
        raise SparseFormatError(f"masks name {missing}, which the state_dict lacks")
    for key, t in state.items():
        t = t.detach().cpu()
        if t.dtype == torch.bfloat16:
            raise SparseFormatError(f"{key}: bfloat16 has no numpy dtype; convert the state to float32 first")
        a = t.numpy()
        if key in masked:
            m = masked[key]
            if m.shape != a.shape:
                raise SparseFormatError(f"{key}: mask shape {m.shape} differs from the weight's {a.shape}")
            if np.any(a[~m] != 0):
                raise SparseFormatError(f"{key}: {int(np.count_nonzero(a[~m]))} pruned weights are not zero; "
                                        "save with the masks the weights were pruned with")
            arrays[f"packed/{key}"] = np.packbits(m.ravel())
            arrays[f"values/{key}"] = a[m]
            arrays[f"shape/{key}"] = np.array(a.shape, dtype=np.int64)
        else:
            arrays[f"dense/{key}"] = a
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    atomic_write_bytes(Path(path), buf.getvalue())
    return len(buf.getvalue())


def load_sparse_state(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, np.ndarray]]:
    """Inverse of ``save_sparse_state``: (state_dict of dense CPU tensors, {layer name: bool mask}).

    The weights equal the saved ones exactly (zeros where the masks prune). raises
    SparseFormatError naming the file for an unknown format version, a missing or
    inconsistent entry, or a file that is not a readable ``.npz``.
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            names = set(z.files)
            if "format" not in names or int(z["format"]) != SPARSE_FORMAT:
                raise SparseFormatError(f"{path}: not a sparse weight file of format {SPARSE_FORMAT}")
            state, masks = {}, {}
            for key in z["keys"].tolist():
                if f"dense/{key}" in names:
                    state[key] = torch.from_numpy(np.array(z[f"dense/{key}"]))
                    continue
                shape = tuple(int(s) for s in z[f"shape/{key}"])
                n = int(np.prod(shape))
                m = np.unpackbits(z[f"packed/{key}"], count=n).astype(bool)
                values = z[f"values/{key}"]
                if int(m.sum()) != values.size:
                    raise SparseFormatError(f"{path}: {key} has {values.size} values for {int(m.sum())} kept weights")
                w = np.zeros(n, dtype=values.dtype)
                w[m] = values
                state[key] = torch.from_numpy(w.reshape(shape))
                masks[key[: -len(".weight")]] = m.reshape(shape)
    except SparseFormatError:
        raise
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        raise SparseFormatError(f"{path}: not a readable sparse weight file ({type(e).__name__}: {e})") from e
    return state, masks
