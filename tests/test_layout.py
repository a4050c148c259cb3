"""Size limits of the package (issue 24): no module over 400 lines, no function over 60,
the search entry (``evo_snn/search/run.py``, what ``python -m evo_snn.search`` runs) at
most 200 lines. Lines are physical lines of the source, docstrings and comments
included; a function's lines run from its ``def`` (decorators excluded) to its last line.

An AST walk, nothing is imported. Functions nested in functions count on their own and
inside their parent.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "evo_snn"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
SEARCH_ENTRY = ROOT / "search" / "run.py"
MAX_SEARCH_ENTRY_LINES = 200

# Files and functions still over a limit while issue 24 is worked on: each entry goes as
# its module is split. Empty when the issue is done.
PENDING_MODULES: set[str] = {
    "evo_snn/analysis/baselines.py",
    "evo_snn/deploy/export.py",
    "evo_snn/search/nsga.py",
    "evo_snn/search/run.py",
    "evo_snn/state/rundir.py",
}
PENDING_FUNCTIONS: set[str] = {
    "evo_snn/analysis/baselines.py::compare",
    "evo_snn/analysis/reproduce.py::run",
    "evo_snn/data/aedat.py::parse_aedat31",
    "evo_snn/deploy/export.py::export_member",
    "evo_snn/deploy/export.py::model_card",
    "evo_snn/search/nsga.py::StructureSearch.screen",
    "evo_snn/search/run.py::_execute",
    "evo_snn/search/run.py::resume_search",
    "evo_snn/state/checkpoint.py::load_checkpoint",
}


def sources() -> dict[str, str]:
    return {str(p.relative_to(ROOT.parent)): p.read_text(encoding="utf-8") for p in sorted(ROOT.rglob("*.py"))}


def long_modules(files: dict[str, str], limit: int = MAX_MODULE_LINES) -> dict[str, int]:
    """{path: lines} of the modules over ``limit`` lines."""
    return {path: n for path, text in files.items() if (n := len(text.splitlines())) > limit}


def long_functions(files: dict[str, str], limit: int = MAX_FUNCTION_LINES) -> dict[str, int]:
    """{'path::qualified.name': lines} of the functions and methods over ``limit`` lines."""
    out = {}
    for path, text in files.items():
        def walk(node, prefix: str) -> None:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    name = f"{prefix}{child.name}"
                    if not isinstance(child, ast.ClassDef):
                        n = child.end_lineno - child.lineno + 1
                        if n > limit:
                            out[f"{path}::{name}"] = n
                    walk(child, name + ".")
                else:
                    walk(child, prefix)

        walk(ast.parse(text, filename=path), "")
    return out


def test_no_module_over_400_lines():
    over = {p: n for p, n in long_modules(sources()).items() if p not in PENDING_MODULES}
    assert not over, f"modules over {MAX_MODULE_LINES} lines (split them): {over}"


def test_no_function_over_60_lines():
    over = {f: n for f, n in long_functions(sources()).items() if f not in PENDING_FUNCTIONS}
    assert not over, f"functions over {MAX_FUNCTION_LINES} lines: {over}"


def test_search_entry_is_a_screen_of_stage_calls():
    n = len(SEARCH_ENTRY.read_text(encoding="utf-8").splitlines())
    assert n <= MAX_SEARCH_ENTRY_LINES or str(SEARCH_ENTRY.relative_to(ROOT.parent)) in PENDING_MODULES, \
        f"{SEARCH_ENTRY.relative_to(ROOT.parent)} has {n} lines (at most {MAX_SEARCH_ENTRY_LINES})"


def test_pending_entries_are_still_over_their_limit():
    """An entry that no longer needs its exemption must go (the lists only shrink)."""
    files = sources()
    modules = set(long_modules(files)) | ({str(SEARCH_ENTRY.relative_to(ROOT.parent))}
                                          if len(files[str(SEARCH_ENTRY.relative_to(ROOT.parent))].splitlines())
                                          > MAX_SEARCH_ENTRY_LINES else set())
    assert PENDING_MODULES <= modules, f"no longer over the limit, remove: {sorted(PENDING_MODULES - modules)}"
    functions = set(long_functions(files))
    assert PENDING_FUNCTIONS <= functions, f"no longer over the limit, remove: {sorted(PENDING_FUNCTIONS - functions)}"


def test_checker_counts_nested_functions_and_methods():
    text = "class A:\n    def m(self):\n" + "        x = 1\n" * 5 + "\n\ndef f():\n    def g():\n" + "        y = 2\n" * 3
    assert long_functions({"t.py": text}, limit=3) == {"t.py::A.m": 6, "t.py::f": 5, "t.py::f.g": 4}
    assert long_modules({"t.py": text}, limit=13) == {"t.py": 14}
