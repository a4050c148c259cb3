"""Run configuration: frozen dataclasses loaded from a search-space YAML.

A config is pure data (no torch). ``Config.from_dict`` rejects unknown keys, so a
typo in a YAML file or in ``--set`` fails loudly instead of being ignored.
``--set section.key=value`` parses ``value`` as YAML (``0.5`` -> float,
``[8, 16]`` -> list, ``null`` -> None).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from .atomic import to_jsonable

SEARCH_SPACES_DIR = Path(__file__).resolve().parent.parent / "search_spaces"


class ConfigError(ValueError):
    """A config file or ``--set`` override is invalid; the message names the key and the fix."""


@dataclass(frozen=True)
class DataConfig:
    """How events become frames and how the training set is split.

    frames: T, number of frames per sample.
    split_by: 'number' (equal event count per frame) or 'time' (equal duration).
    downsample: spatial sum-pooling factor (1 = sensor resolution).
    val_fraction: fraction in (0, 1) of the training set held out, stratified, for fitness.
    split_seed: seed of that train/validation split (and of the synthetic data); null
      (default) = search.seed. Fix it to run several search seeds on one split, e.g. with
      one shared ``--teacher`` (whose split.json must match); ``Config.split_seed()``.
    cache_dir: where converted frames are cached; None = $XDG_CACHE_HOME/evo_snn.
    synthetic_*: size of the embedded synthetic data set (ignored for real data).
    Static images (cifar10, cifar100, tiny_imagenet): frames = T repeats of the
    image (direct encoding); split_by is ignored and downsample must be 1.
    Training-batch augmentation (``FrameSet.to_seq(train=True)``; evo_snn.data.augment):
    aug_translate_px: random shift of up to this many pixels per axis with zero
      fill, the same as a random crop after that much zero padding; null = the
      data set's default: 4 for CIFAR, 8 for Tiny-ImageNet, 0 (off) for event data.
    aug_hflip: random horizontal flip (p = 0.5); null = on for static images, off
      for event data (DVS128 Gesture: left- and right-hand gestures are different classes).
    aug_event_drop: probability in [0, 1) of dropping each event (binomial thinning
      of the counts); event data only; 0 = off.
    image_size: image-folder layouts only: null = every image must have the same
      size; S or [H, W] = resize every image to S x S or H x W pixels (aspect ratio not kept)
      with resize_filter: 'nearest' | 'box' | 'bilinear' | 'hamming' | 'bicubic' | 'lanczos'
      (Pillow's filters, antialiased when shrinking).
    classes: the class names in label order; empty = as the data set names them. The
      search records them in config.json, and a non-empty value must match the data.
    """

    frames: int = 8
    split_by: str = "number"
    downsample: int = 1
    val_fraction: float = 0.1
    split_seed: int | None = None
    cache_dir: str | None = None
    synthetic_classes: int = 4
    synthetic_train_per_class: int = 48
    synthetic_test_per_class: int = 16
    synthetic_size: int = 16
    aug_translate_px: int | None = None
    aug_hflip: bool | None = None
    aug_event_drop: float = 0.0
    image_size: Any = None
    resize_filter: str = "bilinear"
    classes: tuple[str, ...] = ()

    def check(self) -> None:
        """The range checks of the ``data.*`` values (the data set's own checks are
        ``DatasetSpec.check_config``). raises ConfigError naming the key and the value."""
        c = self
        checks = [
            (c.frames >= 1, f"data.frames must be >= 1, got {c.frames}"),
            (c.split_by in SPLIT_MODES, f"data.split_by must be one of {list(SPLIT_MODES)}, got {c.split_by!r}"),
            (c.downsample >= 1, f"data.downsample must be >= 1, got {c.downsample}"),
            (0.0 < c.val_fraction < 1.0, f"data.val_fraction must be in (0, 1), got {c.val_fraction}"),
            (c.split_seed is None or (type(c.split_seed) is int and 0 <= c.split_seed < 2**32),
             f"data.split_seed must be null (= search.seed) or an integer in [0, 2**32), got {c.split_seed!r}"),
            (c.aug_translate_px is None or (type(c.aug_translate_px) is int and c.aug_translate_px >= 0),
             f"data.aug_translate_px must be an integer >= 0 or null, got {c.aug_translate_px!r}"),
            (c.aug_hflip is None or isinstance(c.aug_hflip, bool), f"data.aug_hflip must be true, false or null, got {c.aug_hflip!r}"),
            (0.0 <= c.aug_event_drop < 1.0, f"data.aug_event_drop must be in [0, 1), got {c.aug_event_drop}"),
            (image_size_ok(c.image_size), f"data.image_size must be null, an integer >= 1 or [H, W], got {c.image_size!r}"),
            (c.resize_filter in RESIZE_FILTERS, f"data.resize_filter must be one of {list(RESIZE_FILTERS)}, got {c.resize_filter!r}"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ConfigError(msg)


@dataclass(frozen=True)
class ModelConfig:
    """Spiking net built from the model registry (``evo_snn.models``).

    name: registry name (``evo_snn.models.model_names()``).
    channels: conv channels per block (conv_snn / tiny_conv; dvs_gesture_net: one
      entry for all 5 blocks, or five); ignored by the ResNet/WRN/VGG models.
    hidden: width of the hidden FC layer (0 = none; dvs_gesture_net: 0 = 512).
    neuron: 'if' | 'lif' | 'plif' | 'relu' ('relu' = the ANN twin: nn.ReLU in place
      of every spiking neuron, same layers and weights, used for ANN-teacher KD).
    surrogate: 'atan' | 'sigmoid' | 'rect'; tau: membrane time constant for LIF/PLIF
      in time steps; v_threshold: firing threshold; v_reset: reset potential after a
      spike (None = soft reset, subtract the threshold).
    width: channel multiplier for resnet18*, wrn16_4*, vgg16* (every conv width is
      round(width * c), at least 1); 1.0 = the published widths.
    dropout: dropout before the readout FC (conv_snn, ResNet/WRN/VGG: 0 = none;
      dvs_gesture_net: 0 = its default 0.5).
    neuron_backend: which spikingjelly implementation runs the spiking neurons
      (``evo_snn.models.neurons.select_backend``): 'auto' (default: the fastest one that
      imports and runs on the device; always 'torch' on the CPU) | 'torch' (the reference,
      on any device) | 'cuda' (spikingjelly 2.x's native CUDA kernels) | 'triton' |
      'cupy' (spikingjelly 0.0.0.x only); all but 'auto' and 'torch' need a CUDA device.
      The choice is recorded as ``backend`` in manifest.json and in each evaluation.
    """

    name: str = "tiny_conv"
    channels: tuple[int, ...] = (8, 16)
    hidden: int = 0
    neuron: str = "if"
    surrogate: str = "atan"
    tau: float = 2.0
    v_threshold: float = 1.0
    v_reset: float | None = 0.0
    detach_reset: bool = True
    dropout: float = 0.0
    width: float = 1.0
    neuron_backend: str = "auto"

    def ann_twin(self) -> "ModelConfig":
        """The same model with nn.ReLU in place of every spiking neuron (ANN-teacher KD)."""
        return dataclasses.replace(self, neuron="relu")


@dataclass(frozen=True)
class TeacherConfig:
    """Budget for training the dense teacher once per run (Adam, cosine schedule)."""

    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.0


@dataclass(frozen=True)
class GenomeConfig:
    """The search space over sparse structure.

    prunable: 'all' (every conv and linear weight) or a list of module names.
    ratio_min / ratio_max: bounds of every per-layer prune ratio, in [0, 1).
    init_swap_fraction: initial masks are magnitude masks with this fraction of
      each layer's pruned connections swapped at random.
    ratio_mutation_prob / ratio_mutation_sigma: per-layer probability and Gaussian
      step of a prune-ratio mutation.
    mask_mutation_prob / mask_swap_fraction: per-layer probability of a
      prune-and-regrow swap, and the fraction of the layer's connections swapped.
    crossover_prob: probability that a pair of parents is recombined.
    init_global_fraction: fraction in [0, 1] of the initial population seeded with
      global-magnitude genomes (one |W| threshold over all layers) at sparsities spread
      evenly over (ratio_min, ratio_max]; the rest are random. 0 = all random.
    mask_mutation: 'random' (swap random survivors and pruned connections) | 'magnitude'
      (prune the survivors of smallest |W| of the parent's trained student, regrow the
      pruned connections of largest teacher |W|).
    init_allocations: allocation rules (``evo_snn.allocation``: 'global', 'uniform', 'erk',
      'lamp') that seed the initial population, e.g. [global, uniform, lamp, erk]: each
      listed rule gives genomes at the exact pruned counts of the sparsities
      ratio_min + (ratio_max - ratio_min) * (i + 1) / k, i < k (the same k sparsities for
      every rule), built with ``genome.allocation_genome`` (magnitude within each layer,
      ratios not clipped). [] (default) = none, today's initial population.
    init_allocation_fraction: fraction in [0, 1] of the initial population seeded by
      ``init_allocations`` together, round(fraction x population) genomes split evenly over
      the rules (the first rules get one more when it does not divide); they come after the
      ``init_global_fraction`` genomes and before the random ones (the seeded total is
      capped at the population). Ignored while init_allocations is [].
    mutation: 'free' (default: today's free per-layer ratios and masks) | 'smooth' (a density
      law at an exact total pruned count: ERK exponent gamma or LAMP temperature tau,
      ``GenomeOps.law``; mutation perturbs the parameter by N(0, smooth_sigma) and, with
      probability level_switch_prob, moves level_switch_fraction of the smaller layer's
      weights between two adjacent layers at the same total; no crossover; initial genomes
      at random laws, parameters and sparsities).
    smooth_sigma: std of the Gaussian step of a smooth genome's law parameter (gamma or
      tau) per mutation, >= 0 (default 0.2); mutation 'smooth' only.
    level_switch_prob: probability in [0, 1] that a smooth mutation also makes a level
      switch (default 0.5); mutation 'smooth' only.
    stage_exponents: with mutation 'smooth', the ERK law carries one exponent gamma per stage
      (``allocation.stages``: layers of equal output channels, 5 for resnet18_tiny) instead of
      one for the net; a mutation moves each by N(0, smooth_sigma); seeded ERK genomes start
      at gamma = 1 everywhere, random ones at U[0, 2] per stage (default false).
    level_switch_fraction: fraction in (0, 1] of the smaller of two adjacent layers' weights
      that a level switch moves from one to the other, keeping the total pruned count exact
      (default 0.02); mutation 'smooth' only.
    """

    prunable: Any = "all"
    ratio_min: float = 0.0
    ratio_max: float = 0.95
    init_swap_fraction: float = 0.02
    ratio_mutation_prob: float = 0.3
    ratio_mutation_sigma: float = 0.1
    mask_mutation_prob: float = 0.3
    mask_swap_fraction: float = 0.01
    crossover_prob: float = 0.9
    init_global_fraction: float = 0.0
    mask_mutation: str = "random"
    init_allocations: tuple[str, ...] = ()
    init_allocation_fraction: float = 0.5
    mutation: str = "free"
    smooth_sigma: float = 0.2
    level_switch_prob: float = 0.5
    level_switch_fraction: float = 0.02
    stage_exponents: bool = False


INIT_ALLOCATIONS = ("global", "uniform", "erk", "lamp")  # genome.init_allocations (evo_snn.allocation rules)


NEURON_BACKENDS = ("auto", "torch", "cuda", "triton", "cupy")  # model.neuron_backend (evo_snn.models.neurons)
SPLIT_MODES = ("number", "time")  # how events are cut into frames (evo_snn.data.events)
RESIZE_FILTERS = ("nearest", "box", "bilinear", "hamming", "bicubic", "lanczos")


def image_size_ok(v: Any) -> bool:
    """True for a valid ``data.image_size``: None, an int >= 1, or a pair [H, W] of ints >= 1."""
    items = [v] if not isinstance(v, (list, tuple)) else list(v) if len(v) == 2 else [0]
    return v is None or all(type(x) is int and x >= 1 for x in items)


@dataclass(frozen=True)
class KDConfig:
    """Per-genome fitness: KD-train a student from the genome's sparse teacher.

    mode: which teacher teaches (see ``evo_snn.kd``): 'sparse' (the genome's masked
      teacher), 'self' (the dense teacher), 'default' (teacher-default virtual teacher),
      'ann' (an ANN twin of the teacher), 'none' (cross-entropy only).
      ``--set kd=MODE`` is shorthand for ``--set kd.mode=MODE``.
    Loss (Eq. 4-5 of the sparse-KD paper):
      L = alpha * temperature**2 * KL(softmax(z_t/temperature) || softmax(z_s/temperature))
          + (1 - alpha) * CE(z_s, y)
    default_prob: the virtual teacher's probability of the true class (mode 'default').
    default_form: 'paper' (Eq. 7 of the teacher-default-KD paper: only the virtual
      teacher is softened, softmax(p/temperature), no temperature**2) | 'hinton' (both
      sides softened as in Eq. 4-5, times temperature**2); mode 'default' only.
    epochs: training budget per genome in epochs over the training split (may be < 1).
    student_init: 'teacher' (start from the sparse teacher's weights) | 'scratch'.
    student_mask: 'genome' (keep the genome's masks; pruned weights stay 0) | 'dense'.
    """

    mode: str = "sparse"
    alpha: float = 0.9
    temperature: float = 4.0
    default_prob: float = 0.95
    default_form: str = "paper"
    epochs: float = 1.0
    batch_size: int = 32
    lr: float = 5e-4
    student_init: str = "teacher"
    student_mask: str = "genome"


AMP_MODES = ("none", "bf16", "fp16")  # train.amp (evo_snn.train.autocast)


@dataclass(frozen=True)
class TrainConfig:
    """How every training loop runs (teacher training and each genome's KD training,
    ``evo_snn.train.train_steps``): the GPU hot path. The defaults change nothing.

    amp: automatic mixed precision of the training forwards (student and teacher):
      'none' (default: float32) | 'bf16' (``torch.autocast`` with bfloat16, any device) |
      'fp16' (float16 with a ``GradScaler``; CUDA only). Weights, optimizer state and the
      loss (the KD softmax / KL and cross-entropy) stay float32; validation passes run in
      float32, so accuracies are measured as without AMP.
    channels_last: convert the nets (4-D conv weights) and each batch to the channels-last
      memory layout. spikingjelly's multi-step layers flatten ``[T, N, C, H, W]`` to
      ``[T*N, C, H, W]`` (a view), so a batch laid out as ``[T, N, H, W, C]`` in memory
      reaches every conv and BatchNorm as channels-last; neurons are element-wise and keep
      it. Same values up to float rounding (a spike may flip where a membrane potential
      sits on the threshold). Default false.
    threads: torch CPU threads of the driver and of each worker (null, the default: fitted
      to the machine by ``evo_snn.threads``: the usable CPUs divided by the workers, less the
      cores other processes keep busy, re-checked while training); an int >= 1 fixes it
      (``--threads N``). Float results may differ in the last bits between thread counts.
    eval_batch_size: batch size of the validation passes of the teacher and of every
      evaluation (with the energy counters on the same pass); null (default) = 64 on the
      CPU, where larger batches gained nothing here, and 512 on a GPU, where a validation
      pass is otherwise mostly kernel launches (issue 26). Logits, accuracies and energy
      counts do not depend on it (each sample's neurons start from rest; tested).
    """

    amp: str = "none"
    channels_last: bool = False
    threads: int | None = None
    eval_batch_size: int | None = None


@dataclass(frozen=True)
class SearchConfig:
    """NSGA-II settings. population must be a multiple of 4 (DEAP's selTournamentDCD).

    measure_teacher: measure each genome's sparse teacher on the validation split
      (``teacher_accuracy`` in the metrics, pareto.csv and the model card; about 5-7 % of an
      N-MNIST evaluation). false skips that pass and records ``teacher_accuracy`` as null;
      the search never reads it. Default true.
    final_epochs: KD epochs (may be < 1) with which a selected member is retrained from
      its genome, with the same KD settings, before its single test measurement
      (``evo_snn.baselines``; the baselines get the same retraining); 0 = no
      retraining, the student trained during the search is measured.
    inherit_weights: Lamarckian weight inheritance: a child's student starts from its
      first parent's trained student (restricted to the child's masks; regrown
      connections from the dense teacher) instead of from the teacher, so training
      accumulates over generations. Each evaluation still spends kd.epochs (counted).
    max_retries: how often an evaluation that fails (raises, its Ray worker dies, or it
      outlives eval_timeout_s) is run again, with the same (genome, seed), before it is
      recorded as failed (status 'failed', worst fitness); 0 = never.
    max_failed_generations: the search stops with status 'failed' (one line naming the
      errors) after this many generations in a row in which every evaluation failed; such a
      generation is otherwise logged (``ok_evals`` 0 in generations.csv) and the search goes
      on with the survivors it has. Default 3; 0 = never stop.
    eval_timeout_s: wall-clock limit of one evaluation attempt on a Ray worker, in
      seconds (the worker is then replaced and the attempt counts as a fault); 0 = none.
      The serial evaluator cannot interrupt itself and ignores it.
    objectives: what NSGA-II optimises, names from ``OBJECTIVES``: 'accuracy' (student
      validation accuracy, maximised), 'sparsity' (fraction of zero prunable weights,
      maximised), 'energy' (the student's estimated energy on the validation pass as a
      fraction of its dense bound, ``EnergyReport.energy_fraction``, minimised); e.g.
      ``--set search.objectives=[accuracy,sparsity,energy]`` or ``[accuracy,energy]``.
      Must include 'accuracy'.
    hv_reference: the hypervolume's reference point, {objective: value}; defaults to each
      objective's worst value (accuracy 0, sparsity 0, energy 1), e.g.
      ``--set search.hv_reference.energy=0.5``.
    students_per_batch: K genomes whose students train at once as one grouped network
      (``evo_snn.grouped``: same batches, summed loss, so each student's update is its solo
      update); the search sends its fresh jobs to the evaluator in groups of K, in order.
      A group's batch order and augmentation come from its first member's seed, each
      student's initialisation from its own. 1 (default) = one student per evaluation,
      today's path exactly.
    fidelity_fraction: multi-fidelity evaluation (successive halving inside a generation,
      ``evo_snn.fidelity``): every offspring is first KD-trained for fidelity_fraction x
      kd.epochs (rung 0) and ranked among the generation's offspring only (non-dominated
      sorting + crowding); the best promote_fraction of them continue from their rung-0
      student for the remaining (1 - fidelity_fraction) x kd.epochs (rung 1). Only
      full-fidelity results enter survival, the archive and the export; every sample of
      both rungs is counted. In (0, 1]; 1 (default) or null = off, today's search exactly.
      Generation 0 is evaluated at full fidelity.
    promote_fraction: fraction of a generation's offspring scored at rung 0 that is
      promoted to the full budget, ceil(promote_fraction x n); in (0, 1]. A generation
      then costs about fidelity_fraction + promote_fraction x (1 - fidelity_fraction)
      plain generations (0.625 for 0.25 and 0.5).
    screen: forward-only screening of every generation's fresh children before the KD rung
      (``evo_snn.screening``): 'none' (default, today's search exactly) | 'nll' (the
      candidate's cross-entropy) | 'kl' (KL(dense teacher || candidate), the teacher's logits
      cached once) | 'bn_accuracy' (top-1 accuracy), each after BN recalibration on fixed
      training batches, scored on a fixed validation subset. Only the best screen_promote
      children are KD-trained (then the fidelity rungs, if on); the others are logged with
      ``rung: "screen"`` (status 'screened') and enter neither survival nor the archive.
      Generation 0 is KD-trained whole, as today.
    screen_bn_batches: training batches (of kd.batch_size, drawn once per run) of the BN
      recalibration; >= 1.
    screen_samples: validation images of the fixed screening subset (all of the split when
      it is smaller); >= 1.
    screen_first_share: share in (0, 1] of the subset on which every child is scored first.
    screen_keep: share in (0, 1] of the children (at least screen_promote) scored on the rest
      of the subset (multi-step selection, EvoPress-style).
    screen_promote: screened children that go on to the KD rung per generation; 0 (default)
      = max(1, population // 4).
    screen_group: candidates screened together as one grouped net (``grouped.GroupedNet``:
      one BN-recalibration pass and one forward per batch for up to this many; the same
      scores up to float rounding, the same counted forwards); 1 (default) = one at a time.
      Measured in ``benchmarks/screening_cost.py --group K`` (BENCHMARKS.md).
    finetune_share: share f in [0, 1) of the counted budget kept for fine-tuning the
      search's validation front once (``evo_snn.baselines``, method ``search_finetuned``):
      with S the search's counted compute (screening included) the budget is B = S / (1 - f),
      every ``_long`` baseline spends B, and max(1, floor(f x n)) archive members (n =
      ``--ratios``), chosen on validation, are each retrained from their genome with the
      ``_long`` recipe and per-member training B / n. null (default) = 0.85 with
      search.screen on, 0 (no fine-tuning, the comparison as before) with screen 'none'.
    """

    population: int = 8
    generations: int = 3
    workers: int = 1
    seed: int = 0
    tag: str = "search"
    measure_teacher: bool = True
    final_epochs: float = 0.0
    inherit_weights: bool = False
    max_retries: int = 2
    max_failed_generations: int = 3
    eval_timeout_s: float = 0.0
    objectives: tuple[str, ...] = ("accuracy", "sparsity")
    hv_reference: dict = field(default_factory=lambda: {k: v[2] for k, v in OBJECTIVES.items()})
    students_per_batch: int = 1
    fidelity_fraction: float | None = 1.0
    promote_fraction: float = 0.5
    screen: str = "none"
    screen_bn_batches: int = 20
    screen_samples: int = 1000
    screen_first_share: float = 0.25
    screen_keep: float = 0.5
    screen_promote: int = 0
    screen_group: int = 1
    finetune_share: float | None = None

    def resolved_finetune_share(self) -> float:
        """``finetune_share`` with its default resolved: 0.85 when ``screen`` is not 'none',
        else 0.0."""
        if self.finetune_share is None:
            return FINETUNE_SHARE_SCREENED if str(self.screen or "none") != "none" else 0.0
        return float(self.finetune_share)


FINETUNE_SHARE_SCREENED = 0.85  # search.finetune_share's default with search.screen on
SCREENS = ("none", "nll", "kl", "bn_accuracy")  # search.screen (evo_snn.screening)


OBJECTIVES = {
    # name: (key in the fitness metrics, DEAP weight: +1 maximised / -1 minimised, worst value)
    "accuracy": ("accuracy", 1.0, 0.0),
    "sparsity": ("sparsity", 1.0, 0.0),
    "energy": ("energy_fraction", -1.0, 1.0),
}
"""The objectives a search may use (``search.objectives``): the one table that
``evo_snn.nsga`` builds its DEAP fitness weights and hypervolume reference from."""


@dataclass(frozen=True)
class EnergyConfig:
    """Energy estimate of a student (``evo_snn.energy``, NeuroBench SynOps definitions):
    energy = e_ac_pj x effective ACs + e_mac_pj x effective MACs, per sample.

    e_ac_pj: pJ per accumulate, default 0.9 (32-bit float add, 45 nm; Horowitz,
      "Computing's energy problem", ISSCC 2014).
    e_mac_pj: pJ per multiply-accumulate, default 4.6 (32-bit float multiply 3.7 + add 0.9,
      45 nm; Horowitz 2014).
    """

    e_ac_pj: float = 0.9
    e_mac_pj: float = 4.6


FAULT_KINDS = ("raise", "exit", "hang")  # evo_snn.faults: what an injected fault does


@dataclass(frozen=True)
class FaultsConfig:
    """Fault injection (``evo_snn.faults``): check that a run, or a cluster, survives
    worker faults before a long run. Off by default (fail_rate 0).

    fail_rate: probability in [0, 1) that one evaluation attempt is given a fault,
      drawn from (seed, the evaluation's seed, the attempt number), so a retry of the
      same evaluation draws again.
    kinds: the faults drawn from, uniformly: 'raise' (the fitness raises
      ``InjectedFault``), 'exit' (the worker process exits at once, as if killed),
      'hang' (the worker sleeps until ``search.eval_timeout_s`` ends the attempt).
      'exit' and 'hang' need Ray workers (search.workers > 1); 'hang' needs
      search.eval_timeout_s > 0.
    seed: seed of the fault draws (independent of search.seed).
    """

    fail_rate: float = 0.0
    kinds: tuple[str, ...] = FAULT_KINDS
    seed: int = 0


@dataclass(frozen=True)
class Config:
    dataset: str = "synthetic"
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
        """Build from nested dicts; raises ConfigError on unknown keys or bad types."""
        return _from_dict(cls, d, prefix="")

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
            key, raw = item.split("=", 1)
            if key.strip() == "kd":  # --set kd=MODE is shorthand for kd.mode=MODE
                key = "kd.mode"
            parts = key.strip().split(".")
            node = d
            for p in parts[:-1]:
                if not isinstance(node.get(p), dict):
                    raise ConfigError(f"--set {item!r}: unknown section {p!r}; known: {sorted(k for k, v in node.items() if isinstance(v, dict))}")
                node = node[p]
            if parts[-1] not in node or isinstance(node[parts[-1]], dict):
                raise ConfigError(f"--set {item!r}: unknown key {key!r}; known: {sorted(node)}")
            node[parts[-1]] = yaml.safe_load(raw)
        return Config.from_dict(d)

    def validate(self) -> "Config":
        """Check value ranges; returns self or raises ConfigError."""
        self.data.check()
        checks = [
            (0.0 <= self.genome.ratio_min <= self.genome.ratio_max < 1.0, "need 0 <= genome.ratio_min <= genome.ratio_max < 1"),
            (0.0 <= self.kd.alpha <= 1.0, "kd.alpha must be in [0, 1]"),
            (self.kd.temperature > 0, "kd.temperature must be > 0"),
            (self.kd.mode in _kd_modes(), f"kd.mode must be one of {list(_kd_modes())}"),
            (0.0 < self.kd.default_prob < 1.0, "kd.default_prob must be in (0, 1)"),
            (self.kd.default_form in ("paper", "hinton"), "kd.default_form must be 'paper' or 'hinton'"),
            (math.isfinite(self.kd.epochs) and self.kd.epochs > 0, "kd.epochs must be a finite number > 0"),
            (self.kd.batch_size >= 1, f"kd.batch_size must be >= 1, got {self.kd.batch_size}"),
            (math.isfinite(self.kd.lr) and self.kd.lr > 0, f"kd.lr must be a finite number > 0, got {self.kd.lr}"),
            (self.teacher.epochs >= 1, f"teacher.epochs must be >= 1 (an untrained teacher teaches nothing), "
                                       f"got {self.teacher.epochs}; reuse a trained one with --teacher PATH"),
            (self.teacher.batch_size >= 1, f"teacher.batch_size must be >= 1, got {self.teacher.batch_size}"),
            (math.isfinite(self.teacher.lr) and self.teacher.lr > 0,
             f"teacher.lr must be a finite number > 0, got {self.teacher.lr}"),
            (math.isfinite(self.teacher.weight_decay) and self.teacher.weight_decay >= 0,
             f"teacher.weight_decay must be a finite number >= 0, got {self.teacher.weight_decay}"),
            (self.kd.student_init in ("teacher", "scratch"), "kd.student_init must be 'teacher' or 'scratch'"),
            (self.kd.student_mask in ("genome", "dense"), "kd.student_mask must be 'genome' or 'dense'"),
            (self.train.threads is None or (isinstance(self.train.threads, int) and not isinstance(self.train.threads, bool)
                                            and self.train.threads >= 1),
             f"train.threads must be null (fit to the machine) or an integer >= 1, got {self.train.threads!r}"),
            (self.train.eval_batch_size is None or (isinstance(self.train.eval_batch_size, int)
                                                    and not isinstance(self.train.eval_batch_size, bool)
                                                    and self.train.eval_batch_size >= 1),
             f"train.eval_batch_size must be null (64 on the CPU, 512 on a GPU) or an integer >= 1, "
             f"got {self.train.eval_batch_size!r}"),
            (self.train.amp in AMP_MODES, f"train.amp must be one of {list(AMP_MODES)}, got {self.train.amp!r}"),
            (self.model.neuron_backend in NEURON_BACKENDS,
             f"model.neuron_backend must be one of {list(NEURON_BACKENDS)}, got {self.model.neuron_backend!r}"),
            (self.search.population >= 4 and self.search.population % 4 == 0, "search.population must be a multiple of 4 (>= 4)"),
            (isinstance(self.search.seed, int) and not isinstance(self.search.seed, bool) and 0 <= self.search.seed < 2**32,
             f"search.seed must be an integer in [0, 2**32) (numpy seeds), got {self.search.seed!r}"),
            (self.search.generations >= 0, "search.generations must be >= 0"),
            (self.search.workers >= 1, "search.workers must be >= 1"),
            (isinstance(self.search.students_per_batch, int) and self.search.students_per_batch >= 1,
             "search.students_per_batch must be an integer >= 1"),
            (self.search.final_epochs >= 0, "search.final_epochs must be >= 0"),
            (self.search.fidelity_fraction is None or (isinstance(self.search.fidelity_fraction, float)
                                                       and 0.0 < self.search.fidelity_fraction <= 1.0),
             "search.fidelity_fraction must be a number in (0, 1] (1 or null = one fidelity, the default)"),
            (isinstance(self.search.promote_fraction, float) and 0.0 < self.search.promote_fraction <= 1.0,
             "search.promote_fraction must be a number in (0, 1]"),
            (self.search.screen in SCREENS, f"search.screen must be one of {list(SCREENS)}, got {self.search.screen!r}"),
            (self.search.screen_bn_batches >= 1, "search.screen_bn_batches must be an integer >= 1"),
            (self.search.screen_samples >= 1, "search.screen_samples must be an integer >= 1"),
            (0.0 < self.search.screen_first_share <= 1.0, "search.screen_first_share must be in (0, 1]"),
            (0.0 < self.search.screen_keep <= 1.0, "search.screen_keep must be in (0, 1]"),
            (type(self.search.screen_group) is int and self.search.screen_group >= 1,
             f"search.screen_group must be an integer >= 1, got {self.search.screen_group!r}"),
            (self.search.screen_promote >= 0, "search.screen_promote must be an integer >= 0 (0 = population // 4)"),
            (self.search.finetune_share is None or (isinstance(self.search.finetune_share, (int, float))
                                                    and not isinstance(self.search.finetune_share, bool)
                                                    and 0.0 <= self.search.finetune_share < 1.0),
             f"search.finetune_share must be null (default) or a number in [0, 1), got {self.search.finetune_share!r}"),
            (0.0 <= self.genome.init_global_fraction <= 1.0, "genome.init_global_fraction must be in [0, 1]"),
            (self.genome.mask_mutation in ("random", "magnitude"), "genome.mask_mutation must be 'random' or 'magnitude'"),
            (set(self.genome.init_allocations) <= set(INIT_ALLOCATIONS) and len(set(self.genome.init_allocations)) == len(self.genome.init_allocations),
             f"genome.init_allocations must be a list of distinct rules from {list(INIT_ALLOCATIONS)}, got {list(self.genome.init_allocations)}"),
            (0.0 <= self.genome.init_allocation_fraction <= 1.0, "genome.init_allocation_fraction must be in [0, 1]"),
            (self.genome.mutation in ("free", "smooth"), f"genome.mutation must be 'free' or 'smooth', got {self.genome.mutation!r}"),
            (self.genome.smooth_sigma >= 0, "genome.smooth_sigma must be >= 0"),
            (0.0 <= self.genome.level_switch_prob <= 1.0, "genome.level_switch_prob must be in [0, 1]"),
            (0.0 < self.genome.level_switch_fraction <= 1.0, "genome.level_switch_fraction must be in (0, 1]"),
            (isinstance(self.genome.stage_exponents, bool), f"genome.stage_exponents must be true or false, got {self.genome.stage_exponents!r}"),
            (self.search.max_retries >= 0, "search.max_retries must be >= 0"),
            (self.search.max_failed_generations >= 0, "search.max_failed_generations must be >= 0 (0 = never stop)"),
            (self.search.eval_timeout_s >= 0, "search.eval_timeout_s must be >= 0 (0 = no limit)"),
            (0.0 <= self.faults.fail_rate < 1.0, "faults.fail_rate must be in [0, 1)"),
            (len(self.faults.kinds) > 0 and set(self.faults.kinds) <= set(FAULT_KINDS),
             f"faults.kinds must be a non-empty list of {list(FAULT_KINDS)}"),
            (self.faults.fail_rate == 0 or self.search.workers > 1 or set(self.faults.kinds) <= {"raise"},
             "faults.kinds 'exit' and 'hang' need Ray workers (search.workers > 1); "
             "with one worker use --set faults.kinds=[raise]"),
            (self.faults.fail_rate == 0 or "hang" not in self.faults.kinds or self.search.eval_timeout_s > 0,
             "faults.kinds 'hang' needs search.eval_timeout_s > 0 (a hung evaluation is ended by the timeout)"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ConfigError(msg)
        self._check_objectives()
        return self

    def _check_objectives(self) -> None:
        """search.objectives, search.hv_reference and energy.*; raises ConfigError."""
        objs, ref = list(self.search.objectives), self.search.hv_reference
        unknown = [o for o in objs if o not in OBJECTIVES]
        checks = [
            (not unknown, f"search.objectives: unknown {unknown}; known: {list(OBJECTIVES)}"),
            (len(objs) >= 2 and len(set(objs)) == len(objs) and "accuracy" in objs,
             f"search.objectives must name 2 or more distinct objectives including 'accuracy', got {objs}"),
            (isinstance(ref, dict) and set(ref) <= set(OBJECTIVES),
             f"search.hv_reference must map objectives {list(OBJECTIVES)} to numbers, got {ref!r}"),
            (isinstance(ref, dict) and all(o in ref for o in objs),
             f"search.hv_reference lacks {[o for o in objs if not isinstance(ref, dict) or o not in ref]}"),
            (isinstance(ref, dict) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in ref.values()),
             f"search.hv_reference values must be numbers, got {ref!r}"),
            (self.energy.e_ac_pj >= 0 and self.energy.e_mac_pj >= 0, "energy.e_ac_pj and energy.e_mac_pj must be >= 0 (pJ)"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ConfigError(msg)


def read_run_config(path: str | Path, generations: int | None = None, workers: int | None = None,
                    threads: int | None = None) -> Config:
    """The resolved config of a run (its config.json), with ``search.generations`` /
    ``search.workers`` / ``train.threads`` replaced where given (``--resume``,
    ``evo_snn.baselines``); raises ConfigError naming the file."""
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
        raise ConfigError(f"{path} not found; RUN_DIR must be a run directory of evo_snn.search") from e
    except (OSError, ValueError) as e:  # ConfigError and json.JSONDecodeError are ValueErrors
        raise ConfigError(f"{path}: {e}") from e


def _kd_modes() -> tuple[str, ...]:
    from .kd import KD_MODES  # the one table of KD modes lives with the losses

    return KD_MODES


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


def _from_dict(cls, d: Any, prefix: str):
    if not isinstance(d, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {type(d).__name__}")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(d) - set(known))
    if unknown:
        raise ConfigError(f"unknown key(s) {[prefix + k for k in unknown]}; known: {sorted(known)}")
    kwargs = {}
    for name, value in d.items():
        f = known[name]
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if dataclasses.is_dataclass(default):
            kwargs[name] = _from_dict(type(default), value, prefix + name + ".")
        elif isinstance(default, tuple):
            if not isinstance(value, (list, tuple)):
                raise ConfigError(f"{prefix}{name}: expected a list, got {value!r}")
            kwargs[name] = tuple(value)
        elif isinstance(default, bool):
            if not isinstance(value, bool):
                raise ConfigError(f"{prefix}{name}: expected true/false, got {value!r}")
            kwargs[name] = value
        elif isinstance(default, float) and isinstance(value, (int, float)) and not isinstance(value, bool):
            kwargs[name] = float(value)
        elif isinstance(default, float) and not (value is None and "None" in str(f.type)):
            hint = " (YAML writes them .nan and .inf, which are refused where a finite number is needed)" \
                if str(value).lower().lstrip("+-") in ("nan", "inf", "infinity") else ""
            raise ConfigError(f"{prefix}{name}: expected a number, got {value!r}{hint}")
        elif isinstance(default, int) and not isinstance(default, bool):
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"{prefix}{name}: expected an integer, got {value!r}")
            kwargs[name] = value
        elif isinstance(default, str) and not isinstance(value, str):
            raise ConfigError(f"{prefix}{name}: expected a string, got {value!r}")
        else:
            kwargs[name] = tuple(value) if isinstance(value, list) else value
    return cls(**kwargs)
