"""The fronts of ``evo_snn.analysis.baselines``: each method's members selected on validation,
and the summaries of a front (hypervolume, best accuracy at fixed sparsities or energy
fractions), the best equal-compute baseline and the paired ``global_matched`` difference.

Points are ``[M, 2]`` arrays (accuracy, sparsity) or (accuracy, energy fraction),
accuracies as fractions in [0, 1]; no model is run here.
"""

from __future__ import annotations

import numpy as np

from evo_snn.evaluation.individual import Individual
from evo_snn.front import fitness_class, hypervolume, nondominated, points_hypervolume
from evo_snn.analysis.methods import ENERGY_KEY, FINETUNED, LONG, Member

FIXED_SPARSITIES = (0.5, 0.7, 0.8, 0.9, 0.95)
FIXED_ENERGY_FRACTIONS = (0.5, 0.2, 0.1, 0.05, 0.02, 0.01)
"""Energy fractions at which the energy front's best accuracy is reported (``accuracy_at_energy``)."""
SPARSITY_TOL = 1e-5  # accuracy_at_sparsity: a net at round(s x N) pruned weights (N >= 50,000) is "at s"


def accuracy_at_sparsity(points, sparsity: float) -> float:
    """Best accuracy among ``points`` ([M, 2] (accuracy, sparsity)) whose sparsity is at
    least ``sparsity`` (the front read as a staircase: a net at least that sparse);
    NaN when no point is that sparse. "At least" allows ``SPARSITY_TOL`` (1e-5) below: a
    genome built at s prunes round(s x N) weights, which is below s by up to 0.5 / N
    (0.9499977 for s = 0.95 over 175,192 weights)."""
    pts = np.asarray(points, dtype=float).reshape(-1, 2)
    ok = pts[:, 1] >= sparsity - SPARSITY_TOL
    return float(pts[ok, 0].max()) if ok.any() else float("nan")


def front_summary(points) -> dict:
    """{hypervolume, accuracy_at_sparsity: {"0.5": ...}} of [M, 2] (accuracy, sparsity)."""
    return {"hypervolume": points_hypervolume(points),
            "accuracy_at_sparsity": {f"{s:g}": accuracy_at_sparsity(points, s) for s in FIXED_SPARSITIES}}


def accuracy_at_energy(points, energy_fraction: float) -> float:
    """Best accuracy among ``points`` ([M, 2] (accuracy, energy fraction)) whose energy
    fraction is at most ``energy_fraction``; NaN when none is that frugal."""
    pts = np.asarray(points, dtype=float).reshape(-1, 2)
    ok = pts[:, 1] <= energy_fraction + 1e-9
    return float(pts[ok, 0].max()) if ok.any() else float("nan")


def energy_hypervolume(points, reference: float = 1.0) -> float:
    """Hypervolume of [M, 2] (accuracy, energy fraction) points, accuracy maximised and the
    energy fraction minimised, reference (accuracy 0, energy fraction ``reference``): the
    project's ``nsga.hypervolume`` with the fitness class of objectives (accuracy, energy),
    i.e. the area in (accuracy, 1 - energy fraction) above (0, 1 - reference). Points at
    or beyond the reference add nothing."""
    cls = fitness_class(("accuracy", "energy"), {"accuracy": 0.0, "energy": float(reference)})
    front = []
    for acc, e in np.asarray(points, dtype=float).reshape(-1, 2):
        p = Individual.__new__(Individual)  # hypervolume reads only .fitness
        p.fitness = cls()
        p.fitness.values = (float(acc), float(e))
        front.append(p)
    return hypervolume(front) if front else 0.0


def energy_front_summary(points, reference: float = 1.0, dense_reference: float | None = None) -> dict:
    """{hypervolume, accuracy_at_energy: {"0.5": ...}} of [M, 2] (accuracy, energy fraction);
    with ``dense_reference`` also ``hypervolume_dense_ref``, the hypervolume with that energy
    reference (the dense teacher's validation energy fraction: with reference 1 and the
    small energy fractions of spiking nets the hypervolume is nearly the best accuracy)."""
    out = {"hypervolume": energy_hypervolume(points, reference),
           "accuracy_at_energy": {f"{e:g}": accuracy_at_energy(points, e) for e in FIXED_ENERGY_FRACTIONS}}
    if dense_reference is not None:
        out["hypervolume_dense_ref"] = energy_hypervolume(points, dense_reference)
    return out


def energy_nondominated(points) -> list[int]:
    """Indices of the non-dominated rows of [M, 2] (accuracy maximised, energy fraction minimised)."""
    pts = np.asarray(points, dtype=float).reshape(-1, 2)
    return nondominated(np.stack([pts[:, 0], 1.0 - pts[:, 1]], axis=1)) if len(pts) else []


def select_energy_front(members: list[Member]) -> None:
    """Mark ``selected_energy`` on the members on the validation front in (accuracy,
    validation energy fraction) among the evaluated ones that recorded it (none, for a run
    whose fitness counted no energy)."""
    ok = [m for m in members if m.ok and m.metrics.get(ENERGY_KEY) is not None]
    for i in energy_nondominated([[m.metrics["accuracy"], m.metrics[ENERGY_KEY]] for m in ok]):
        ok[i].selected_energy = True


def select_fronts(members: list[Member]) -> None:
    """Mark ``selected`` on the evaluated members on the validation front in (accuracy,
    sparsity), and ``selected_energy`` on those of the energy front (``select_energy_front``)."""
    ok = [m for m in members if m.ok]
    for i in nondominated([[m.metrics["accuracy"], m.metrics["sparsity"]] for m in ok]):
        ok[i].selected = True
    select_energy_front(members)


FRONTS = {"sparsity": ("test", "hypervolume"), "energy": ("test_energy", "hypervolume"),
          "energy_dense_ref": ("test_energy", "hypervolume_dense_ref")}
"""The fronts of ``best_baseline``: name -> (summary section, hypervolume key)."""


def best_baseline(summary: dict, front: str) -> dict:
    """The best of the ``LONG`` baselines (equal compute) in ``summary`` by test hypervolume on
    ``front`` (a key of ``FRONTS``): {methods (those compared), method, hypervolume,
    search_hypervolume, search_minus_best, search_method}; method None (and NaN) when none was
    run. The search side (``search_method``) is ``search_finetuned`` when the summary has it
    (finetune_share > 0), else ``search``."""
    key, hv_key = FRONTS[front]
    hv = {m: summary[m][key].get(hv_key) for m in LONG if m in summary and key in summary[m]}
    hv = {m: v for m, v in hv.items() if v is not None and not np.isnan(v)}
    side = FINETUNED if FINETUNED in summary else "search"  # finetune_share > 0: the fine-tuned front
    search = summary.get(side, {}).get(key, {}).get(hv_key, float("nan"))
    if not hv:
        return {"methods": [], "method": None, "hypervolume": float("nan"), "search_hypervolume": search,
                "search_minus_best": float("nan"), "search_method": side}
    best = max(hv, key=hv.get)
    return {"methods": list(hv), "method": best, "hypervolume": hv[best], "search_hypervolume": search,
            "search_minus_best": search - hv[best], "search_method": side}


def paired_difference(search: list[Member], matched: list[Member], tests: dict[str, dict]) -> dict:
    """Test accuracy of each search member minus that of its ``global_matched`` partner
    (same sparsity, same seed): {n, mean, std (ddof=1; NaN for n < 2), wins (search ahead),
    losses}; differences in accuracy units, over the pairs whose both members were measured."""
    by_uid = {m.uid: m for m in search}
    diffs = []
    for m in matched:
        a, b = tests.get(m.partner or "", {}).get("test_accuracy"), tests.get(m.uid, {}).get("test_accuracy")
        if m.partner in by_uid and a is not None and b is not None:
            diffs.append(a - b)
    d = np.asarray(diffs, dtype=float)
    return {"n": int(d.size), "mean": float(d.mean()) if d.size else float("nan"),
            "std": float(d.std(ddof=1)) if d.size > 1 else float("nan"),
            "wins": int((d > 0).sum()), "losses": int((d < 0).sum())}
