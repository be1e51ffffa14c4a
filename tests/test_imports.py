"""The package's import graph: data flows one way (DESIGN.md), so the graph of its modules has no cycle.

Every module's imports are read from its source with :mod:`ast` (imports
inside functions and ``if TYPE_CHECKING:`` blocks included: a lazy import is
still a dependency), resolved to modules of ``rkd_tutorial``, and the graph is
checked for cycles. ``kernels`` sits at the bottom: it may import nothing of
the package outside itself (``losses`` -> ``kernels`` is the allowed direction).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "rkd_tutorial"


def module_name(path: Path) -> str:
    parts = ["rkd_tutorial", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def all_modules() -> dict:
    """``{module name: source path}`` of every ``.py`` file of the package."""
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(name: str, path: Path, modules) -> set:
    """The package's modules that ``name`` imports (an imported *name* counts as its module)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for a in node.names:
                found.add(f"{source}.{a.name}" if f"{source}.{a.name}" in modules else source)
    return {m for m in found if m in modules and m != name}


def graph() -> dict:
    modules = all_modules()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def find_cycle(edges: dict):
    """One cycle as a list of modules, or None (depth-first search, three colours)."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(edges):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_the_resolver_sees_relative_absolute_and_lazy_imports():
    edges = graph()
    assert "rkd_tutorial.losses.relational" in edges["rkd_tutorial.losses"]       # from .relational import ...
    assert "rkd_tutorial.kernels" in edges["rkd_tutorial.losses.relational"]      # from .. import kernels (lazy)
    assert "rkd_tutorial.train" in edges["rkd_tutorial.recipes"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_package_has_no_import_cycle():
    cycle = find_cycle(graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_kernels_import_nothing_above_them():
    outside = {name: sorted(m for m in deps if not m.startswith("rkd_tutorial.kernels"))
               for name, deps in graph().items() if name.startswith("rkd_tutorial.kernels")}
    assert all(not deps for deps in outside.values()), {k: v for k, v in outside.items() if v}


def test_bench_times_fit_and_holds_no_training_step_of_its_own():
    """``bench`` times :func:`rkd_tutorial.train.fit`; the only optimiser step in it is the conventional baseline's."""
    assert "rkd_tutorial.train" in graph()["rkd_tutorial.bench.pipeline"]
    stepping = sorted(p.name for p in (PACKAGE / "bench").glob("*.py") if ".step()" in p.read_text())
    assert stepping == ["conventional.py"]
