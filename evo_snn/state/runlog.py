"""The run's logs, written as the search goes: evaluations.jsonl (a row per evaluation, as
each result arrives), generations.csv (a record per generation) and pareto.csv (the
archive's non-failed members), through ``RunLogger``, the search callback that
``evo_snn.search`` attaches; ``row_metrics`` reads a row's metrics back (``--resume``),
``failure_summary`` and ``SearchFailedError`` give the one-line reason of a run with no
successful evaluation, ``duration`` the wall times of the generation lines.
"""

from __future__ import annotations

import pandas as pd
from tqdm.auto import tqdm

from evo_snn.front import hypervolume, objective_value


EVALUATION_FIELDS = ("gen", "uid", "parents", "genome_key", "status", "seed", "ratios")
"""The fields of an evaluations.jsonl row that describe the individual (``RunLogger.on_evaluation``);
the others are its metrics."""


def row_metrics(row: dict) -> dict:
    """The metrics of an evaluations.jsonl row: every field but ``EVALUATION_FIELDS`` (JSON
    round trip: floats exact, tuples as lists)."""
    return {k: v for k, v in row.items() if k not in EVALUATION_FIELDS}


class RunLogger:
    """Search callback of ``evo_snn.search.run``: writes evaluations.jsonl (``on_evaluation``, as each result arrives),
    generations.csv and pareto.csv (``logger(search)``, after each generation).

    In a multi-fidelity search (``evo_snn.evaluation.fidelity``) every row carries ``fidelity``,
    ``rung`` and ``fidelity_spent``; a promoted child has two rows with its uid, rung 0
    and rung 1, each with the seed of that evaluation and its own ``train_samples``.

    run: the ``evo_snn.state.rundir.RunDir`` written to."""

    def __init__(self, run, progress: bool = False):
        self.run = run
        self.rows: list[dict] = []
        self.generations: list[dict] = []
        self.progress = progress  # an overall bar over the generations, with an ETA (a TTY only)
        self._bar = None
        self.failed_streak = 0  # generations in a row without a successful evaluation

    def on_evaluation(self, ind, metrics) -> None:
        seed = getattr(ind, "evaluation_seed", ind.seed)  # a multi-fidelity continuation's own seed (evo_snn.evaluation.fidelity)
        row = {"gen": ind.gen, "uid": ind.uid, "parents": list(ind.parents), "genome_key": ind.genome.key,
               "status": ind.status, "seed": seed, "ratios": [round(r, 6) for r in ind.genome.ratios], **ind.metrics}
        self.rows.append(row)
        self.run.append_jsonl("evaluations.jsonl", row)

    def __call__(self, search) -> None:
        gen, pop, archive, n_evals, elapsed_s = search.gen, search.population, search.archive, search.n_evals, search.elapsed_s
        front = pareto_frame(archive)
        rows = [r for r in self.rows if r.get("gen") == gen and r.get("rung") != "screen"]
        ok_evals = sum(r.get("status") == "ok" for r in rows)
        rec = {"gen": gen, "n_evals": n_evals, "ok_evals": ok_evals, "hypervolume": hypervolume(list(archive)),
               "best_accuracy": max(objective_value(ind, "accuracy") for ind in pop),
               "mean_sparsity": sum(objective_value(ind, "sparsity") for ind in pop) / len(pop),
               "front_size": len(front), "elapsed_s": elapsed_s}
        self.generations.append(rec)
        self.run.write_csv("generations.csv", pd.DataFrame(self.generations))
        self.run.write_csv("pareto.csv", front)
        G = getattr(getattr(search, "search", None), "generations", None)  # None: an unknown total (no ETA)
        eta = elapsed_s / (gen + 1) * (G - gen) if G is not None else 0.0  # the mean generation so far, for those left
        if len(front):
            top = front.sort_values("accuracy").iloc[-1]
            sparse = front.sort_values("sparsity").iloc[-1]
            summary = (f"front {len(front)}, HV {rec['hypervolume']:.4f}, best acc {top.accuracy:.3f} @ sparsity "
                       f"{top.sparsity:.2f}, sparsest {sparse.sparsity:.2f} @ acc {sparse.accuracy:.3f}")
        else:  # every evaluation so far failed (their errors are in evaluations.jsonl): the search goes on
            failed = sum(ind.status == "failed" for ind in pop)
            summary = f"no successful evaluation yet ({failed} of {len(pop)} failed; see evaluations.jsonl)"
        tqdm.write(f"gen {gen}{'' if G is None else f'/{G}'}: {n_evals} evals, {summary}, {duration(elapsed_s)} elapsed"
                   + (f", ETA {duration(eta)}" if G is not None and gen < G else ""))
        self._check_failed_generations(search, rows, ok_evals)
        if self.progress and G is not None:
            if self._bar is None:
                self._bar = tqdm(total=G + 1, initial=gen, desc="generations", unit="gen", position=1, leave=False)
            self._bar.update(1)
            if gen >= G:
                self._bar.close()

    def _check_failed_generations(self, search, rows: list[dict], ok_evals: int) -> None:
        """raises SearchFailedError after ``search.max_failed_generations`` generations in a
        row without a successful evaluation (0 = never)."""
        limit = int(getattr(getattr(search, "search", None), "max_failed_generations", 0) or 0)
        self.failed_streak = 0 if ok_evals or not rows else self.failed_streak + 1
        if limit and self.failed_streak >= limit:
            raise SearchFailedError(f"{self.failed_streak} generations in a row (up to {search.gen}) had no successful "
                                    f"evaluation (search.max_failed_generations = {limit}); their errors: "
                                    f"{failure_summary(rows)}; see {self.run.path / 'evaluations.jsonl'}")


def failure_summary(rows: list[dict], most: int = 3) -> str:
    """The distinct errors of the failed rows (``'; '``-joined, each cut to 120 characters,
    at most ``most``): the one-line reason of a run that has no successful evaluation."""
    errors = sorted({str(r.get("error", "?"))[:120] for r in rows if r.get("status") == "failed"})
    return "; ".join(errors[:most])


class SearchFailedError(RuntimeError):
    """``search.max_failed_generations`` generations in a row had no successful evaluation."""


def duration(seconds: float) -> str:
    """'42 s', '12 min 05 s', '1 h 07 min': a wall time for a person."""
    s = int(round(max(0.0, seconds)))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


ENERGY_COLUMNS = ("effective_acs", "effective_macs", "synops", "energy_pj", "energy_fraction", "firing_rate")
"""pareto.csv's energy columns (``evo_snn.evaluation.energy``, per sample on the validation pass),
written when the members' metrics have them."""


def pareto_frame(archive) -> pd.DataFrame:
    """pareto.csv: one row per non-failed archive member (uid, accuracy, sparsity as
    fractions, the sparse teacher's accuracy, ..., then ``ENERGY_COLUMNS`` when the
    metrics hold them: effective ACs/MACs, dense SynOps, energy in pJ and as a fraction of
    the dense bound, firing rate), sorted by sparsity."""
    cols = ["uid", "accuracy", "sparsity", "teacher_accuracy", "genome_sparsity", "gen", "genome_key", "parents"]
    members = [ind for ind in archive if ind.status != "failed"]
    energy = [c for c in ENERGY_COLUMNS if any(c in ind.metrics for ind in members)]
    rows = [{"uid": ind.uid, "accuracy": objective_value(ind, "accuracy"), "sparsity": objective_value(ind, "sparsity"),
             "teacher_accuracy": ind.metrics.get("teacher_accuracy"), "genome_sparsity": ind.genome.sparsity,
             "gen": ind.gen, "genome_key": ind.genome.key, "parents": " ".join(ind.parents),
             **{c: ind.metrics.get(c) for c in energy}}
            for ind in members]
    return pd.DataFrame(rows, columns=cols + energy).sort_values("sparsity", ignore_index=True)
