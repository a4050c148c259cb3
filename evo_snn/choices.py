"""The tables of choices of the run configuration: the names a key may take, one table
each, read by the sections that declare those keys (``evo_snn.net_sections``,
``evo_snn.search_sections``) and by the modules that act on them (named next to each
table).

Pure data, no torch: every layer may import it (``evo_snn.config`` re-exports all of it).
``OBJECTIVES`` gives each search objective's fitness key, DEAP weight and worst value;
``MODES`` is the one table of KD variants (``KDMode``), ``kd_mode`` raises ValueError for
an unknown name.
"""

from __future__ import annotations

from dataclasses import dataclass

SPLIT_MODES = ("number", "time")  # how events are cut into frames (evo_snn.data.events)
RESIZE_FILTERS = ("nearest", "box", "bilinear", "hamming", "bicubic", "lanczos")
SYNTHETIC_MAX_CLASSES = 8  # evo_snn.data.synthetic: K directions of motion
NEURON_BACKENDS = ("auto", "torch", "cuda", "triton", "cupy")  # model.neuron_backend (evo_snn.models.neurons)
INIT_ALLOCATIONS = ("global", "uniform", "erk", "lamp")  # genome.init_allocations (evo_snn.structure.allocation rules)
AMP_MODES = ("none", "bf16", "fp16")  # train.amp (evo_snn.training.train.autocast)
SCREENS = ("none", "nll", "kl", "bn_accuracy")  # search.screen (evo_snn.evaluation.screening)
FINETUNE_SHARE_SCREENED = 0.85  # search.finetune_share's default with search.screen on
FAULT_KINDS = ("raise", "exit", "hang")  # evo_snn.evaluation.faults: what an injected fault does

OBJECTIVES = {
    # name: (key in the fitness metrics, DEAP weight: +1 maximised / -1 minimised, worst value)
    "accuracy": ("accuracy", 1.0, 0.0),
    "sparsity": ("sparsity", 1.0, 0.0),
    "energy": ("energy_fraction", -1.0, 1.0),
}
"""The objectives a search may use (``search.objectives``): the one table that
``evo_snn.search.nsga`` builds its DEAP fitness weights and hypervolume reference from."""


@dataclass(frozen=True)
class KDMode:
    """One KD variant: which network teaches (``teacher``: 'sparse' = the genome's masked
    teacher, 'dense' = the unpruned teacher, 'ann' = the ReLU twin, None = no teacher
    network) and the loss it trains the student with (``loss``: 'kd' = ``KDLoss``,
    'virtual' = ``VirtualTeacherLoss``, 'ce' = cross-entropy only)."""

    name: str
    teacher: str | None
    loss: str

    @property
    def needs_ann(self) -> bool:
        """An ANN twin of the teacher must be trained first (once per run)."""
        return self.teacher == "ann"

    @property
    def ratio_dependent(self) -> bool:
        """The student's target depends on the genome (its prune ratios)."""
        return self.teacher == "sparse"


# The one table of KD modes (kd.mode): search, fitness, teacher preparation and reproduce query it
# (evo_snn.training.kd holds the losses).
MODES = {m.name: m for m in (
    KDMode("sparse", "sparse", "kd"),
    KDMode("self", "dense", "kd"),
    KDMode("default", None, "virtual"),
    KDMode("ann", "ann", "kd"),
    KDMode("none", None, "ce"),
)}
KD_MODES = tuple(MODES)


def kd_mode(name: str) -> KDMode:
    """The table entry of ``name``; raises ValueError naming the known modes."""
    if name not in MODES:
        raise ValueError(f"unknown kd mode {name!r}; known: {list(KD_MODES)}")
    return MODES[name]
