"""``compare``: the comparison of one run (``evo_snn.analysis.baselines``), written out.

Every method is evaluated once on validation (``Comparison``); then for each final
retraining budget its selected members are measured once on test and the outputs written
in RUN_DIR: ``baselines<tag>.csv`` (one row per evaluated point), ``comparison<tag>.json``
(per method the summaries of both fronts and the compute spent), ``plots/comparison<tag>.png``
and ``plots/pareto.png`` redrawn with each baseline's validation front.
``format_comparison`` prints a comparison.json as a table.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import pandas as pd
from tqdm.auto import tqdm

from evo_snn.atomic import read_jsonl
from evo_snn.state.rundir import RunDir
from evo_snn.analysis.budget import finetune_budget
from evo_snn.analysis.comparison import Comparison
from evo_snn.analysis.fronts import FRONTS, best_baseline, energy_front_summary, front_summary, paired_difference
from evo_snn.analysis.methods import DEFAULT_METHODS, DEFAULT_RATIOS, ENERGY_KEY, FINETUNED, Member


@dataclass
class Evaluated:
    """What ``compare`` evaluates once, before any test measurement: ``groups`` {method:
    members} (the search first), ``finetune`` (comparison.json's record of the fine-tuning),
    the search's evaluations and training samples, the dense teacher's test accuracy and
    test energy fraction, and the energy front's references (the run's, the dense teacher's
    validation energy fraction)."""

    groups: dict[str, list[Member]]
    finetune: dict
    n_search: int
    search_samples: int
    teacher_test: float
    teacher_test_energy: float | None
    e_ref: float
    e_dense: float | None


def evaluate_groups(cmp: Comparison, methods, ratios, n_random: int | None) -> Evaluated:
    """The search's archive, its fine-tuned members (finetune_share > 0) and each baseline
    method of ``methods``, evaluated on validation with their fronts marked; ``n_random`` None:
    the ``random`` baseline's default count (``Comparison.random_evaluations``)."""
    progress = cmp.progress
    n_search, search_samples = cmp.search_compute()
    groups = {"search": cmp.search_members()}
    budget = finetune_budget(search_samples, cmp.finetune_share, len(ratios))
    long_samples = search_samples  # what each _long method spends: S, or B with fine-tuning
    finetune = {**budget, "members": 0, "finetune_samples": 0, "picks": []}
    if budget["k"] > 0:
        long_samples = budget["budget"]
        groups[FINETUNED], finetune["picks"] = cmp.finetuned_members(groups["search"], ratios, budget)
        finetune["members"] = len(groups[FINETUNED])
        finetune["finetune_samples"] = sum(int(m.metrics.get("train_samples", 0)) for m in groups[FINETUNED] if m.ok)
        finetune["targets"] = [p["target"] for p in finetune["picks"]]
    for method in methods:
        n_rand = cmp.random_evaluations(n_search, search_samples) if n_random is None else n_random
        groups[method] = cmp.baseline_members(method, ratios, n_rand, long_samples, search=groups["search"])
        if progress:
            tqdm.write(f"{method}: {len(groups[method])} evaluations, "
                       f"{sum(m.selected for m in groups[method])} on the validation front")
    teacher_test, teacher_test_energy = cmp.teacher_test()
    e_ref, e_dense = cmp.energy_reference, cmp.teacher_val_energy()
    return Evaluated(groups, finetune, n_search, search_samples, teacher_test, teacher_test_energy, e_ref, e_dense)


def member_row(method: str, m: Member, t: dict) -> dict:
    """The baselines.csv row of one evaluated member, ``t`` its test record (``Comparison.measure``; {} when unmeasured)."""
    return {"method": method, "uid": m.uid, "ratio": m.ratio, "genome_key": m.genome.key,
            "val_accuracy": m.metrics.get("accuracy"), "sparsity": m.metrics.get("sparsity", m.genome.sparsity),
            "selected": m.selected, "test_accuracy": t.get("test_accuracy"),
            "retrained_val_accuracy": t.get("retrained_val_accuracy"),
            "train_samples": m.metrics.get("train_samples"), "seed": m.seed, "partner": m.partner,
            "error": m.metrics.get("error"), "val_energy_fraction": m.metrics.get(ENERGY_KEY),
            "selected_energy": m.selected_energy,
            "test_energy_fraction": t.get("test_energy_fraction"),
            "test_energy_pj": t.get("test_energy_pj")}


def method_compute(method: str, members: list[Member], ev: Evaluated) -> tuple[int, int]:
    """(evaluations, training samples) a method spent: the search's own for ``search``, the
    search's plus its fine-tuning for ``search_finetuned``, else its members' evaluations."""
    if method == "search":
        return ev.n_search, ev.search_samples
    if method == FINETUNED:  # the search, then its fine-tuning
        return ev.n_search + len(members), ev.search_samples + ev.finetune["finetune_samples"]
    return len(members), sum(int(m.metrics.get("train_samples", 0)) for m in members if m.ok)


def method_summary(method: str, members: list[Member], test: dict[str, dict], ev: Evaluated) -> dict:
    """comparison.json's entry of one method: both fronts of its validation-selected members,
    measured on test (``test``: {uid: test record}) and on validation, and the compute spent."""
    n_eval, samples = method_compute(method, members, ev)
    sel = [m for m in members if m.selected and m.ok]
    test_pts = [[test[m.uid]["test_accuracy"], m.metrics["sparsity"]] for m in sel]
    val_pts = [[m.metrics["accuracy"], m.metrics["sparsity"]] for m in sel]
    retrain = sum(int(test[m.uid].get("retrain_samples", 0)) for m in sel)
    out = {"test": front_summary(test_pts), "val": front_summary(val_pts), "members": len(sel),
           "evaluations": n_eval, "train_samples": samples, "retrain_samples": retrain,
           "compute_samples": samples + retrain}
    # the energy front: members selected on validation (accuracy, energy fraction), measured on test
    sel_e = [m for m in members if m.selected_energy and m.ok and test[m.uid].get("test_energy_fraction") is not None]
    test_e = [[test[m.uid]["test_accuracy"], test[m.uid]["test_energy_fraction"]] for m in sel_e]
    val_e = [[m.metrics["accuracy"], m.metrics[ENERGY_KEY]] for m in sel_e]
    retrain_e = sum(int(test[m.uid].get("retrain_samples", 0)) for m in sel_e)
    out.update(test_energy=energy_front_summary(test_e, ev.e_ref, ev.e_dense),
               val_energy=energy_front_summary(val_e, ev.e_ref, ev.e_dense), energy_members=len(sel_e),
               energy_retrain_samples=retrain_e, energy_compute_samples=samples + retrain_e)
    return out


def summaries(ev: Evaluated, tests: dict[str, dict[str, dict]]) -> dict[str, dict]:
    """{method: ``method_summary``}, with ``global_matched``'s ``paired`` difference to the search."""
    summary = {}
    for method, members in ev.groups.items():
        summary[method] = method_summary(method, members, tests[method], ev)
        if method == "global_matched":
            summary[method]["paired"] = paired_difference(ev.groups["search"], members,
                                                           {**tests["search"], **tests[method]})
    return summary


def comparison_doc(run: RunDir, cmp: Comparison, ev: Evaluated, fe: float, ratios, summary: dict, t0: float) -> dict:
    """comparison.json of one final retraining budget ``fe``; ``t0`` the start (``wall_s``)."""
    # kd_mode: the search's; baseline_kd_mode: how the baselines were fine-tuned (--kd)
    return {"run": str(run.path), "dataset": cmp.cfg.dataset, "model": cmp.cfg.model.name, "kd_mode": cmp.search_kd_mode,
            "baseline_kd_mode": cmp.cfg.kd.mode,
            "seed": cmp.cfg.search.seed, "generations": cmp.ckpt.gen, "population": cmp.cfg.search.population,
            "final_epochs": fe, "ratios": list(ratios), "methods": summary,
            "dense_teacher_test_accuracy": ev.teacher_test, "test_samples": len(cmp.splits.test),
            "train_size": len(cmp.splits.train), "val_size": len(cmp.splits.val),
            "wall_s": time.perf_counter() - t0,
            "energy_hv_reference": ev.e_ref, "energy_hv_reference_dense": ev.e_dense,
            "dense_teacher_test_energy_fraction": ev.teacher_test_energy,
            "finetune_share": ev.finetune["finetune_share"], "finetune": ev.finetune,
            "best_baseline": {front: best_baseline(summary, front) for front in FRONTS}}


def write_comparison(run: RunDir, doc: dict, table: pd.DataFrame, ev: Evaluated, suffix: str, redraw: bool) -> None:
    """baselines<tag>.csv, comparison<tag>.json and plots/comparison<tag>.png (tag: ``-SUFFIX``
    and ``-fe<E>`` for E > 0 joined), and with ``redraw`` plots/pareto.png; adds the names
    written to ``doc['files']``."""
    fe = doc["final_epochs"]
    tag = "".join(f"-{p}" for p in (suffix, f"fe{fe:g}" if fe > 0 else "") if p)
    run.write_csv(f"baselines{tag}.csv", table)
    run.write_json(f"comparison{tag}.json", doc)
    from evo_snn.analysis.plots import plot_comparison  # matplotlib only where plots are drawn

    plot_comparison(run.plots / f"comparison{tag}.png", table, ev.teacher_test, val=False,
                    dense_teacher_energy=ev.teacher_test_energy)
    if redraw:
        _redraw_pareto(run, table)
    doc["files"] = {"json": f"comparison{tag}.json", "csv": f"baselines{tag}.csv"}


def compare(run: RunDir, methods=DEFAULT_METHODS, ratios=DEFAULT_RATIOS, n_random: int | None = None, suffix: str = "",
            final_epochs: list[float] | None = None, **kwargs) -> list[dict]:
    """Evaluate the baselines of ``run`` once, then for each of ``final_epochs`` (default:
    the run's ``search.final_epochs``) retrain, measure everything on test and write
    baselines<tag>.csv, comparison<tag>.json and the plots, with tag ``-SUFFIX`` and
    ``-fe<E>`` for E > 0 joined; returns the comparison dicts. kwargs go to ``Comparison``."""
    t0 = time.perf_counter()
    cmp = Comparison(run, **kwargs)
    try:
        ev = evaluate_groups(cmp, methods, ratios, n_random)
        docs = []
        for fe in (final_epochs if final_epochs is not None else [cmp.cfg.search.final_epochs]):
            tests = {method: cmp.measure(members, fe) for method, members in ev.groups.items()}
            rows = [member_row(method, m, tests[method].get(m.uid, {}))
                    for method, members in ev.groups.items() for m in members]
            doc = comparison_doc(run, cmp, ev, fe, ratios, summaries(ev, tests), t0)
            write_comparison(run, doc, pd.DataFrame(rows), ev, suffix, redraw=fe == 0 or len(docs) == 0)
            docs.append(doc)
    finally:
        cmp.close()
    return docs


def _redraw_pareto(run: RunDir, table: pd.DataFrame) -> None:
    """plots/pareto.png of the run again, with each baseline's validation front on it."""
    from evo_snn.analysis.plots import plot_run

    rows, _ = read_jsonl(run.path / "evaluations.jsonl")  # lines that are not JSON skipped (search_compute notes them)
    evals = pd.DataFrame([r for r in rows if isinstance(r, dict) and r.get("status") == "ok"])
    exported = [json.loads(p.read_text()) for p in sorted(run.exported.glob("*/metrics.json"))]
    teacher_val = json.loads((run.teacher / "metrics.json").read_text())["val_accuracy"]
    plot_run(run.plots, evals, pd.read_csv(run.path / "pareto.csv"), pd.read_csv(run.path / "generations.csv"),
             teacher_val, exported, baselines=table)


def format_comparison(doc: dict) -> str:
    """A plain-text table of ``comparison.json`` (pandas)."""
    recs = []
    for method, s in doc["methods"].items():
        rec = {"method": method, "test HV": s["test"]["hypervolume"], "val HV": s["val"]["hypervolume"],
               **{f"acc@>={k}": v for k, v in s["test"]["accuracy_at_sparsity"].items()},
               "test HV energy": s.get("test_energy", {}).get("hypervolume", float("nan")),
               "members": s["members"], "evals": s["evaluations"], "samples": s["compute_samples"]}
        recs.append(rec)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        text = pd.DataFrame(recs).to_string(index=False, float_format=lambda v: f"{v:.4f}")
    for front, b in doc.get("best_baseline", {}).items():
        if b.get("method"):
            text += (f"\n{b.get('search_method', 'search')} - best equal-compute baseline ({b['method']}), test HV on the {front} front: "
                     f"{b['search_minus_best']:+.4f}")
    pair = doc["methods"].get("global_matched", {}).get("paired")
    if pair:
        text += (f"\nsearch - global_matched, paired test accuracy: {pair['mean']:+.4f} +- {pair['std']:.4f} over "
                 f"{pair['n']} pairs ({pair['wins']} ahead, {pair['losses']} behind)")
    return text
