"""Choosing the Pareto members to export, on validation metrics only.

``choose_exports``: the members a finished run exports (best accuracy and knee);
``parse_pick`` / ``pick_member`` / ``choose_member``: the member ``python -m
evo_snn.export --pick`` names (knee, max-accuracy, min-energy, ``sparsity>=X``,
``uid=UID``); ``knee_index``: the knee of a 2-objective front. Also ``ExportError``, the
error of every step of an export (this module is the lowest of ``evo_snn.deploy``).
"""

from __future__ import annotations

import re
import sys

import numpy as np

PICKS = ("knee", "max-accuracy", "min-energy", "sparsity>=X", "uid=UID")
# the energy metric --pick min-energy minimises: the estimate in pJ per sample (evo_snn.evaluation.energy)
ENERGY_KEYS = ("energy_pj",)


class ExportError(RuntimeError):
    """An export cannot be made (bad pick, missing metric or file, unavailable format); the message says why and what to do."""


def knee_index(points: np.ndarray) -> int:
    """Index of the knee of a 2-objective front (both maximised).

    points: [M, 2]. Objectives are min-max normalised over the front; the knee is the
    member with the largest *signed* distance from the line through the two extreme
    members, positive towards the ideal point (1, 1). A member in a concave dent
    (below that line) can therefore never be the knee. With fewer than three distinct
    members: the largest normalised sum. No library here offers a knee for a plain
    point set (pymoo is not a dependency), hence this small function.
    """
    pts = np.asarray(points, dtype=float)
    if len(pts) == 0:
        raise ValueError("empty front")
    span = pts.max(0) - pts.min(0)
    norm = (pts - pts.min(0)) / np.where(span > 0, span, 1.0)
    a, b = norm[np.argmax(norm[:, 0])], norm[np.argmax(norm[:, 1])]
    d = b - a
    if len(np.unique(norm, axis=0)) < 3 or not np.any(d):
        return int(np.argmax(norm.sum(1)))
    # cross product of (b - a) and (p - a): its sign says which side of the line p lies on
    cross = d[0] * (norm[:, 1] - a[1]) - d[1] * (norm[:, 0] - a[0])
    ideal = d[0] * (1.0 - a[1]) - d[1] * (1.0 - a[0])
    signed = cross * np.sign(ideal) / np.hypot(*d)
    return int(np.argmax(signed))


def choose_exports(front: list) -> dict[str, list[str]]:
    """{uid: roles} for the highest-accuracy member and the knee of ``front``
    (individuals with ``fitness`` and ``metrics``, and ``uid``), in (accuracy, sparsity)
    whatever ``search.objectives`` are (``nsga.objective_value``)."""
    from evo_snn.front import objective_value

    pts = np.array([[objective_value(ind, "accuracy"), objective_value(ind, "sparsity")] for ind in front])
    best = max(range(len(front)), key=lambda i: (pts[i, 0], pts[i, 1]))
    roles: dict[str, list[str]] = {}
    roles.setdefault(front[best].uid, []).append("best_accuracy")
    roles.setdefault(front[knee_index(pts)].uid, []).append("knee")
    return roles


def energy_key(metrics: dict) -> str | None:
    """The energy metric of an evaluation's metrics (the first of ``ENERGY_KEYS`` that is a
    number), or None when the fitness recorded none."""
    return next((k for k in ENERGY_KEYS if isinstance(metrics.get(k), (int, float))), None)


def parse_pick(text: str) -> tuple[str, float | str | None]:
    """``--pick`` text -> (kind, argument): ('knee', None), ('max-accuracy', None),
    ('min-energy', None), ('sparsity', 0.8) for ``sparsity>=0.8``, ('uid', '04-0053') for
    ``uid=04-0053``. raises ExportError naming the accepted forms."""
    t = text.strip()
    if t in ("knee", "max-accuracy", "min-energy"):
        return t, None
    m = re.fullmatch(r"sparsity\s*>=\s*([0-9]*\.?[0-9]+)", t)
    if m and 0.0 <= float(m.group(1)) <= 1.0:
        return "sparsity", float(m.group(1))
    if t.startswith("uid=") and len(t) > 4:
        return "uid", t[4:]
    expected = f"--pick {text!r}: expected one of {', '.join(PICKS)} (X a fraction in [0, 1])"
    if re.fullmatch(r"sparsity\s*", t):  # the shell took '>=0.8' of an unquoted sparsity>=0.8 as a redirection
        raise ExportError(f"{expected}. An unquoted --pick sparsity>=0.8 reaches the program as 'sparsity' (the shell "
                          "reads '>=0.8' as a redirection and writes a file named '=0.8'): quote it, "
                          "--pick 'sparsity>=0.8'")
    if re.fullmatch(r"sparsity\s*(>|=|=>|==)\s*[0-9.]*", t):
        raise ExportError(f"{expected}; write the threshold with '>=' and quote it, --pick 'sparsity>=0.8'")
    raise ExportError(expected)


def choose_member(records: list[dict], pick: str) -> dict:
    """The record chosen by ``pick`` among ``records`` (``pick_member`` without the note;
    a note, when there is one, goes to stderr)."""
    record, note = pick_member(records, pick)
    if note:
        print(f"note: {note}", file=sys.stderr)
    return record


def pick_member(records: list[dict], pick: str) -> tuple[dict, str | None]:
    """(record chosen by ``pick`` among ``records``, note or None). ``records``: archive
    records, ``uid`` and ``metrics`` with validation ``accuracy`` and ``sparsity`` fractions,
    optionally an energy metric. knee: ``knee_index`` of (accuracy, sparsity); max-accuracy:
    highest accuracy, ties to the sparser; min-energy: lowest energy, ties to the more
    accurate; sparsity>=X: highest accuracy among members at least X sparse, ties to the
    sparser; when no member is that sparse, the nearest one, the sparsest (ties to the more
    accurate), and the note says so; uid=U: that member. Test accuracy never enters.
    raises ExportError (empty front, no energy metric, unknown uid)."""
    kind, arg = parse_pick(pick)
    if not records:
        raise ExportError("the run's front is empty (no successful evaluation yet)")
    acc = [float(r["metrics"]["accuracy"]) for r in records]
    sp = [float(r["metrics"]["sparsity"]) for r in records]
    idx = range(len(records))
    if kind == "knee":
        return records[knee_index(np.column_stack([acc, sp]))], None
    if kind == "max-accuracy":
        return records[max(idx, key=lambda i: (acc[i], sp[i]))], None
    if kind == "min-energy":
        keys = {energy_key(r["metrics"]) for r in records}
        if None in keys:
            raise ExportError("--pick min-energy needs an energy metric, and this run's evaluations recorded none "
                              f"(looked for {', '.join(ENERGY_KEYS)}); run the search with energy counting, or pick "
                              "knee, max-accuracy, sparsity>=X or uid=UID")
        key = min(keys)
        return records[min(idx, key=lambda i: (float(records[i]["metrics"][key]), -acc[i]))], None
    if kind == "sparsity":
        ok = [i for i in idx if sp[i] >= arg - 1e-9]
        if not ok:  # the nearest member: the sparsest, ties to the more accurate
            i = max(idx, key=lambda i: (sp[i], acc[i]))
            return records[i], (f"--pick {pick}: no front member is that sparse; picked the nearest, the sparsest "
                                f"member {records[i]['uid']} (sparsity {sp[i]:.4f}, validation accuracy {acc[i]:.4f})")
        return records[max(ok, key=lambda i: (acc[i], sp[i]))], None
    for r in records:
        if r["uid"] == arg:
            return r, None
    raise ExportError(f"--pick uid={arg}: not on the run's front; its members: {', '.join(r['uid'] for r in records)}")
