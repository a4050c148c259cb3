"""``Comparison``: the run's fitness reloaded for ``evo_snn.analysis.baselines`` (its config,
checkpoint, data splits and teacher): evaluates the search's archive and each baseline
method on validation, fine-tunes the chosen search members, retrains and measures every
selected member once on test (accuracy and energy on the same pass).

Raises ConfigError, DatasetFormatError, RunDirError, CheckpointError, TeacherLoadError
when the run cannot be reloaded (``Comparison.__init__``).
"""

from __future__ import annotations

import dataclasses

import numpy as np
from tqdm.auto import tqdm

from evo_snn.config import ConfigError, read_run_config
from evo_snn.data import load_splits
from evo_snn.evaluation import energy
from evo_snn.evaluation.energy import EnergyCounter
from evo_snn.evaluation.evaluator import genome_fitness, make_evaluator
from evo_snn.evaluation.fitness import FitnessContext, default_device, with_epochs
from evo_snn.evaluation.individual import eval_seed
from evo_snn.models import build_model
from evo_snn.state.checkpoint import CheckpointError, load_checkpoint
from evo_snn.state.rundir import RunDir
from evo_snn.structure.genome import Genome, GenomeOps
from evo_snn.structure.pruning import prunable_layers, weight_magnitudes
from evo_snn.training.teacher import prepare as prepare_teachers
from evo_snn.training.train import accuracy, cpu_state
from evo_snn.analysis.budget import finetune_targets, long_epochs, random_evaluations, search_compute, select_finetune
from evo_snn.analysis.fronts import select_energy_front, select_fronts
from evo_snn.analysis.methods import (ENERGY_KEY, FINETUNED, LONG, STREAMS, Member, allocation_of, baseline_genomes,
                                      member_of)


class Comparison:
    """The run's fitness, reloaded: evaluates genomes, retrains members, measures test accuracy.

    run: the run directory (config.json, manifest.json, teacher/, checkpoints/).
    data_root: overrides the manifest's. workers / address: as for the search.
    finetune_share: overrides the run's ``search.finetune_share`` (resolved: 0.85 with screening,
    else 0), ``finetune_budget``.
    kd_mode: fine-tune the baselines, and retrain every member (the search's included), with
    this KD mode instead of the run's (``kd.KD_MODES``), e.g. ``none`` to compare a ``kd=self``
    search with the baselines at their best fitness; the search's own students, trained by
    the search, are measured as they are. ``search_kd_mode`` keeps the run's.
    raises ConfigError, DatasetFormatError, RunDirError, CheckpointError, TeacherLoadError.
    """

    def __init__(self, run: RunDir, data_root: str | None = None, workers: int | None = None,
                 address: str | None = None, progress: bool = True, kd_mode: str | None = None,
                 finetune_share: float | None = None, verify_students: bool = True):
        self.cfg = cfg = read_run_config(run.path / "config.json", workers=workers)
        self.finetune_share = cfg.search.resolved_finetune_share() if finetune_share is None else float(finetune_share)
        if not 0.0 <= self.finetune_share < 1.0:
            raise ConfigError(f"finetune_share must be in [0, 1), got {finetune_share!r}")
        self.search_kd_mode = cfg.kd.mode
        if kd_mode is not None and kd_mode != cfg.kd.mode:
            try:
                self.cfg = cfg = dataclasses.replace(cfg, kd=dataclasses.replace(cfg.kd, mode=kd_mode)).validate()
            except ValueError as e:
                raise ConfigError(f"--kd {kd_mode}: {e}") from e
        self.run, self.address, self.progress = run, address, progress
        self.ckpt = load_checkpoint(run.checkpoints, verify_students=verify_students)
        root = data_root or run.manifest.get("data_root")
        self.splits = load_splits(cfg.dataset, root, cfg.data, seed=cfg.split_seed(), progress=progress)
        self.device = default_device()
        # the run's own teacher (and ANN twin), reloaded as --resume does
        teachers = prepare_teachers(cfg, self.splits, self.device, run_teacher_dir=run.teacher, resume=True,
                                    progress=progress)
        self.teacher, ann = teachers.dense, teachers.ann_state
        self.layers = tuple(prunable_layers(self.teacher, cfg.genome.prunable))
        self.ops = GenomeOps(weight_magnitudes(self.teacher, self.layers), cfg.genome)
        self._evaluator, self._fitness = None, {}
        self._synops_per_weight = None
        self.ctx = FitnessContext(self.cfg, self.splits.train, self.splits.val, self.splits.frame_shape,
                                  self.splits.num_classes, cpu_state(self.teacher),
                                  self.layers, ann)

    # ------------------------------------------------------------ evaluation
    def evaluate(self, jobs: list[tuple[Genome, int]], epochs: float | None = None, desc: str = "evaluations"):
        """Fitness results (``FitnessResult`` or the Exception) of ``[(genome, seed)]`` in
        order; ``epochs`` replaces kd.epochs (retraining)."""
        out: list = [None] * len(jobs)
        if not jobs:
            return out
        if self._evaluator is None:  # one evaluator (Ray started once) for the whole comparison
            self._evaluator = make_evaluator(self.cfg.search.workers, self.address)
        if epochs not in self._fitness:  # built once per budget, on each worker
            self._fitness[epochs] = genome_fitness(self.ctx if epochs is None else with_epochs(self.ctx, epochs), self.address)
        bar = tqdm(total=len(jobs), desc=desc, unit="eval", disable=not self.progress, leave=False)
        for i, res in self._evaluator.map(self._fitness[epochs], jobs):
            out[i] = res
            bar.update(1)
        bar.close()
        return out

    def synops_per_weight(self) -> dict[str, float]:
        """{layer: dense SynOps per weight per sample} of the dense teacher (the ``energy_aware``
        baselines), measured once on an all-zero ``x_seq`` of the data's frame shape
        (``[T, 1, C, H, W]``): dense counts depend on shapes only, so no split is read."""
        if self._synops_per_weight is None:
            import torch

            x_seq = torch.zeros((self.splits.frame_shape[0], 1, *self.splits.frame_shape[1:]), device=self.device)
            self._synops_per_weight = energy.synops_per_weight(self.teacher, x_seq, self.layers)
        return self._synops_per_weight

    def close(self) -> None:
        """Stop the evaluator (and the Ray instance it started)."""
        if self._evaluator is not None:
            self._evaluator.close()
            self._evaluator = None

    def search_members(self, uids: set[str] | None = None) -> list[Member]:
        """The search's archive (its validation front) from the last checkpoint; with
        ``uids``, only those members, whose students alone are read (``evo_snn.deploy.export``:
        a damaged student of another member does not stop an export)."""
        state = self.ckpt.state
        members = []
        for rec in state["archive"]:
            if rec["status"] == "failed" or (uids is not None and rec["uid"] not in uids):
                continue
            g = state["genomes"][rec["genome_key"]]
            genome = Genome(g.layers, tuple(float(r) for r in rec["ratios"]), g.masks)
            if rec["genome_key"] not in state["results"]:
                raise CheckpointError(f"{self.run.checkpoints}: no student for archive member {rec['uid']}")
            try:
                student = self.ckpt.students.get(rec["genome_key"])
            except Exception as e:  # a truncated or replaced file (D4 of issue 27): one line naming it
                raise CheckpointError(f"{self.ckpt.students.path(rec['genome_key'])}: the student of {rec['uid']} "
                                      f"cannot be loaded ({type(e).__name__}); it was damaged after the run wrote it") from e
            members.append(Member("search", rec["uid"], genome, int(rec["seed"]), dict(rec["metrics"]),
                                  student, selected=True))
        select_energy_front(members)  # the archive's validation front in (accuracy, energy fraction)
        return members

    def search_compute(self) -> tuple[int, int]:
        """(evaluations, training samples) the search spent up to the last checkpoint
        (``budget.search_compute`` of the run's evaluations.jsonl)."""
        return search_compute(self.run.path / "evaluations.jsonl", len(self.splits.train), self.cfg.kd, self.ckpt.gen)

    def random_evaluations(self, n_search: int, search_samples: int) -> int:
        """How many random genomes the ``random`` baseline evaluates by default (``budget.random_evaluations``)."""
        return random_evaluations(self.cfg, len(self.splits.train), n_search, search_samples)

    def baseline_members(self, method: str, ratios, n_random: int, search_samples: int = 0,
                         search: list[Member] | None = None) -> list[Member]:
        """Evaluate one baseline method on validation and mark its validation front.
        search_samples: the search's training samples (``global_long`` and the other ``_long``
        methods each spend as many; with finetune_share > 0 ``compare`` passes the budget B).
        search: the search's members (``global_matched`` pairs one genome with each selected
        member, at its sparsity and with its seed, and selects them all)."""
        root = self.cfg.search.seed
        rng = np.random.default_rng([root, STREAMS[method]])
        if method == "global_matched":
            partners = [m for m in (search or []) if m.selected and m.ok]
            pairs = baseline_genomes(method, self.ops, [m.genome.sparsity for m in partners], 0, rng)
            jobs = [(g, m.seed) for (g, _), m in zip(pairs, partners)]
        else:
            spw = self.synops_per_weight() if allocation_of(method) == "energy_aware" else None
            pairs = baseline_genomes(method, self.ops, ratios, n_random, rng, synops_per_weight=spw)
            jobs = [(g, eval_seed(root, STREAMS[method], i)) for i, (g, _) in enumerate(pairs)]
        epochs = None
        if method in LONG:  # the search's budget (with fine-tuning: B), shared among the ratios
            epochs = self.long_epochs(search_samples, len(pairs))
        results = self.evaluate(jobs, epochs=epochs, desc=f"{method} baseline")
        members = [member_of(method, i, g, seed, res, ratio)
                   for i, ((g, ratio), (_, seed), res) in enumerate(zip(pairs, jobs, results))]
        if method == "global_matched":  # each is the partner of a selected search member
            for i, m in enumerate(members):
                m.selected, m.partner = m.ok, partners[i].uid
                m.selected_energy = m.selected and m.metrics.get(ENERGY_KEY) is not None
            return members
        select_fronts(members)
        return members

    def long_epochs(self, samples: float, n: int) -> float:
        """kd.epochs of each of the n students of a ``_long`` method spending ``samples`` in all
        (``budget.long_epochs`` with the run's train size); the fine-tuned search members get the same."""
        return long_epochs(samples, n, len(self.splits.train))

    def finetuned_members(self, search: list[Member], ratios, budget: dict) -> tuple[list[Member], list[dict]]:
        """``search_finetuned``: ``budget['k']`` of the search's archive members chosen on
        validation (``select_finetune`` at ``finetune_targets(ratios, k)``), each retrained from
        its genome with the ``_long`` recipe: the same fitness and KD mode, kd.epochs =
        ``long_epochs(budget['budget'], len(ratios))`` (per_member samples), the seed of the
        ``_long`` student at its target ratio. Their validation front is marked as for a baseline.
        Returns (members, [{uid, partner, target, sparsity, seed}])."""
        picks = select_finetune([m for m in search if m.selected and m.ok], finetune_targets(ratios, budget["k"]))
        root = self.cfg.search.seed
        jobs = [(m.genome, eval_seed(root, STREAMS["global_long"], j)) for m, j, _ in picks]
        results = self.evaluate(jobs, epochs=self.long_epochs(budget["budget"], len(ratios)), desc="search fine-tuning")
        members, record = [], []
        for i, ((m, _, t), (g, seed), res) in enumerate(zip(picks, jobs, results)):
            members.append(member_of(FINETUNED, i, g, seed, res, t, partner=m.uid))
            record.append({"uid": members[-1].uid, "partner": m.uid, "target": t, "sparsity": float(g.sparsity),
                           "seed": int(seed)})
        select_fronts(members)
        return members, record

    def measure(self, members: list[Member], final_epochs: float) -> dict[str, dict]:
        """{uid: test record} of each member selected on either front: retrained for
        ``final_epochs`` KD epochs when > 0 (from its genome, its own seed), then measured
        once on test: ``test_accuracy``, and on the same pass (energy hooks, which only read)
        ``test_energy_fraction`` and ``test_energy_pj`` (per sample); with retraining also
        ``retrained_val_accuracy``, ``retrain_samples``."""
        chosen = [m for m in members if (m.selected or m.selected_energy) and m.ok]
        out = {m.uid: {} for m in chosen}
        states = {m.uid: m.student_state for m in chosen}
        if final_epochs > 0:
            results = self.evaluate([(m.genome, m.seed) for m in chosen], epochs=final_epochs, desc="final retraining")
            for m, res in zip(chosen, results):
                if isinstance(res, Exception):
                    raise RuntimeError(f"final retraining of {m.uid} failed: {res}") from res
                states[m.uid] = res.student_state
                out[m.uid].update(retrained_val_accuracy=res.metrics["accuracy"], retrain_samples=res.metrics["train_samples"])
        model_args = (self.cfg.model, self.splits.frame_shape, self.splits.num_classes)
        energy = self.cfg.energy
        for m in tqdm(chosen, desc="test accuracy", disable=not self.progress, leave=False):
            student = build_model(*model_args).to(self.device)
            student.load_state_dict(states[m.uid])
            with EnergyCounter(student, energy.e_ac_pj, energy.e_mac_pj) as counter:
                out[m.uid]["test_accuracy"] = accuracy(student, self.splits.test)
            if counter.samples:
                report = counter.report()
                out[m.uid].update(test_energy_fraction=report.energy_fraction, test_energy_pj=report.energy_pj)
        return out

    def teacher_test(self) -> tuple[float, float | None]:
        """(test accuracy, test energy fraction) of the dense teacher, from one test pass."""
        energy = self.cfg.energy
        with EnergyCounter(self.teacher, energy.e_ac_pj, energy.e_mac_pj) as counter:
            acc = accuracy(self.teacher, self.splits.test)
        return acc, (counter.report().energy_fraction if counter.samples else None)

    def teacher_val_energy(self) -> float | None:
        """The dense teacher's energy fraction on the validation split (the energy front's
        second reference, ``energy_hv_reference_dense``: no member is selected with it)."""
        energy = self.cfg.energy
        with EnergyCounter(self.teacher, energy.e_ac_pj, energy.e_mac_pj) as counter:
            accuracy(self.teacher, self.splits.val)
        return counter.report().energy_fraction if counter.samples else None

    @property
    def energy_reference(self) -> float:
        """The energy front's hypervolume reference: the run's ``search.hv_reference['energy']`` (default 1)."""
        ref = getattr(self.cfg.search, "hv_reference", None) or {}
        return float(ref.get("energy", 1.0))
