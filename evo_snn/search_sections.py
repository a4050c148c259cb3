"""The sections of the run configuration that say how the search runs: ``genome`` (the
search space over sparse structure and its variation), ``kd`` (each genome's fitness,
knowledge distillation into its student), ``search`` (NSGA-II, its objectives, the
evaluator, multi-fidelity, screening, fine-tuning share), ``energy`` (the energy
estimate's pJ per operation) and ``faults`` (fault injection).

Frozen dataclasses, each key declared with ``key(...)`` (``evo_snn.schema``); building one
checks nothing, ``Config.validate`` (``evo_snn.config``) does. ``evo_snn.config``
re-exports every name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Literal, Optional, Union

from pydantic import AfterValidator

from evo_snn.choices import FAULT_KINDS, FINETUNE_SHARE_SCREENED, INIT_ALLOCATIONS, KD_MODES, OBJECTIVES, SCREENS
from evo_snn.schema import SCHEMA, SEED_BOUND, Num, OneOf, Str, distinct, key


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
    init_allocations: Annotated[tuple[Literal[INIT_ALLOCATIONS], ...], AfterValidator(distinct), key(
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
        "measure each genome's sparse teacher on the validation split (``teacher_accuracy`` in evaluations.jsonl "
        "and pareto.csv). The search never reads it, and the pass costs about 5-7 % of an N-MNIST evaluation and "
        "40 % of a CIFAR-10 one, so it is off by default (issue 26): ``teacher_accuracy`` is then null there, and "
        "the export measures each exported member's sparse teacher on validation instead (the same number: the "
        "same net on the same split), for metrics.json and the model card.")] = False
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

