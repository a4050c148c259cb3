"""The evo_snn modules import each other without a cycle, counting the imports inside
functions too (issue 24): a module only imports modules below it.

An AST walk, nothing is imported. Every ``from .x import ...``, ``from evo_snn.x import
...`` and ``import evo_snn.x`` at any depth (module level, in functions, in any ``if``
block, ``if TYPE_CHECKING:`` included) is an edge from the importing module to the
imported one, relative imports resolved against the importing module's package.
``from P import name`` is an edge to the submodule ``P.name`` when there is one, else to
``P`` itself (a package import such as ``from .data import X`` counts as ``evo_snn.data``,
i.e. its ``__init__``). The parent packages a dotted import
loads on the way (``evo_snn.data`` before ``evo_snn.data.cache``) are not counted: every
module's package is imported before it, so they would be a cycle for each ``__init__``
that imports its own submodules. Imports by string (``importlib.import_module``) are not
seen.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = "evo_snn"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE


def module_files(root: Path = ROOT, package: str = PACKAGE) -> dict[str, Path]:
    """Module name -> source file, every ``.py`` under ``root`` (a package's ``__init__.py``
    is the package's own name)."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join([package, *parts])] = path
    return modules


def _base(module: str, path: Path, node: ast.ImportFrom) -> str | None:
    """The absolute module a ``from ... import`` names (before the imported names)."""
    if node.level == 0:
        return node.module
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    parts = package.split(".")
    if node.level - 1 >= len(parts):
        return None  # above the top package: not ours
    parts = parts[: len(parts) - (node.level - 1)]
    return ".".join(parts + ([node.module] if node.module else []))


def import_graph(modules: dict[str, Path], package: str = PACKAGE) -> dict[str, dict[str, int]]:
    """module -> {imported module of the package: the line of one such import (a module-level
    one where there is one: ``ast.walk`` goes breadth first)}."""
    graph: dict[str, dict[str, int]] = {}
    for module, path in modules.items():
        edges: dict[str, int] = {}

        def add(target: str | None, line: int) -> None:
            if target and target != module and target in modules:
                edges.setdefault(target, line)

        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name == package or alias.name.startswith(package + "."):
                        add(alias.name, node.lineno)
            elif isinstance(node, ast.ImportFrom):
                base = _base(module, path, node)
                if base is None or not (base == package or base.startswith(package + ".")):
                    continue
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    add(sub if sub in modules else base, node.lineno)
        graph[module] = dict(sorted(edges.items()))
    return graph


def components(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted:
    the sets of modules that import each other around some loop."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(v: str) -> None:  # recursion depth <= number of modules (~60)
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(components)


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """One shortest cycle per strongly connected component, from its first module
    (``[a, b, ..., a]``)."""
    return [_one_cycle(graph, set(c), c[0]) for c in components(graph)]


def _one_cycle(graph: dict[str, dict[str, int]], component: set[str], start: str) -> list[str]:
    """A shortest path start -> ... -> start inside the component (breadth first)."""
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in graph[v]:
                if w not in component:
                    continue
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return path[::-1] + [start]
                if w not in previous:
                    previous[w] = v
                    nxt.append(w)
        frontier = nxt
    return sorted(component)


def describe(graph: dict[str, dict[str, int]], modules: dict[str, Path]) -> str:
    """Each component's cycle, the file and line of each import on it, and the component's
    other modules where the cycle does not pass through all of them."""
    def short(module: str) -> str:
        return module.removeprefix(PACKAGE + ".") or PACKAGE

    lines = []
    for component in components(graph):
        cycle = _one_cycle(graph, set(component), component[0])
        lines.append(" -> ".join(map(short, cycle)))
        for a, b in zip(cycle, cycle[1:]):
            lines.append(f"    {modules[a].relative_to(ROOT.parent)}:{graph[a][b]} imports {b}")
        rest = sorted(set(component) - set(cycle))
        if rest:
            lines.append(f"    in the same loop also: {', '.join(map(short, rest))}")
    return "\n".join(lines)


def test_no_import_cycles():
    modules = module_files()
    graph = import_graph(modules)
    assert not cycles(graph), "import cycles between evo_snn modules:\n" + describe(graph, modules)


def test_checker_sees_imports_at_any_depth(tmp_path):
    """The checker itself: relative imports at every level and depth, absolute imports,
    package vs submodule targets, and a cycle through an import inside a function."""
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from .a import f\n")
    (pkg / "a.py").write_text("import os\nfrom . import b\n")
    (pkg / "b.py").write_text("def g():\n    if True:\n        from pkg.sub.c import h\n")
    (pkg / "sub" / "__init__.py").write_text("from . import c\n")
    (pkg / "sub" / "c.py").write_text("class K:\n    def m(self):\n        from ..a import f\n")
    (pkg / "d.py").write_text("import pkg.sub\nfrom .sub import K\nfrom .. import elsewhere\n")
    modules = module_files(pkg, "pkg")
    graph = import_graph(modules, "pkg")
    assert {m: sorted(e) for m, e in graph.items()} == {
        "pkg": ["pkg.a"],
        "pkg.a": ["pkg.b"],
        "pkg.b": ["pkg.sub.c"],
        "pkg.d": ["pkg.sub"],
        "pkg.sub": ["pkg.sub.c"],
        "pkg.sub.c": ["pkg.a"],
    }
    assert cycles(graph) == [["pkg.a", "pkg.b", "pkg.sub.c", "pkg.a"]]
    assert graph["pkg.b"]["pkg.sub.c"] == 3
    (pkg / "e.py").write_text("from .a import f\n")
    (pkg / "b.py").write_text("from . import e\n\ndef g():\n    from pkg.sub.c import h\n")
    graph = import_graph(module_files(pkg, "pkg"), "pkg")
    assert components(graph) == [["pkg.a", "pkg.b", "pkg.e", "pkg.sub.c"]]  # two loops through a and b, one component


# The pipeline's layers, lowest first (docs/design.md): a module imports only modules of
# its own layer or of lower ones. Top-level modules are the shared bottom layer, except
# the thin command modules (``python -m evo_snn.<stage>``) and the package's ``__init__``
# (``evo_snn.load_exported``), which sit above everything.
LAYERS = ("evo_snn", "models", "data", "structure", "training", "evaluation", "state", "analysis", "deploy",
          "search", "commands")
COMMANDS = {"evo_snn.baselines", "evo_snn.export", "evo_snn.pareto", "evo_snn.reproduce", "evo_snn.results",
            "evo_snn.data.__main__", "evo_snn.search.__main__"}


def package_of(module: str) -> str:
    """The layer of a module: its first package below ``evo_snn``, or 'evo_snn' for a
    shared top-level module, or 'commands' for a command module and the root ``__init__``."""
    if module in COMMANDS or module == PACKAGE:
        return "commands"
    parts = module.split(".")
    if len(parts) == 2 and not (ROOT / parts[1]).is_dir():
        return PACKAGE
    return parts[1]


def test_every_module_is_in_a_layer():
    unknown = sorted({package_of(m) for m in module_files()} - set(LAYERS))
    assert not unknown, f"packages missing from LAYERS (add them in the pipeline's order): {unknown}"


def test_lower_layers_never_import_higher_ones():
    modules = module_files()
    graph = import_graph(modules)
    rank = {p: i for i, p in enumerate(LAYERS)}
    upward = [f"{modules[a].relative_to(ROOT.parent)}:{line} ({package_of(a)}) imports {b} ({package_of(b)})"
              for a, edges in graph.items() for b, line in edges.items()
              if rank[package_of(b)] > rank[package_of(a)]]
    assert not upward, "imports from a lower layer into a higher one:\n" + "\n".join(upward)


def test_no_import_cycles_between_packages():
    modules = module_files()
    packages: dict[str, dict[str, int]] = {}
    for a, edges in import_graph(modules).items():
        for b, line in edges.items():
            if package_of(a) != package_of(b):
                packages.setdefault(package_of(a), {}).setdefault(package_of(b), line)
    assert not cycles(packages), f"import cycles between packages: {cycles(packages)}"
