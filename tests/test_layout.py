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
    over = long_modules(sources())
    assert not over, f"modules over {MAX_MODULE_LINES} lines (split them): {over}"


def test_no_function_over_60_lines():
    over = long_functions(sources())
    assert not over, f"functions over {MAX_FUNCTION_LINES} lines: {over}"


def test_search_entry_is_a_screen_of_stage_calls():
    n = len(SEARCH_ENTRY.read_text(encoding="utf-8").splitlines())
    assert n <= MAX_SEARCH_ENTRY_LINES, f"{SEARCH_ENTRY.relative_to(ROOT.parent)} has {n} lines (at most {MAX_SEARCH_ENTRY_LINES})"


def test_checker_counts_nested_functions_and_methods():
    text = "class A:\n    def m(self):\n" + "        x = 1\n" * 5 + "\n\ndef f():\n    def g():\n" + "        y = 2\n" * 3
    assert long_functions({"t.py": text}, limit=3) == {"t.py::A.m": 6, "t.py::f": 5, "t.py::f.g": 4}
    assert long_modules({"t.py": text}, limit=13) == {"t.py": 14}
