"""The run's student weights: one owner, keyed by genome key.

Every successful evaluation trains a student; ``StructureSearch`` puts its state_dict
here the moment the result arrives and keeps only the metrics itself. A genome key
names the genome's full-fidelity student; a multi-fidelity search keeps a rung-0
student (trained for part of the budget) under ``<genome key>.rung0``
(``fidelity.student_key``) until the end of its generation, so the two never mix. Weight
inheritance (``search.inherit_weights``), the informed mask mutation
(``genome.mask_mutation='magnitude'``), the export and the baselines read students
back through ``get``.

Disk-backed (``directory`` = the run's ``checkpoints/students/``): ``put`` writes
``<directory>/<key>.pt`` atomically (``rundir.save_state_dict``: tmp + fsync +
``os.replace``; plain tensors, loads with ``torch.load(path, weights_only=True)``),
``get`` reads it onto the CPU. This is the layout checkpoints reference, so a
checkpoint writes no student itself. In memory (``directory=None``, tests): a dict.

Deletion is by declared need: each owner (``"search"``: its live genomes;
``"checkpoint"``: the genomes of the last complete checkpoint; ``"recovered"``: on
resume, the evaluations that finished after the checkpoint, until they are reused)
states the keys it still needs with ``retain(owner, keys)`` (or ``need``, which deletes
nothing), and a student no owner needs is deleted.
So a checkpoint's students stay on disk until the next checkpoint has replaced it,
and the folder stays bounded by the population plus the archive.

torch is imported only where a file is written or read: importing this module (as
``nsga`` does) loads no torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from evo_snn.names import plain_name

SUFFIX = ".pt"


class StudentStore:
    """Student state_dicts ``{parameter name: tensor}`` keyed by genome key (``Genome.key``).

    directory: folder of ``<key>.pt`` files (created on the first ``put``), or None
    for an in-memory store. An existing folder's files are the store's content (a
    resumed run reads the students its checkpoint references).
    """

    def __init__(self, directory: str | Path | None = None):
        self.directory = None if directory is None else Path(directory)
        self._memory: dict[str, dict] = {}
        self._needs: dict[str, set[str]] = {}

    def path(self, key: str) -> Path:
        """``<directory>/<key>.pt``; raises ValueError for an in-memory store and
        ``UnsafeNameError`` for a key that is not a plain name (``evo_snn.names``)."""
        if self.directory is None:
            raise ValueError("an in-memory StudentStore has no files")
        return self.directory / f"{plain_name(key, 'genome key', self.directory)}{SUFFIX}"

    def put(self, key: str, state: dict | None) -> None:
        """Store ``state`` (tensors, any device; written as CPU tensors) as the student of ``key``,
        replacing an earlier one. None stores nothing: a result reused on ``--resume``
        whose student had already been deleted, because no owner needed it any more
        (its genome had left the population and the archive; the same results select
        the same genomes, so it is not needed again)."""
        if state is None:
            return
        if self.directory is None:
            self._memory[key] = state
            return
        from evo_snn.state.rundir import save_state_dict  # torch only where a file is written

        save_state_dict(self.path(key), state)

    def get(self, key: str) -> dict:
        """The student of ``key`` (CPU tensors for a disk store); raises KeyError when absent."""
        if self.directory is None:
            return self._memory[key]
        path = self.path(key)
        if not path.is_file():
            raise KeyError(key)
        import torch

        return torch.load(path, map_location="cpu", weights_only=True)

    def __contains__(self, key: str) -> bool:
        if self.directory is None:
            return key in self._memory
        return self.path(key).is_file()

    def keys(self) -> set[str]:
        """The genome keys with a stored student."""
        if self.directory is None:
            return set(self._memory)
        if not self.directory.is_dir():
            return set()
        return {p.stem for p in self.directory.iterdir() if p.is_file() and p.suffix == SUFFIX}

    def need(self, owner: str, keys: Iterable[str]) -> None:
        """Declare that ``owner`` needs the students of ``keys`` (replacing what it declared
        before) without deleting anything now; the next ``retain`` keeps them. A resumed run
        declares the students of the evaluations that finished after its checkpoint, so that
        adopting the checkpoint does not delete them before they are reused."""
        self._needs[owner] = set(keys)

    def release(self, owner: str) -> None:
        """``owner`` needs nothing any more; nothing is deleted now (the next ``retain`` may)."""
        self._needs.pop(owner, None)

    def retain(self, owner: str, keys: Iterable[str]) -> None:
        """``owner`` needs the students of ``keys`` only (replacing what it declared before);
        delete every student no owner needs, and, on disk, any other file in the folder
        (e.g. ``*.tmp-<pid>`` left by an interrupted write)."""
        self._needs[owner] = set(keys)
        needed = set().union(*self._needs.values())
        if self.directory is None:
            self._memory = {k: v for k, v in self._memory.items() if k in needed}
            return
        if not self.directory.is_dir():
            return
        for p in self.directory.iterdir():
            if p.suffix != SUFFIX or p.stem not in needed:
                p.unlink(missing_ok=True)
