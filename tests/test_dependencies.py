"""Every module the chapters and the package import is declared in pyproject.toml.

A reader who runs ``pip install rkd_tutorial`` (Colab, a laptop) gets the
runtime dependencies and nothing else; a chapter importing an undeclared
module breaks there and nowhere else. This test parses the imports of every
code cell of every chapter and of every module of the package, maps each
top-level module to the distribution that provides it, and checks that the
distribution is declared (or is the standard library, or an optional import
that the code guards).
"""

from __future__ import annotations

import ast
import importlib.metadata as md
import json
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "book").glob("*.ipynb"))

#: Imports guarded by try/except or needed only on a GPU / by a tool, not by a reader's run.
OPTIONAL = {"triton", "google", "IPython", "ipywidgets", "selenium", "yaml", "pytest", "hypothesis", "nbformat"}


def declared() -> set[str]:
    text = (ROOT / "pyproject.toml").read_text()
    block = re.search(r"^dependencies = \[(.*?)^\]", text, re.S | re.M).group(1)
    names = re.findall(r'"([A-Za-z0-9_.\-]+)', block)
    return {n.lower().replace("_", "-") for n in names}


def _cell_source(cell) -> str:
    """The cell as Python: each IPython magic (``%pip ...``, ``!ls``), with its backslash-continued
    lines, becomes a placeholder statement at the same indentation."""
    out, continued = [], False
    for line in "".join(cell["source"]).splitlines():
        if continued:
            continued = line.rstrip().endswith("\\")
            continue
        if line.lstrip().startswith(("%", "!")):
            out.append(line[:len(line) - len(line.lstrip())] + "pass")
            continued = line.rstrip().endswith("\\")
        else:
            out.append(line)
    return "\n".join(out)


def _imports(source: str) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def _distributions(module: str) -> set[str]:
    return {d.lower().replace("_", "-") for d in md.packages_distributions().get(module, [])}


def _check(modules: set[str], where: str) -> list[str]:
    deps = declared()
    problems = []
    for module in sorted(modules):
        if module in sys.stdlib_module_names or module == "rkd_tutorial" or module in OPTIONAL:
            continue
        dists = _distributions(module)
        if not dists:
            problems.append(f"{where}: imports {module!r}, which no installed distribution provides")
        elif not dists & deps:
            problems.append(f"{where}: imports {module!r} (from {', '.join(sorted(dists))}), "
                            "not declared in pyproject.toml's dependencies")
    return problems


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_every_import_of_a_chapter_is_declared(chapter):
    cells = json.loads(chapter.read_text())["cells"]
    modules = set()
    for cell in cells:
        if cell["cell_type"] == "code":
            modules |= _imports(_cell_source(cell))
    assert not _check(modules, chapter.name)


def test_every_import_of_the_package_is_declared():
    problems = []
    for path in sorted((ROOT / "rkd_tutorial").rglob("*.py")):
        problems += _check(_imports(path.read_text()), str(path.relative_to(ROOT)))
    assert not problems, "\n".join(problems)


def test_requirements_txt_holds_the_runtime_dependencies():
    requirements = {re.split(r"[<>=\[ ;]", line.strip())[0].lower().replace("_", "-")
                    for line in (ROOT / "requirements.txt").read_text().splitlines()
                    if line.strip() and not line.startswith("#")}
    assert declared() <= requirements
