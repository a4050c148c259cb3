"""``python -m evo_snn.baselines RUN_DIR``: the search against one-shot pruning, on test data.

A structure search is worth running only if its front beats what a user gets by
pruning the teacher once by weight magnitude, at the same compute. This stage
answers that for a finished run, with the run's own fitness (teacher, KD settings,
per-genome budget, seed scheme):

- ``uniform``: every layer pruned by its own |W| at one ratio, for each ``--ratios``;
- ``global``: one |W| threshold over all prunable weights (Eq. 3 of the sparse-KD
  paper applied globally) at each ``--ratios`` sparsity;
- ``random``: random genomes (``GenomeOps.random``), as many as the search evaluated;
- ``global_long``: ``global`` at equal compute: each ratio's student is KD-trained for
  the search's training samples divided by the number of ratios (kd.epochs scaled up),
  what a user with the search's budget would do instead of searching;
- ``lamp``, ``erk``, ``energy_aware`` (``evo_snn.structure.allocation``): other per-layer allocations
  of the same exact number of pruned weights at each ``--ratios`` sparsity, magnitude
  pruning within each layer: LAMP scores (Lee et al. 2021) under one global threshold,
  Erdős–Rényi-Kernel densities (RigL, Evci et al. 2020), and one global threshold on
  |W| / (the layer's dense SynOps per weight per sample, measured on the teacher); each
  trained with ``global``'s seed at the same ratio, so they differ from it in the
  allocation only. ``lamp_long``, ``erk_long``, ``energy_aware_long``: the same genomes at
  equal compute, exactly as ``global_long`` is to ``global`` (and with its seeds);
- ``global_matched``: ``global`` at each search member's sparsity, paired with that member
  (same seed, hence the same batch order when retrained). With ``--final-epochs E`` both
  sides are retrained from their genomes for the same E epochs, so a pair differs only in
  its mask: the paired test-accuracy difference (``paired`` in comparison.json) says whether
  the search found better structures than global magnitude pruning at equal training.

Protocol (the same rule for the search and every baseline):

1. each genome is KD-trained and scored on the **validation** split (``GenomeFitness``);
2. a method's members are its validation-non-dominated points (the search: its archive);
3. with ``search.final_epochs > 0`` each member is retrained from its genome for that
   many KD epochs (same KD settings, the member's own seed) - the baselines get the
   same retraining;
4. each member's student is measured once on the **test** split; nothing is selected
   on test accuracy.

Two fronts, each with the protocol above:

- **sparsity front** (accuracy, sparsity), both maximised, hypervolume reference (0, 0):
  a method's members are its validation-non-dominated points in (accuracy, sparsity)
  (``selected``);
- **energy front** (accuracy, 1 - energy fraction): the energy fraction is the student's
  estimated energy per sample over its dense bound (``EnergyReport.energy_fraction``, the
  ``energy`` objective of the search, ``energy.e_ac_pj`` / ``energy.e_mac_pj`` of the run).
  A method's members are its validation-non-dominated points in (accuracy, energy
  fraction on the validation pass, as the fitness measured it: pareto.csv's
  ``energy_fraction``) (``selected_energy``); the search picks them among its archive.
  On test, the energy fraction is counted (``evo_snn.evaluation.energy.EnergyCounter``) on the same
  test pass that measures the accuracy, and the test hypervolume is ``nsga.hypervolume``
  of (accuracy maximised, energy fraction minimised) with reference (0, the run's
  ``search.hv_reference['energy']``, default 1), i.e. the area in (accuracy,
  1 - energy fraction) above (0, 1 - reference): with the default reference, from (0, 0).
  ``hypervolume_dense_ref`` takes the dense teacher's validation energy fraction as the
  energy reference instead (``energy_hv_reference_dense``), since spiking nets spend a few
  percent of the dense bound and with reference 1 the hypervolume is nearly the best
  accuracy. Caveat: with accuracy reference 0, a silent student (no spikes, energy ~0, chance
  accuracy) still adds chance x reference to the energy front's hypervolume.

**Fine-tune once** (``search.finetune_share`` f, or ``--finetune-share``; default 0.85 when
the run screened, ``search.screen`` != 'none', else 0: no fine-tuning, the comparison exactly
as before). With f > 0 and n = len(--ratios) (``finetune_budget``):

- S = the search's counted compute (``search_compute``: KD training samples plus screening
  forwards in training-sample equivalents), B = S / (1 - f) the total budget, per_member =
  B / n;
- every ``_long`` baseline spends B (each of its n students per_member samples: kd.epochs
  = per_member / train size) instead of S;
- ``search_finetuned``: k = max(1, floor(f x n)) members of the search's archive, chosen on
  **validation** only (``finetune_targets`` / ``select_finetune``): the k target sparsities are
  the sorted ``--ratios`` at positions floor((i + 1/2) n / k), i < k (spread like the ratios);
  for each target in ascending order the not yet chosen archive member of highest
  validation accuracy among those with validation sparsity >= the target (none: the
  sparsest one left). Each is retrained from its genome with exactly the ``_long`` recipe
  (the same fitness, KD mode, per_member samples) and the seed of the ``_long`` student at
  its target ratio (the same batch order: a pair differs in its allocation only); its
  validation front (as for every method) is measured once on test. It spends S + k x
  per_member <= B. ``best_baseline`` then compares ``search_finetuned`` (its ``search_method``)
  with the best ``_long`` baseline; ``search`` (the students as the search trained them) is
  still reported. comparison.json's ``finetune`` records finetune_share, search_compute (S),
  budget (B), per_member, k, targets, the members' partners and finetune_samples.

Outputs in RUN_DIR: ``baselines.csv`` (one row per evaluated point: method, uid,
ratio, genome key, validation accuracy, sparsity, whether selected, test accuracy,
training samples; then ``val_energy_fraction``, ``selected_energy``,
``test_energy_fraction``, ``test_energy_pj``), ``comparison.json`` (per method: test
hypervolume with reference (0, 0), best test accuracy at sparsity >= 0.5 / 0.7 / 0.8 /
0.9 / 0.95, evaluations and training samples processed, the counted compute; then
``test_energy`` / ``val_energy`` (hypervolume on the energy front, best accuracy at
energy fraction <= 0.5 / 0.2 / 0.1 / 0.05 / 0.02 / 0.01), ``energy_members``,
``energy_retrain_samples``, ``energy_compute_samples``; at the top ``energy_hv_reference``,
``energy_hv_reference_dense`` (the dense teacher's validation energy fraction, the
reference of each energy summary's ``hypervolume_dense_ref``),
``dense_teacher_test_energy_fraction`` and ``best_baseline``: per front, the best
``_long`` baseline (equal compute) by test hypervolume and the search's difference to it),
``plots/comparison.png`` (test fronts: accuracy against sparsity, and against energy
fraction) and ``plots/pareto.png`` redrawn with each baseline's validation front.

Compute is counted in training samples processed (``evo_snn.training.train.samples_processed``):
every evaluation plus every retraining. The dense teacher is shared by all methods
and not counted.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from evo_snn.cli import choice_list, epochs_list, ratio_list, show_progress
from evo_snn.config import ConfigError
from evo_snn.data import DatasetFormatError
from evo_snn.state.checkpoint import CheckpointError
from evo_snn.state.rundir import RunDir, RunDirError, sigterm_as_interrupt
from evo_snn.training.kd import KD_MODES
from evo_snn.training.teacher import TeacherLoadError
# the stage's pieces (budget, methods, fronts, Comparison, report), re-exported: the names
# other modules, benchmarks and tests import from evo_snn.analysis.baselines
from evo_snn.analysis.budget import finetune_budget, finetune_targets, select_finetune  # noqa: F401 (re-exported)
from evo_snn.analysis.comparison import Comparison  # noqa: F401 (re-exported)
from evo_snn.analysis.fronts import (FIXED_ENERGY_FRACTIONS, FIXED_SPARSITIES, FRONTS, accuracy_at_energy,  # noqa: F401 (re-exported)
                                     accuracy_at_sparsity, best_baseline, energy_front_summary, energy_hypervolume,
                                     energy_nondominated, front_summary, paired_difference)
from evo_snn.analysis.methods import (DEFAULT_METHODS, DEFAULT_RATIOS, FINETUNED, LONG, METHODS, STREAMS,  # noqa: F401 (re-exported)
                                      Member, baseline_genomes)
from evo_snn.analysis.report import _redraw_pareto, compare, format_comparison  # noqa: F401 (re-exported)

EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m evo_snn.baselines", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory of evo_snn.search.run with checkpoints/")
    p.add_argument("--methods", type=choice_list(METHODS, "method(s)", allow_none=True), default=list(DEFAULT_METHODS), help="comma-separated, from "
                   f"{','.join(METHODS)}, or 'none' (only the search front is measured) (default: "
                   f"{','.join(DEFAULT_METHODS)}; global_matched pairs each search member with global magnitude "
                   "pruning at its sparsity and seed: use it with --final-epochs; lamp, erk, energy_aware: LAMP, "
                   "Erdos-Renyi-Kernel and |W|/SynOps-per-weight allocations at the --ratios sparsities with "
                   "global's seeds; each METHOD_long is METHOD at equal compute, as global_long is to global)")
    p.add_argument("--suffix", default="", help="write baselines-SUFFIX.csv, comparison-SUFFIX.json and "
                   "plots/comparison-SUFFIX.png, e.g. to keep several comparisons of one run side by side")
    p.add_argument("--ratios", type=ratio_list, default=list(DEFAULT_RATIOS),
                   help="prune ratios / sparsities of the uniform, global and allocation baselines (default: "
                   "0.1,...,0.9,0.95)")
    p.add_argument("--random-evals", type=int, default=None,
                   help="random genomes to evaluate (default: as many evaluations as the search made; for a "
                   "multi-fidelity search as many full evaluations as its training samples pay for)")
    p.add_argument("--final-epochs", type=epochs_list, default=None,
                   help="retrain every selected member this many KD epochs before the test; comma-separated for several "
                   "measurements of one evaluation pass, e.g. 0,2 (files of E > 0 get -feE) (default: the run's "
                   "search.final_epochs)")
    p.add_argument("--kd", default=None, choices=KD_MODES, metavar="MODE",
                   help="fine-tune the baselines (and any --final-epochs retraining) with this KD mode instead of "
                   f"the run's, one of {', '.join(KD_MODES)}; the search's students are measured as trained "
                   "(default: the run's kd.mode)")
    p.add_argument("--finetune-share", type=float, default=None, metavar="F",
                   help="share in [0, 1) of the counted budget B = S / (1 - F) kept for fine-tuning max(1, floor(F x "
                   "n_ratios)) validation-chosen search members once with the _long recipe (method search_finetuned); "
                   "every _long baseline then spends B (default: the run's search.finetune_share: 0.85 with "
                   "search.screen on, else 0)")
    p.add_argument("--workers", type=int, default=None, help="parallel evaluations (default: the run's search.workers)")
    p.add_argument("--address", default=None, help="address of an existing Ray cluster")
    p.add_argument("--data-root", default=None, help="data root (default: the one recorded in manifest.json)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    if args.random_evals is not None and args.random_evals < 0:
        print("error: --random-evals must be >= 0", file=sys.stderr)
        return EXIT_USAGE
    if args.finetune_share is not None and not 0.0 <= args.finetune_share < 1.0:
        print("error: --finetune-share must be in [0, 1)", file=sys.stderr)
        return EXIT_USAGE
    try:
        if not (Path(args.run_dir) / "config.json").is_file():
            raise RunDirError(f"{Path(args.run_dir) / 'config.json'} not found; RUN_DIR must be a run directory of evo_snn.search.run")
        run = RunDir.open(args.run_dir)
        with sigterm_as_interrupt():
            docs = compare(run, args.methods, args.ratios, args.random_evals, args.suffix, args.final_epochs,
                           data_root=args.data_root, workers=args.workers, address=args.address, progress=show_progress(args),
                           kd_mode=args.kd, finetune_share=args.finetune_share)
    except (ConfigError, DatasetFormatError, RunDirError, CheckpointError, TeacherLoadError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted (comparison.json not written)", file=sys.stderr)
        return 130
    for doc in docs:
        kd = "" if doc["baseline_kd_mode"] == doc["kd_mode"] else f", baselines fine-tuned with kd={doc['baseline_kd_mode']}"
        print(f"final retraining {doc['final_epochs']:g} epochs{kd}:")
        print(format_comparison(doc))
        print(f"dense teacher test accuracy {doc['dense_teacher_test_accuracy']:.4f}; wrote {run.path / doc['files']['json']}")
    return 0
