"""Write docs/configuration.md from the configuration schema (the dataclasses of evo_snn/config.py).

    python docs/make_configuration.py            # (re)write docs/configuration.md, atomically
    python docs/make_configuration.py --check    # exit 1 if the committed file is out of date

Every key of every section comes from ``dataclasses.fields`` (name, type, default); its
description from the section's docstring (``key: text`` entries, continuation lines
indented deeper) or, for the few keys the docstrings leave out, from ``FALLBACK`` below.
tests/test_readme.py checks that the committed file equals this script's output.
"""

from __future__ import annotations

import argparse
import dataclasses
import fnmatch
import re
import sys
import textwrap
import typing
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "configuration.md"
sys.path.insert(0, str(ROOT))

from evo_snn import config as C  # noqa: E402
from evo_snn.atomic import atomic_write_bytes  # noqa: E402

# keys without an entry in their section's docstring
FALLBACK = {
    "dataset": "the data set (``--dataset``): synthetic, nmnist, dvs_gesture, cifar10, cifar100, tiny_imagenet, "
               "image_folder; selects search_spaces/<dataset>.yaml.",
    "data.resize_filter": "the resampling filter of data.image_size: 'nearest' | 'box' | 'bilinear' | 'hamming' | "
                          "'bicubic' | 'lanczos' (Pillow's filters, antialiased when shrinking).",
    "model.detach_reset": "detach the reset from the graph in the surrogate-gradient backward pass (spikingjelly's "
                          "detach_reset).",
    "teacher.epochs": "epochs of dense-teacher training (Adam, cosine schedule), once per run.",
    "teacher.batch_size": "batch size of dense-teacher training.",
    "teacher.lr": "Adam learning rate of dense-teacher training.",
    "teacher.weight_decay": "Adam weight decay of dense-teacher training.",
    "kd.alpha": "weight of the KD term in the loss (1 - alpha weighs the cross-entropy).",
    "kd.temperature": "softening temperature of the KD term.",
    "kd.batch_size": "batch size of each genome's KD training.",
    "kd.lr": "Adam learning rate of each genome's KD training.",
    "search.population": "NSGA-II population size, a multiple of 4 (``--population``).",
    "search.generations": "number of generations after generation 0 (``--generations``).",
    "search.workers": "parallel evaluations: 1 = serial, W > 1 = W Ray actors (``--workers``).",
    "search.seed": "root seed of the run: teacher, genomes, every evaluation (``--seed``).",
    "search.tag": "the last part of the run directory's name, runs/<time>-<dataset>-<tag>.",
}

SECTION_INTRO = {
    "data": "How events become frames, how images are read, and the train / validation split.",
    "model": "The spiking net (teacher and students share it).",
    "teacher": "The dense teacher, trained once per run.",
    "genome": "The search space over sparse structure: what a genome holds and how it is varied.",
    "kd": "Each genome's fitness: knowledge distillation into a sparse student.",
    "train": "How every training loop runs (the GPU hot path and CPU threads).",
    "search": "NSGA-II and the evaluator.",
    "faults": "Fault injection, to check that a run or a cluster survives worker faults.",
    "energy": "The energy estimate (NeuroBench SynOps definitions).",
}

ENTRY = re.compile(r"^([a-z_*]+(?:\s*/\s*[a-z_*]+)*):\s+(.*)$")


def type_name(tp) -> str:
    """A readable type: ``int``, ``float | None``, ``list of str``."""
    text = tp if isinstance(tp, str) else (tp.__name__ if isinstance(tp, type) else str(tp))
    text = text.replace("typing.", "").replace("Any", "any")
    text = re.sub(r"tuple\[(\w+), \.\.\.\]", r"list of \1", text)
    return text


def default_text(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return "(required)"
    if value is None:
        return "`null`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, tuple):
        return "`[" + ", ".join(map(str, value)) + "]`"
    if isinstance(value, dict):
        return "`{" + ", ".join(f"{k}: {v}" for k, v in value.items()) + "}`"
    return f"`{value}`"


def parse_docstring(doc: str, names: list[str]) -> tuple[str, dict[str, str], list[str]]:
    """(summary, {key pattern: text}, notes) of a section docstring: ``key: text`` entries at
    the base indent (continuations deeper), other base-indent lines as notes. An entry
    naming several keys (``a / b: ...``) is filed under each; ``a: x; b: y`` is split."""
    lines = textwrap.dedent("\n".join(doc.splitlines()[1:])).splitlines()
    summary_lines = [doc.splitlines()[0].strip()]
    i = 0
    while i < len(lines) and lines[i].strip():  # the rest of the first paragraph
        if ENTRY.match(lines[i]):
            break
        summary_lines.append(lines[i].strip())
        i += 1
    entries: list[tuple[list[str], list[str]]] = []
    notes: list[list[str]] = []
    current = None
    for line in lines[i:]:
        if not line.strip():
            current = None
            continue
        m = ENTRY.match(line) if not line.startswith(" ") else None
        if m and any(fnmatch.fnmatch(n, k.strip()) for k in m.group(1).split("/") for n in names):
            current = [m.group(2).strip()]
            entries.append(([k.strip() for k in m.group(1).split("/")], current))
        elif line.startswith(" ") and current is not None:
            current.append(line.strip())
        elif current is not None and notes and current is notes[-1]:  # a note goes on at the same indent
            current.append(line.strip())
        else:
            current = [line.strip()]
            notes.append(current)
    out: dict[str, str] = {}
    for keys, text_lines in entries:
        text = " ".join(text_lines)
        parts = re.split(r";\s+(?=(?:" + "|".join(map(re.escape, names)) + r"):\s)", text)
        for k in keys:
            out.setdefault(k, parts[0])
        for part in parts[1:]:
            k, _, rest = part.partition(":")
            out.setdefault(k.strip(), rest.strip())
    return " ".join(summary_lines), out, [" ".join(n) for n in notes]


def markdown_text(text: str) -> str:
    """Docstring text as Markdown: RST ``code`` to `code`, table pipes escaped."""
    return text.replace("``", "`").replace("|", "\\|")


def section(name: str, cls) -> list[str]:
    fields = dataclasses.fields(cls)
    names = [f.name for f in fields]
    summary, docs, notes = parse_docstring(cls.__doc__ or "", names)
    hints = typing.get_type_hints(cls)
    out = [f"## `{name}`", "", markdown_text(summary or SECTION_INTRO.get(name, "")), ""]
    out += ["| key | type | default | meaning |", "| --- | --- | --- | --- |"]
    for f in fields:
        text = docs.get(f.name) or next((t for k, t in docs.items() if "*" in k and fnmatch.fnmatch(f.name, k)), None)
        text = text or FALLBACK.get(f"{name}.{f.name}")
        if text is None:
            raise SystemExit(f"{name}.{f.name}: no description in {cls.__name__}'s docstring nor in FALLBACK")
        out.append(f"| `{name}.{f.name}` | {markdown_text(type_name(hints[f.name]))} | {default_text(f)} | "
                   f"{markdown_text(text)} |")
    if notes:
        out += [""] + [f"- {markdown_text(n)}" for n in notes]
    return out + [""]


def render() -> str:
    top = dataclasses.fields(C.Config)
    out = [
        "# Configuration keys",
        "",
        "<!-- generated by docs/make_configuration.py from evo_snn/config.py: do not edit by hand -->",
        "",
        "Every key a run can set, generated from the configuration schema (the dataclasses of",
        "`evo_snn/config.py`). A run's values come, in this order, from these defaults, then",
        "`search_spaces/<dataset>.yaml` (or `--config FILE`), then each `--set section.key=value`",
        "(the value is parsed as YAML: `--set model.channels=[16,32]`), then the flags that name a",
        "key (`--population`, `--generations`, `--workers`, `--seed`, `--model`). Unknown keys and",
        "values out of range are one-line errors (exit 2) before anything is written. The resolved",
        "config of a run is its `config.json`.",
        "",
        "| key | type | default | meaning |",
        "| --- | --- | --- | --- |",
    ]
    sections = []
    for f in top:
        tp = typing.get_type_hints(C.Config)[f.name]
        if dataclasses.is_dataclass(tp):
            sections.append((f.name, tp))
        else:
            out.append(f"| `{f.name}` | {type_name(tp)} | {default_text(f)} | {markdown_text(FALLBACK[f.name])} |")
    out += ["", "Sections: " + ", ".join(f"[`{n}`](#{n})" for n, _ in sections) + ".", ""]
    for name, cls in sections:
        out += section(name, cls)
    return "\n".join(out).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python docs/make_configuration.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--check", action="store_true", help="exit 1 if docs/configuration.md is not up to date")
    p.add_argument("--out", type=Path, default=OUT, help="where to write (default docs/configuration.md)")
    args = p.parse_args(argv)
    text = render()
    if args.check:
        current = args.out.read_text() if args.out.is_file() else ""
        if current != text:
            print(f"{args.out} is out of date: run python docs/make_configuration.py", file=sys.stderr)
            return 1
        return 0
    atomic_write_bytes(args.out, text.encode())
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
