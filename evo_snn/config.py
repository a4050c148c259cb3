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
"""

from __future__ import annotations

import dataclasses
import functools
import json
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

import yaml
from pydantic import AfterValidator, ConfigDict, Field, Strict, TypeAdapter, ValidationError
from pydantic.fields import FieldInfo

from evo_snn.atomic import to_jsonable

SEARCH_SPACES_DIR = Path(__file__).resolve().parent.parent / "search_spaces"


class ConfigError(ValueError):
    """A config file or ``--set`` override is invalid; the message names the key and the fix."""


# ------------------------------------------------------------------ the tables of choices
SPLIT_MODES = ("number", "time")  # how events are cut into frames (evo_snn.data.events)
RESIZE_FILTERS = ("nearest", "box", "bilinear", "hamming", "bicubic", "lanczos")
SYNTHETIC_MAX_CLASSES = 8  # evo_snn.data.synthetic: K directions of motion
NEURON_BACKENDS = ("auto", "torch", "cuda", "triton", "cupy")  # model.neuron_backend (evo_snn.models.neurons)
INIT_ALLOCATIONS = ("global", "uniform", "erk", "lamp")  # genome.init_allocations (evo_snn.structure.allocation rules)
AMP_MODES = ("none", "bf16", "fp16")  # train.amp (evo_snn.training.train.autocast)
SCREENS = ("none", "nll", "kl", "bn_accuracy")  # search.screen (evo_snn.evaluation.screening)
FINETUNE_SHARE_SCREENED = 0.85  # search.finetune_share's default with search.screen on
FAULT_KINDS = ("raise", "exit", "hang")  # evo_snn.evaluation.faults: what an injected fault does
SEED_BOUND = 2**32  # numpy seeds: [0, 2**32)

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


# ------------------------------------------------------------------ the schema's parts
SCHEMA = ConfigDict(extra="forbid", allow_inf_nan=False)
"""pydantic's settings of every section: unknown keys and NaN / infinity are refused."""


def key(description: str, *, null: str | None = None, hint: str | None = None, allowed: str | None = None,
        strict: bool = True, **constraints: Any) -> Any:
    """The schema of one key, for ``Annotated[type, key(...)]``: a pydantic ``Field`` with the
    key's one-line ``description`` and its ``constraints`` (ge, gt, le, lt, multiple_of,
    min_length), strict (no bool for an int, no string for a number) unless told.

    For the error line and the docs: ``null`` says what null means ("null (= search.seed) or
    ..."), ``hint`` is appended to the error, ``allowed`` replaces the words generated from
    the type and the constraints (for lists, mappings and unions).
    """
    extra = {k: v for k, v in (("null", null), ("hint", hint), ("allowed", allowed)) if v is not None}
    if strict:
        constraints["strict"] = True
    return Field(description=description, json_schema_extra=extra or None, **constraints)


class OneOf:
    """``AfterValidator(OneOf(table))``: the value must be one of ``table``'s names."""

    def __init__(self, table: typing.Iterable[str]):
        self.table = tuple(table)

    def __call__(self, value: str) -> str:
        if value not in self.table:
            raise ValueError(f"must be one of {list(self.table)}")
        return value


def _distinct(value: tuple) -> tuple:
    if len(set(value)) != len(value):
        raise ValueError("duplicates")
    return value


Int = Annotated[int, Strict()]
PosInt = Annotated[int, Strict(), Field(ge=1)]
Str = Annotated[str, Strict()]
Num = Annotated[float, Strict()]


# ------------------------------------------------------------------ the sections
@dataclass(frozen=True)
class DataConfig:
    """How events become frames, how images are read, and how the training set is split.

    Static images (cifar10, cifar100, tiny_imagenet): frames = T repeats of the image (direct
    encoding); split_by is ignored and downsample must be 1.

    Training-batch augmentation (``data.aug_*``) acts in ``FrameSet.to_seq(train=True)``
    (evo_snn.data.augment).
    """

    __pydantic_config__ = SCHEMA

    frames: Annotated[int, key("T, number of frames per sample.", ge=1)] = 8
    split_by: Annotated[Literal[SPLIT_MODES], key(
        "'number' (equal event count per frame) or 'time' (equal duration).", strict=False)] = "number"
    downsample: Annotated[int, key("spatial sum-pooling factor (1 = sensor resolution).", ge=1)] = 1
    val_fraction: Annotated[float, key(
        "fraction of the training set held out, stratified, for fitness.", gt=0, lt=1)] = 0.1
    split_seed: Annotated[Optional[int], key(
        "seed of that train/validation split (and of the synthetic data); null (default) = search.seed. Fix it "
        "to run several search seeds on one split, e.g. with one shared ``--teacher`` (whose split.json must "
        "match); ``Config.split_seed()``.", null="= search.seed", ge=0, lt=SEED_BOUND)] = None
    cache_dir: Annotated[Optional[str], key(
        "where converted frames are cached; null = $XDG_CACHE_HOME/evo_snn.")] = None
    synthetic_classes: Annotated[int, key(
        "classes (directions of motion) of the embedded synthetic data set (ignored for real data).",
        ge=2, le=SYNTHETIC_MAX_CLASSES)] = 4
    synthetic_train_per_class: Annotated[int, key(
        "training samples per class of the synthetic data set (ignored for real data).", ge=1)] = 48
    synthetic_test_per_class: Annotated[int, key(
        "test samples per class of the synthetic data set (ignored for real data).", ge=1)] = 16
    synthetic_size: Annotated[int, key(
        "sensor size (pixels per side) of the synthetic data set (ignored for real data).", ge=4)] = 16
    aug_translate_px: Annotated[Optional[int], key(
        "random shift of up to this many pixels per axis with zero fill, the same as a random crop after that "
        "much zero padding; null = the data set's default: 4 for CIFAR, 8 for Tiny-ImageNet, 0 (off) for "
        "event data.", ge=0)] = None
    aug_hflip: Annotated[Optional[bool], key(
        "random horizontal flip (p = 0.5); null = on for static images, off for event data (DVS128 Gesture: "
        "left- and right-hand gestures are different classes).")] = None
    aug_event_drop: Annotated[float, key(
        "probability of dropping each event (binomial thinning of the counts); event data only; 0 = off.",
        ge=0, lt=1)] = 0.0
    image_size: Annotated[Union[PosInt, tuple[PosInt, PosInt], None], key(
        "image-folder layouts only: null = every image must have the same size; S or [H, W] = resize every "
        "image to S x S or H x W pixels (aspect ratio not kept) with data.resize_filter.",
        strict=False, allowed="null, an integer >= 1 or [H, W] (integers >= 1)")] = None
    resize_filter: Annotated[Literal[RESIZE_FILTERS], key(
        "the resampling filter of data.image_size (Pillow's filters, antialiased when shrinking).",
        strict=False)] = "bilinear"
    classes: Annotated[tuple[Str, ...], key(
        "the class names in label order; empty = as the data set names them. The search records them in "
        "config.json, and a non-empty value must match the data.", strict=False, allowed="a list of strings")] = ()

    def check(self) -> None:
        """The schema's checks of the ``data.*`` values (the data set's own checks are
        ``DatasetSpec.check_config``). raises ConfigError naming the key and the value."""
        _validated(DataConfig, to_jsonable(dataclasses.asdict(self)), "data.")


@dataclass(frozen=True)
class ModelConfig:
    """Spiking net built from the model registry (``evo_snn.models``); teacher and students share it.

    model.name, model.neuron and model.surrogate are checked against their tables when the net
    is built (``evo_snn.models``), as is tau > 1 for LIF / PLIF neurons.
    """

    __pydantic_config__ = SCHEMA

    name: Annotated[str, key("registry name (``evo_snn.models.model_names()``).")] = "tiny_conv"
    channels: Annotated[tuple[PosInt, ...], key(
        "conv channels per block (conv_snn / tiny_conv; dvs_gesture_net: one entry for all 5 blocks, or five); "
        "ignored by the ResNet/WRN/VGG models.", strict=False, allowed="a list of integers >= 1")] = (8, 16)
    hidden: Annotated[int, key("width of the hidden FC layer (0 = none; dvs_gesture_net: 0 = 512).", ge=0)] = 0
    neuron: Annotated[str, key(
        "'if' | 'lif' | 'plif' | 'relu' ('relu' = the ANN twin: nn.ReLU in place of every spiking neuron, same "
        "layers and weights, used for ANN-teacher KD).")] = "if"
    surrogate: Annotated[str, key("surrogate gradient: 'atan' | 'sigmoid' | 'rect'.")] = "atan"
    tau: Annotated[float, key("membrane time constant for LIF/PLIF in time steps (> 1 for them).", gt=0)] = 2.0
    v_threshold: Annotated[float, key("firing threshold.", gt=0)] = 1.0
    v_reset: Annotated[Optional[float], key(
        "reset potential after a spike (null = soft reset, subtract the threshold).", null="soft reset")] = 0.0
    detach_reset: Annotated[bool, key(
        "detach the reset from the graph in the surrogate-gradient backward pass (spikingjelly's "
        "detach_reset).")] = True
    dropout: Annotated[float, key(
        "dropout before the readout FC (conv_snn, ResNet/WRN/VGG: 0 = none; dvs_gesture_net: 0 = its default "
        "0.5).", ge=0, lt=1)] = 0.0
    width: Annotated[float, key(
        "channel multiplier for resnet18*, wrn16_4*, vgg16* (every conv width is round(width * c), at least 1); "
        "1.0 = the published widths.", gt=0)] = 1.0
    neuron_backend: Annotated[Literal[NEURON_BACKENDS], key(
        "which spikingjelly implementation runs the spiking neurons (``evo_snn.models.neurons.select_backend``): "
        "'auto' (default: the fastest one that imports and runs on the device; always 'torch' on the CPU) | "
        "'torch' (the reference, on any device) | 'cuda' (spikingjelly 2.x's native CUDA kernels) | 'triton' | "
        "'cupy' (spikingjelly 0.0.0.x only); all but 'auto' and 'torch' need a CUDA device. The choice is "
        "recorded as ``backend`` in manifest.json and in each evaluation.", strict=False)] = "auto"

    def ann_twin(self) -> "ModelConfig":
        """The same model with nn.ReLU in place of every spiking neuron (ANN-teacher KD)."""
        return dataclasses.replace(self, neuron="relu")


@dataclass(frozen=True)
class TeacherConfig:
    """The dense teacher, trained once per run (Adam, cosine schedule)."""

    __pydantic_config__ = SCHEMA

    epochs: Annotated[int, key(
        "epochs of dense-teacher training, once per run.", ge=1,
        hint="an untrained teacher teaches nothing; reuse a trained one with --teacher PATH")] = 10
    batch_size: Annotated[int, key("batch size of dense-teacher training.", ge=1)] = 32
    lr: Annotated[float, key("Adam learning rate of dense-teacher training.", gt=0)] = 1e-3
    weight_decay: Annotated[float, key("Adam weight decay of dense-teacher training.", ge=0)] = 0.0


@dataclass(frozen=True)
class GenomeConfig:
    """The search space over sparse structure: what a genome holds and how it is varied."""

    __pydantic_config__ = SCHEMA

    prunable: Annotated[Union[Literal["all"], tuple[Str, ...]], key(
        "'all' (every conv and linear weight) or a list of module names.",
        strict=False, allowed="'all' or a list of module names")] = "all"
    ratio_min: Annotated[float, key(
        "lower bound of every per-layer prune ratio (<= ratio_max).", ge=0, lt=1)] = 0.0
    ratio_max: Annotated[float, key("upper bound of every per-layer prune ratio.", ge=0, lt=1)] = 0.95
    init_swap_fraction: Annotated[float, key(
        "initial masks are magnitude masks with this fraction of each layer's pruned connections swapped at "
        "random.", ge=0, le=1)] = 0.02
    ratio_mutation_prob: Annotated[float, key("per-layer probability of a prune-ratio mutation.", ge=0, le=1)] = 0.3
    ratio_mutation_sigma: Annotated[float, key("Gaussian step of a prune-ratio mutation.", ge=0)] = 0.1
    mask_mutation_prob: Annotated[float, key(
        "per-layer probability of a prune-and-regrow swap.", ge=0, le=1)] = 0.3
    mask_swap_fraction: Annotated[float, key(
        "fraction of the layer's connections swapped by a prune-and-regrow swap.", ge=0, le=1)] = 0.01
    crossover_prob: Annotated[float, key("probability that a pair of parents is recombined.", ge=0, le=1)] = 0.9
    init_global_fraction: Annotated[float, key(
        "fraction of the initial population seeded with global-magnitude genomes (one |W| threshold over all "
        "layers) at sparsities spread evenly over (ratio_min, ratio_max]; the rest are random. 0 = all random.",
        ge=0, le=1)] = 0.0
    mask_mutation: Annotated[Literal["random", "magnitude"], key(
        "'random' (swap random survivors and pruned connections) | 'magnitude' (prune the survivors of smallest "
        "|W| of the parent's trained student, regrow the pruned connections of largest teacher |W|).",
        strict=False)] = "random"
    init_allocations: Annotated[tuple[Literal[INIT_ALLOCATIONS], ...], AfterValidator(_distinct), key(
        "allocation rules (``evo_snn.structure.allocation``) that seed the initial population, e.g. [global, uniform, "
        "lamp, erk]: each listed rule gives genomes at the exact pruned counts of the sparsities ratio_min + "
        "(ratio_max - ratio_min) * (i + 1) / k, i < k (the same k sparsities for every rule), built with "
        "``genome.allocation_genome`` (magnitude within each layer, ratios not clipped). [] (default) = none, "
        "today's initial population.", strict=False,
        allowed=f"a list of distinct rules from {list(INIT_ALLOCATIONS)}")] = ()
    init_allocation_fraction: Annotated[float, key(
        "fraction of the initial population seeded by ``init_allocations`` together, round(fraction x "
        "population) genomes split evenly over the rules (the first rules get one more when it does not "
        "divide); they come after the ``init_global_fraction`` genomes and before the random ones (the seeded "
        "total is capped at the population). Ignored while init_allocations is [].", ge=0, le=1)] = 0.5
    mutation: Annotated[Literal["free", "smooth"], key(
        "'free' (default: today's free per-layer ratios and masks) | 'smooth' (a density law at an exact total "
        "pruned count: ERK exponent gamma or LAMP temperature tau, ``GenomeOps.law``; mutation perturbs the "
        "parameter by N(0, smooth_sigma) and, with probability level_switch_prob, moves level_switch_fraction "
        "of the smaller layer's weights between two adjacent layers at the same total; no crossover; initial "
        "genomes at random laws, parameters and sparsities).", strict=False)] = "free"
    smooth_sigma: Annotated[float, key(
        "std of the Gaussian step of a smooth genome's law parameter (gamma or tau) per mutation; mutation "
        "'smooth' only.", ge=0)] = 0.2
    level_switch_prob: Annotated[float, key(
        "probability that a smooth mutation also makes a level switch; mutation 'smooth' only.", ge=0, le=1)] = 0.5
    level_switch_fraction: Annotated[float, key(
        "fraction of the smaller of two adjacent layers' weights that a level switch moves from one to the "
        "other, keeping the total pruned count exact; mutation 'smooth' only.", gt=0, le=1)] = 0.02
    stage_exponents: Annotated[bool, key(
        "with mutation 'smooth', the ERK law carries one exponent gamma per stage (``allocation.stages``: "
        "layers of equal output channels, 5 for resnet18_tiny) instead of one for the net; a mutation moves each "
        "by N(0, smooth_sigma); seeded ERK genomes start at gamma = 1 everywhere, random ones at U[0, 2] per "
        "stage.")] = False


@dataclass(frozen=True)
class KDConfig:
    """Each genome's fitness: knowledge distillation into a sparse student, from the genome's teacher.

    Loss (Eq. 4-5 of the sparse-KD paper): L = alpha * temperature**2 *
    KL(softmax(z_t/temperature) || softmax(z_s/temperature)) + (1 - alpha) * CE(z_s, y).
    """

    __pydantic_config__ = SCHEMA

    mode: Annotated[str, key(
        "which teacher teaches (see ``evo_snn.training.kd``): 'sparse' (the genome's masked teacher), 'self' (the dense "
        "teacher), 'default' (teacher-default virtual teacher), 'ann' (an ANN twin of the teacher), 'none' "
        "(cross-entropy only). ``--set kd=MODE`` is shorthand for ``--set kd.mode=MODE``."),
        AfterValidator(OneOf(KD_MODES))] = "sparse"
    alpha: Annotated[float, key("weight of the KD term in the loss (1 - alpha weighs the cross-entropy).",
                                ge=0, le=1)] = 0.9
    temperature: Annotated[float, key("softening temperature of the KD term.", gt=0)] = 4.0
    default_prob: Annotated[float, key(
        "the virtual teacher's probability of the true class (mode 'default').", gt=0, lt=1)] = 0.95
    default_form: Annotated[Literal["paper", "hinton"], key(
        "'paper' (Eq. 7 of the teacher-default-KD paper: only the virtual teacher is softened, "
        "softmax(p/temperature), no temperature**2) | 'hinton' (both sides softened as in Eq. 4-5, times "
        "temperature**2); mode 'default' only.", strict=False)] = "paper"
    epochs: Annotated[float, key(
        "training budget per genome in epochs over the training split (may be < 1).", gt=0)] = 1.0
    batch_size: Annotated[int, key("batch size of each genome's KD training.", ge=1)] = 32
    lr: Annotated[float, key("Adam learning rate of each genome's KD training.", gt=0)] = 5e-4
    student_init: Annotated[Literal["teacher", "scratch"], key(
        "'teacher' (start from the sparse teacher's weights) | 'scratch'.", strict=False)] = "teacher"
    student_mask: Annotated[Literal["genome", "dense"], key(
        "'genome' (keep the genome's masks; pruned weights stay 0) | 'dense'.", strict=False)] = "genome"


@dataclass(frozen=True)
class TrainConfig:
    """How every training loop runs (teacher training and each genome's KD training,
    ``evo_snn.training.train.train_steps``): the GPU hot path and the CPU threads. The defaults change nothing.
    """

    __pydantic_config__ = SCHEMA

    amp: Annotated[Literal[AMP_MODES], key(
        "automatic mixed precision of the training forwards (student and teacher): 'none' (default: float32) | "
        "'bf16' (``torch.autocast`` with bfloat16, any device) | 'fp16' (float16 with a ``GradScaler``; CUDA "
        "only). Weights, optimizer state and the loss (the KD softmax / KL and cross-entropy) stay float32; "
        "validation passes run in float32, so accuracies are measured as without AMP.", strict=False)] = "none"
    channels_last: Annotated[bool, key(
        "convert the nets (4-D conv weights) and each batch to the channels-last memory layout. spikingjelly's "
        "multi-step layers flatten ``[T, N, C, H, W]`` to ``[T*N, C, H, W]`` (a view), so a batch laid out as "
        "``[T, N, H, W, C]`` in memory reaches every conv and BatchNorm as channels-last; neurons are "
        "element-wise and keep it. Same values up to float rounding (a spike may flip where a membrane "
        "potential sits on the threshold).")] = False
    threads: Annotated[Optional[int], key(
        "torch CPU threads of the driver and of each worker (null, the default: fitted to the machine by "
        "``evo_snn.threads``: the usable CPUs divided by the workers, less the cores other processes keep busy, "
        "re-checked while training); an int >= 1 fixes it (``--threads N``). Float results may differ in the "
        "last bits between thread counts.", null="fit to the machine", ge=1)] = None
    eval_batch_size: Annotated[Optional[int], key(
        "batch size of the validation passes of the teacher and of every evaluation (with the energy counters "
        "on the same pass); null (default) = 64 on the CPU, where larger batches gained nothing here, and 512 on "
        "a GPU, where a validation pass is otherwise mostly kernel launches (issue 26). Logits, accuracies and "
        "energy counts do not depend on it (each sample's neurons start from rest; tested).",
        null="64 on the CPU, 512 on a GPU", ge=1)] = None


@dataclass(frozen=True)
class SearchConfig:
    """NSGA-II and the evaluator. population must be a multiple of 4 (DEAP's selTournamentDCD)."""

    __pydantic_config__ = SCHEMA

    population: Annotated[int, key(
        "NSGA-II population size (``--population``).", ge=4, multiple_of=4)] = 8
    generations: Annotated[int, key("number of generations after generation 0 (``--generations``).", ge=0)] = 3
    workers: Annotated[int, key(
        "parallel evaluations: 1 = serial, W > 1 = W Ray actors (``--workers``).", ge=1)] = 1
    seed: Annotated[int, key(
        "root seed of the run: teacher, genomes, every evaluation (``--seed``).", ge=0, lt=SEED_BOUND)] = 0
    tag: Annotated[str, key("the last part of the run directory's name, runs/<time>-<dataset>-<tag>.")] = "search"
    measure_teacher: Annotated[bool, key(
        "measure each genome's sparse teacher on the validation split (``teacher_accuracy`` in the metrics, "
        "pareto.csv and the model card; about 5-7 % of an N-MNIST evaluation). false skips that pass and "
        "records ``teacher_accuracy`` as null; the search never reads it.")] = True
    final_epochs: Annotated[float, key(
        "KD epochs (may be < 1) with which a selected member is retrained from its genome, with the same KD "
        "settings, before its single test measurement (``evo_snn.analysis.baselines``; the baselines get the same "
        "retraining); 0 = no retraining, the student trained during the search is measured.", ge=0)] = 0.0
    inherit_weights: Annotated[bool, key(
        "Lamarckian weight inheritance: a child's student starts from its first parent's trained student "
        "(restricted to the child's masks; regrown connections from the dense teacher) instead of from the "
        "teacher, so training accumulates over generations. Each evaluation still spends kd.epochs "
        "(counted).")] = False
    max_retries: Annotated[int, key(
        "how often an evaluation that fails (raises, its Ray worker dies, or it outlives eval_timeout_s) is run "
        "again, with the same (genome, seed), before it is recorded as failed (status 'failed', worst fitness); "
        "0 = never.", ge=0)] = 2
    max_failed_generations: Annotated[int, key(
        "the search stops with status 'failed' (one line naming the errors) after this many generations in a "
        "row in which every evaluation failed; such a generation is otherwise logged (``ok_evals`` 0 in "
        "generations.csv) and the search goes on with the survivors it has. 0 = never stop.", ge=0)] = 3
    eval_timeout_s: Annotated[float, key(
        "wall-clock limit of one evaluation attempt on a Ray worker, in seconds (the worker is then replaced and "
        "the attempt counts as a fault); 0 = none. The serial evaluator cannot interrupt itself and ignores "
        "it.", ge=0)] = 0.0
    objectives: Annotated[tuple[Str, ...], key(
        "what NSGA-II optimises, names from ``OBJECTIVES``: 'accuracy' (student validation accuracy, "
        "maximised), 'sparsity' (fraction of zero prunable weights, maximised), 'energy' (the student's "
        "estimated energy on the validation pass as a fraction of its dense bound, "
        "``EnergyReport.energy_fraction``, minimised); e.g. ``--set search.objectives=[accuracy,sparsity,energy]`` "
        "or ``[accuracy,energy]``. Must include 'accuracy'.", strict=False,
        allowed=f"a list of 2 or more distinct objectives from {list(OBJECTIVES)} including 'accuracy'")] = (
        "accuracy", "sparsity")
    hv_reference: Annotated[dict[Literal[tuple(OBJECTIVES)], Num], key(
        "the hypervolume's reference point, {objective: value}; defaults to each objective's worst value "
        "(accuracy 0, sparsity 0, energy 1), e.g. ``--set search.hv_reference.energy=0.5``.", strict=False,
        allowed=f"a mapping of objectives {list(OBJECTIVES)} to finite numbers")] = field(
        default_factory=lambda: {k: v[2] for k, v in OBJECTIVES.items()})
    students_per_batch: Annotated[int, key(
        "K genomes whose students train at once as one grouped network (``evo_snn.evaluation.grouped``: same batches, "
        "summed loss, so each student's update is its solo update); the search sends its fresh jobs to the "
        "evaluator in groups of K, in order. A group's batch order and augmentation come from its first "
        "member's seed, each student's initialisation from its own. 1 (default) = one student per evaluation, "
        "today's path exactly.", ge=1)] = 1
    fidelity_fraction: Annotated[Optional[float], key(
        "multi-fidelity evaluation (successive halving inside a generation, ``evo_snn.evaluation.fidelity``): every "
        "offspring is first KD-trained for fidelity_fraction x kd.epochs (rung 0) and ranked among the "
        "generation's offspring only (non-dominated sorting + crowding); the best promote_fraction of them "
        "continue from their rung-0 student for the remaining (1 - fidelity_fraction) x kd.epochs (rung 1). "
        "Only full-fidelity results enter survival, the archive and the export; every sample of both rungs is "
        "counted. 1 (default) or null = off, today's search exactly. Generation 0 is evaluated at full "
        "fidelity.", gt=0, le=1, hint="1 or null = one fidelity, the default")] = 1.0
    promote_fraction: Annotated[float, key(
        "fraction of a generation's offspring scored at rung 0 that is promoted to the full budget, "
        "ceil(promote_fraction x n). A generation then costs about fidelity_fraction + promote_fraction x "
        "(1 - fidelity_fraction) plain generations (0.625 for 0.25 and 0.5).", gt=0, le=1)] = 0.5
    screen: Annotated[Literal[SCREENS], key(
        "forward-only screening of every generation's fresh children before the KD rung "
        "(``evo_snn.evaluation.screening``): 'none' (default, today's search exactly) | 'nll' (the candidate's "
        "cross-entropy) | 'kl' (KL(dense teacher || candidate), the teacher's logits cached once) | "
        "'bn_accuracy' (top-1 accuracy), each after BN recalibration on fixed training batches, scored on a "
        "fixed validation subset. Only the best screen_promote children are KD-trained (then the fidelity "
        "rungs, if on); the others are logged with ``rung: \"screen\"`` (status 'screened') and enter neither "
        "survival nor the archive. Generation 0 is KD-trained whole, as today.", strict=False)] = "none"
    screen_bn_batches: Annotated[int, key(
        "training batches (of kd.batch_size, drawn once per run) of the BN recalibration.", ge=1)] = 20
    screen_samples: Annotated[int, key(
        "validation images of the fixed screening subset (all of the split when it is smaller).", ge=1)] = 1000
    screen_first_share: Annotated[float, key(
        "share of the subset on which every child is scored first.", gt=0, le=1)] = 0.25
    screen_keep: Annotated[float, key(
        "share of the children (at least screen_promote) scored on the rest of the subset (multi-step "
        "selection, EvoPress-style).", gt=0, le=1)] = 0.5
    screen_promote: Annotated[int, key(
        "screened children that go on to the KD rung per generation; 0 (default) = max(1, population // 4).",
        ge=0)] = 0
    screen_group: Annotated[int, key(
        "candidates screened together as one grouped net (``grouped.GroupedNet``: one BN-recalibration pass "
        "and one forward per batch for up to this many; the same scores up to float rounding, the same counted "
        "forwards); 1 (default) = one at a time. Measured in ``benchmarks/screening_cost.py --group K`` "
        "(BENCHMARKS.md).", ge=1)] = 1
    finetune_share: Annotated[Optional[float], key(
        "share f of the counted budget kept for fine-tuning the search's validation front once "
        "(``evo_snn.analysis.baselines``, method ``search_finetuned``): with S the search's counted compute (screening "
        "included) the budget is B = S / (1 - f), every ``_long`` baseline spends B, and max(1, floor(f x n)) "
        "archive members (n = ``--ratios``), chosen on validation, are each retrained from their genome with the "
        "``_long`` recipe and per-member training B / n. null (default) = 0.85 with search.screen on, 0 (no "
        "fine-tuning, the comparison as before) with screen 'none'.", null="default", ge=0, lt=1)] = None

    def resolved_finetune_share(self) -> float:
        """``finetune_share`` with its default resolved: 0.85 when ``screen`` is not 'none',
        else 0.0."""
        if self.finetune_share is None:
            return FINETUNE_SHARE_SCREENED if str(self.screen or "none") != "none" else 0.0
        return float(self.finetune_share)


@dataclass(frozen=True)
class EnergyConfig:
    """Energy estimate of a student (``evo_snn.evaluation.energy``, NeuroBench SynOps definitions):
    energy = e_ac_pj x effective ACs + e_mac_pj x effective MACs, per sample.
    """

    __pydantic_config__ = SCHEMA

    e_ac_pj: Annotated[float, key(
        "pJ per accumulate, default 0.9 (32-bit float add, 45 nm; Horowitz, \"Computing's energy problem\", "
        "ISSCC 2014).", ge=0)] = 0.9
    e_mac_pj: Annotated[float, key(
        "pJ per multiply-accumulate, default 4.6 (32-bit float multiply 3.7 + add 0.9, 45 nm; Horowitz 2014).",
        ge=0)] = 4.6


@dataclass(frozen=True)
class FaultsConfig:
    """Fault injection (``evo_snn.evaluation.faults``): check that a run, or a cluster, survives worker
    faults before a long run. Off by default (fail_rate 0).
    """

    __pydantic_config__ = SCHEMA

    fail_rate: Annotated[float, key(
        "probability that one evaluation attempt is given a fault, drawn from (seed, the evaluation's seed, the "
        "attempt number), so a retry of the same evaluation draws again.", ge=0, lt=1)] = 0.0
    kinds: Annotated[tuple[Literal[FAULT_KINDS], ...], key(
        "the faults drawn from, uniformly: 'raise' (the fitness raises ``InjectedFault``), 'exit' (the worker "
        "process exits at once, as if killed), 'hang' (the worker sleeps until ``search.eval_timeout_s`` ends "
        "the attempt). 'exit' and 'hang' need Ray workers (search.workers > 1); 'hang' needs "
        "search.eval_timeout_s > 0.", strict=False, min_length=1,
        allowed=f"a non-empty list of {list(FAULT_KINDS)}")] = FAULT_KINDS
    seed: Annotated[int, key("seed of the fault draws (independent of search.seed).", ge=0, lt=SEED_BOUND)] = 0


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
        return _validated(cls, d, "")

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
        _validated(Config, self.to_dict(), "")
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


# ------------------------------------------------------------------ the schema, read back
@dataclass(frozen=True)
class ConfigKey:
    """One key of the schema (``config_keys``), as docs/configuration.md lists it."""

    key: str  # the dotted name, e.g. 'kd.epochs' (the name of ``--set kd.epochs=...``)
    allowed: str  # the values allowed, in words, e.g. 'a finite number > 0'
    default: Any
    description: str


def config_keys() -> list[ConfigKey]:
    """Every key of the schema, in declaration order: top-level keys and each section's."""
    out = []
    for f in fields(Config):
        section = _section_class(Config, f.name)
        for cls, g, prefix in ([(section, g, f.name + ".") for g in fields(section)] if section else [(Config, f, "")]):
            default = g.default_factory() if g.default_factory is not dataclasses.MISSING else g.default
            out.append(ConfigKey(prefix + g.name, allowed(cls, g.name), default, _parts(cls, g.name)[1].description))
    return out


@functools.cache
def _hints(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls, include_extras=True)


@functools.cache
def _adapter(cls) -> TypeAdapter:
    return TypeAdapter(cls)


def _section_class(cls, name: Any) -> type | None:
    """The dataclass of section ``name`` of ``cls``, or None for a plain key (or no key)."""
    hint = _hints(cls).get(name) if isinstance(name, str) else None
    return hint if isinstance(hint, type) and dataclasses.is_dataclass(hint) else None


def _parts(cls, name: str) -> tuple[Any, FieldInfo, list]:
    """(type, its ``key(...)`` FieldInfo, the other Annotated metadata) of key ``name`` of ``cls``."""
    hint = _hints(cls)[name]
    tp, *meta = typing.get_args(hint) if typing.get_origin(hint) is Annotated else (hint,)
    info = next((m for m in meta if isinstance(m, FieldInfo)), None)
    if info is None or not info.description:
        raise TypeError(f"{cls.__name__}.{name}: declare it as Annotated[type, key('description', ...)]")
    return tp, info, [m for m in meta if m is not info]


def _num(x: Any) -> str:
    if x == SEED_BOUND:
        return "2**32"
    return str(int(x)) if isinstance(x, float) and x.is_integer() else str(x)


def allowed(cls, name: str) -> str:
    """The values key ``name`` of section ``cls`` allows, in words (the error line's and the
    docs' text): from its type and constraints, or its ``key(allowed=...)``."""
    tp, info, meta = _parts(cls, name)
    extra = info.json_schema_extra or {}
    if "allowed" in extra:
        return extra["allowed"]
    args = typing.get_args(tp)
    nullable = typing.get_origin(tp) is Union and type(None) in args
    if nullable:
        (tp,) = [a for a in args if a is not type(None)]
    one_of = [m.func for m in meta if isinstance(m, AfterValidator) and isinstance(m.func, OneOf)]
    bound = {k: getattr(c, k) for c in info.metadata for k in ("gt", "ge", "lt", "le", "multiple_of") if hasattr(c, k)}
    lo = ("(", bound["gt"], ">") if "gt" in bound else ("[", bound["ge"], ">=") if "ge" in bound else None
    hi = (")", bound["lt"], "<") if "lt" in bound else ("]", bound["le"], "<=") if "le" in bound else None
    if one_of:
        text = f"one of {list(one_of[0].table)}"
    elif typing.get_origin(tp) is Literal:
        text = f"one of {list(typing.get_args(tp))}"
    elif tp is bool:
        text = "true, false" if nullable else "true or false"
    elif tp in (int, float):
        noun = "an integer" if tp is int else "a number" if lo and hi else "a finite number"
        if "multiple_of" in bound:
            noun = f"a multiple of {_num(bound['multiple_of'])}"
        if lo and hi:
            text = f"{noun} in {lo[0]}{_num(lo[1])}, {_num(hi[1])}{hi[0]}"
        elif lo or hi:
            (_, value, op) = lo or hi
            text = f"{noun} ({op} {_num(value)})" if "multiple_of" in bound else f"{noun} {op} {_num(value)}"
        else:
            text = noun
    elif tp is str:
        text = "a string"
    else:
        raise TypeError(f"{cls.__name__}.{name}: give key(allowed=...) for {tp}")
    if nullable:
        text = f"null ({extra['null']}) or {text}" if "null" in extra else f"{text} or null"
    return text


def _show(value: Any) -> str:
    """A value as the error line shows it: tuples as lists."""
    return repr(to_jsonable(value))


def _locate(cls, loc: tuple) -> tuple[type, list[str], Any]:
    """(the section class, the section names walked, the key there or None) of an error location."""
    owner, walked = cls, []
    for part in loc:
        sub = _section_class(owner, part)
        if sub is None:
            return owner, walked, part
        owner, walked = sub, walked + [part]
    return owner, walked, None


def _value_at(data: Any, names: list[str], default: Any) -> Any:
    for n in names:
        if not isinstance(data, dict) or n not in data:
            return default
        data = data[n]
    return data


def _one_line(error: ValidationError, cls, data: Any, prefix: str) -> str:
    """pydantic's errors as one line naming the key, the value and what is allowed."""
    errors = error.errors()
    unknown = [e for e in errors if e["type"] == "unexpected_keyword_argument"]
    if unknown:
        owner, walked, _ = _locate(cls, unknown[0]["loc"])
        names = [str(e["loc"][-1]) for e in unknown if _locate(cls, e["loc"])[1] == walked]
        path = prefix + "".join(f"{w}." for w in walked)
        return f"unknown key(s) {[path + n for n in names]}; known: {sorted(f.name for f in fields(owner))}"
    lines: dict[str, str] = {}
    for e in errors:
        owner, walked, name = _locate(cls, e["loc"])
        if name is None:  # a section (or the whole config) that is not a mapping
            where = prefix + ".".join(walked) if walked else (prefix.rstrip(".") or "config")
            lines.setdefault(where, f"{where}: expected a mapping, got {type(e['input']).__name__}")
            continue
        path = prefix + ".".join([*walked, str(name)])
        if path in lines:
            continue
        value = _value_at(data, [*walked, name], e["input"])
        hint = (_parts(owner, name)[1].json_schema_extra or {}).get("hint")
        lines[path] = f"{path} must be {allowed(owner, name)}, got {_show(value)}" + (f"; {hint}" if hint else "")
    first, *others = lines.values()
    return first + (f" (also bad: {', '.join(list(lines)[1:])})" if others else "")


def _validated(cls, data: Any, prefix: str):
    """``data`` (nested dicts) validated against the schema of ``cls``: a ``cls``; raises
    ConfigError (one line) where pydantic finds an unknown key or a bad value."""
    try:
        return _adapter(cls).validate_python(data)
    except ValidationError as e:
        raise ConfigError(_one_line(e, cls, data, prefix)) from None


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


