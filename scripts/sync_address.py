#!/usr/bin/env python3
"""One place for the repository's address: ``repository`` (``url``, ``branch``) in ``_config.yml``.

Every other copy of the address is derived from it, and this script writes them all:

* each chapter's "Open in Colab" badge (the first Markdown cell of ``book/*.ipynb``): the
  standard badge image, linking to the chapter in Colab,
  ``https://colab.research.google.com/github/OWNER/REPO/blob/BRANCH/book/NAME.ipynb``;
* the Colab install command, ``%pip install -q "rkd_tutorial @ git+https://github.com/OWNER/REPO"``,
  wherever it appears (the chapters' install cells, README.md, book/api.md, ...);
* every other link to the repository (``https://github.com/OWNER/REPO``, with
  ``/blob/BRANCH/PATH`` and the like) or to its site (``https://OWNER.github.io/REPO/``, or
  ``html.baseurl`` when _config.yml sets one) in the repository's text files: README.md,
  pyproject.toml's ``[project.urls]``, CITATION.cff, CHANGELOG.md, the book's pages, ...

Which addresses are "the repository's"? The one in _config.yml, and every one that a copy
that can only mean this repository holds: a chapter's own badge, an ``rkd_tutorial @ git+...``
install command, pyproject.toml's ``[project.urls]``, CITATION.cff's ``repository-code``.
Links to other repositories (the paper's official code, say) are left alone.

Usage, from anywhere::

    python scripts/sync_address.py           # rewrite every copy from _config.yml
    python scripts/sync_address.py --check   # change nothing; list the copies that disagree, exit 1 if any

Notebooks are edited as JSON (cell sources only, never outputs) and written back the way
nbformat writes them (indent 1, UTF-8, trailing newline), so only the changed lines differ.
``results/`` and the package's copy of it are left alone: their files record where they were
made (provenance). Standard library and PyYAML only.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CONFIG = "_config.yml"
BADGE_IMAGE = "https://colab.research.google.com/assets/colab-badge.svg"
PACKAGE = "rkd_tutorial"

#: Left alone: the source itself, this script (its patterns are not copies), provenance.
SKIP_FILES = {CONFIG, "scripts/sync_address.py"}
SKIP_DIRS = ("results/", "rkd_tutorial/results/", ".git/", ".venv/", "venv/", "_build/", "build/", "dist/", "data/")

_OWNER = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_REPO = r"[A-Za-z0-9_.-]*[A-Za-z0-9_-]"          # no trailing dot: "see github.com/o/r."
_BRANCH = r"[A-Za-z0-9_.-]*[A-Za-z0-9_-]"

COLAB_RE = re.compile(
    rf"https://colab\.research\.google\.com/github/(?P<owner>{_OWNER})/(?P<repo>{_REPO})"
    rf"/blob/(?P<branch>{_BRANCH})/(?P<path>[^\s)\"'<>\]\\]+)")
INSTALL_RE = re.compile(rf"{PACKAGE} @ git\+https://github\.com/(?P<owner>{_OWNER})/(?P<repo>{_REPO})")
GITHUB_RE = re.compile(
    rf"(?<![\w.-])(?P<scheme>(?:https?://)?)github\.com/(?P<owner>{_OWNER})/(?P<repo>{_REPO})"
    rf"(?:/(?P<kind>blob|tree|raw|edit)/(?P<branch>{_BRANCH})/)?")
PAGES_RE = re.compile(rf"https://(?P<owner>{_OWNER})\.github\.io/(?P<repo>{_REPO})/?")
BADGE_RE = re.compile(r"\[!\[Open in Colab\]\((?P<image>[^)\s]*)\)\]\((?P<link>[^)\s]*)\)")


@dataclass(frozen=True)
class Address:
    """The repository's address, as _config.yml gives it, and every form derived from it."""

    owner: str
    repo: str
    branch: str
    site: str          # the published book, with a trailing slash

    @property
    def url(self) -> str:
        return f"https://github.com/{self.owner}/{self.repo}"

    @property
    def install(self) -> str:
        return f"{PACKAGE} @ git+{self.url}"

    def colab(self, path: str) -> str:
        return f"https://colab.research.google.com/github/{self.owner}/{self.repo}/blob/{self.branch}/{path}"

    def badge(self, path: str) -> str:
        return f"[![Open in Colab]({BADGE_IMAGE})]({self.colab(path)})"


def _key(owner: str, repo: str) -> tuple[str, str]:
    """GitHub names are case-insensitive; ``.git`` is the same repository."""
    return owner.lower(), re.sub(r"\.git$", "", repo).lower()


def read_address(root: Path = ROOT) -> Address:
    """The address in ``root/_config.yml`` (``repository.url``, ``repository.branch``, ``html.baseurl``)."""
    config = yaml.safe_load((root / CONFIG).read_text(encoding="utf-8")) or {}
    repository = config.get("repository") or {}
    url = str(repository.get("url", "")).strip()
    match = re.fullmatch(rf"https://github\.com/({_OWNER})/({_REPO}?)(?:\.git)?/?", url)
    if not match:
        raise SystemExit(f"{CONFIG}: repository.url must look like https://github.com/OWNER/REPO, not {url!r}")
    owner, repo = match.groups()
    branch = str(repository.get("branch") or "main")
    site = str((config.get("html") or {}).get("baseurl") or f"https://{owner.lower()}.github.io/{repo}/")
    return Address(owner, repo, branch, site.rstrip("/") + "/")


def text_files(root: Path = ROOT) -> list[str]:
    """The repository's files (tracked, or new and not ignored) as paths relative to ``root``."""
    try:
        out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                             cwd=root, capture_output=True, check=True).stdout.decode()
        paths = sorted({p for p in out.split("\0") if p})
    except (OSError, subprocess.CalledProcessError):   # not a git checkout (an unpacked archive, a test's copy)
        paths = sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                       if p.is_file() and not any(part.startswith(".") and part not in (".github", ".ci")
                                                  for part in p.relative_to(root).parts)
                       and not any(part.endswith(".egg-info") or part == "__pycache__"
                                   for part in p.relative_to(root).parts))
    return [p for p in paths if p not in SKIP_FILES and not p.startswith(SKIP_DIRS) and (root / p).is_file()]


def _read_text(path: Path) -> str | None:
    data = path.read_bytes()
    if b"\0" in data:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def known_addresses(root: Path, address: Address, files: dict[str, str]) -> set[tuple[str, str]]:
    """The addresses that mean this repository: _config.yml's, and those its sure copies hold."""
    known = {_key(address.owner, address.repo)}
    for path, text in files.items():
        for match in INSTALL_RE.finditer(text):
            known.add(_key(match["owner"], match["repo"]))
        if path == "pyproject.toml":
            section = re.search(r"^\[project\.urls\][^\n]*\n(.*?)(?=^\[|\Z)", text, re.M | re.S)
            for match in GITHUB_RE.finditer(section.group(1) if section else ""):
                known.add(_key(match["owner"], match["repo"]))
        if path == "CITATION.cff":
            for match in re.finditer(r"^repository-code:\s*[\"']?(\S+?)[\"']?\s*$", text, re.M):
                for inner in GITHUB_RE.finditer(match.group(1)):
                    known.add(_key(inner["owner"], inner["repo"]))
        if path.startswith("book/") and path.endswith(".ipynb"):
            badge = BADGE_RE.search(_first_markdown(text))
            colab = COLAB_RE.fullmatch(badge["link"]) if badge else None
            if colab:
                known.add(_key(colab["owner"], colab["repo"]))
    return known


def rewrite(text: str, address: Address, known: set[tuple[str, str]]) -> str:
    """``text`` with every copy of a known address replaced by ``address``'s."""
    def colab(m: re.Match) -> str:
        return address.colab(m["path"]) if _key(m["owner"], m["repo"]) in known else m.group(0)

    def badge(m: re.Match) -> str:
        link = COLAB_RE.fullmatch(m["link"])
        if link is None or _key(link["owner"], link["repo"]) not in known:
            return m.group(0)
        return f"[![Open in Colab]({BADGE_IMAGE})]({m['link']})"

    def github(m: re.Match) -> str:
        if _key(m["owner"], m["repo"]) not in known:
            return m.group(0)
        scheme = m["scheme"]
        url = f"{scheme}github.com/{address.owner}/{address.repo}"
        return url + (f"/{m['kind']}/{address.branch}/" if m["kind"] else "")

    def pages(m: re.Match) -> str:
        return address.site if _key(m["owner"], m["repo"]) in known else m.group(0)

    text = COLAB_RE.sub(colab, text)
    text = BADGE_RE.sub(badge, text)
    text = INSTALL_RE.sub(address.install, text)     # the package's install command can only mean this repository
    text = GITHUB_RE.sub(github, text)
    return PAGES_RE.sub(pages, text)


def _first_markdown(notebook_text: str) -> str:
    try:
        cells = json.loads(notebook_text).get("cells", [])
    except ValueError:
        return ""
    for cell in cells:
        if cell.get("cell_type") == "markdown":
            return _source(cell)
    return ""


def _source(cell: dict) -> str:
    source = cell.get("source", "")
    return source if isinstance(source, str) else "".join(source)


def _set_source(cell: dict, text: str) -> None:
    cell["source"] = text if isinstance(cell.get("source"), str) else text.splitlines(keepends=True)


def rewrite_notebook(path: str, text: str, address: Address, known: set[tuple[str, str]]) -> tuple[str, list[str]]:
    """The notebook with its badge and install command regenerated; and what is missing from it."""
    notebook = json.loads(text)
    problems = []
    first_markdown = True
    installs = 0
    for cell in notebook.get("cells", []):
        source = _source(cell)
        new = rewrite(source, address, known)
        if cell.get("cell_type") == "markdown" and first_markdown:
            first_markdown = False
            if BADGE_RE.search(new):
                new = BADGE_RE.sub(lambda m: address.badge(path), new, count=1)
            elif new.startswith("# "):   # no badge yet: it goes under the title
                title, _, rest = new.partition("\n")
                new = f"{title}\n\n{address.badge(path)}\n\n{rest.lstrip(chr(10))}"
            else:
                new = f"{address.badge(path)}\n\n{new}"
        if cell.get("cell_type") == "code":
            installs += len(INSTALL_RE.findall(new))
        if new != source:
            _set_source(cell, new)
    if first_markdown:
        problems.append(f"{path}: no Markdown cell to hold the Open in Colab badge")
    if installs == 0:
        problems.append(f'{path}: no Colab install cell (%pip install -q "{address.install}")')
    return json.dumps(notebook, indent=1, ensure_ascii=False) + "\n", problems


def plan(root: Path = ROOT) -> tuple[dict[str, tuple[str, str]], list[str]]:
    """What a sync would change: ``{path: (old text, new text)}``, and the problems it cannot fix."""
    address = read_address(root)
    files = {}
    for path in text_files(root):
        text = _read_text(root / path)
        if text is not None:
            files[path] = text
    known = known_addresses(root, address, files)
    changes, problems = {}, []
    for path, text in files.items():
        if path.startswith("book/") and path.endswith(".ipynb") and "/" not in path[len("book/"):]:
            new, missing = rewrite_notebook(path, text, address, known)
            problems += missing
        elif path.endswith(".ipynb"):   # any other notebook: links only
            notebook, changed = json.loads(text), False
            for cell in notebook.get("cells", []):
                source = _source(cell)
                if rewrite(source, address, known) != source:
                    _set_source(cell, rewrite(source, address, known))
                    changed = True
            new = json.dumps(notebook, indent=1, ensure_ascii=False) + "\n" if changed else text
        else:
            new = rewrite(text, address, known)
        if new != text:
            changes[path] = (text, new)
    return changes, problems


def _differences(old: str, new: str) -> list[str]:
    old_lines, new_lines = old.splitlines(), new.splitlines()
    if len(old_lines) != len(new_lines):
        return ["(lines added or removed)"]
    return [f"  line {i}: {a.strip()[:160]}\n       -> {b.strip()[:160]}"
            for i, (a, b) in enumerate(zip(old_lines, new_lines), 1) if a != b]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="change nothing; list the copies that disagree with _config.yml and exit 1 if any")
    parser.add_argument("--root", type=Path, default=ROOT, help="the repository's top level (default: this checkout)")
    args = parser.parse_args(argv)
    root = args.root.resolve()
    address = read_address(root)
    changes, problems = plan(root)
    if args.check:
        for path, (old, new) in sorted(changes.items()):
            print(f"{path}: disagrees with {CONFIG} ({address.url}, branch {address.branch})")
            print("\n".join(_differences(old, new)))
        for problem in problems:
            print(problem)
        if changes or problems:
            print(f"\n{len(changes)} file(s) disagree with {CONFIG}; run: python scripts/sync_address.py")
            return 1
        print(f"every copy of the address agrees with {CONFIG}: {address.url} (branch {address.branch}), site {address.site}")
        return 0
    for path, (_, new) in sorted(changes.items()):
        with open(root / path, "w", encoding="utf-8", newline="") as f:
            f.write(new)
        print(f"updated {path}")
    for problem in problems:
        print(problem, file=sys.stderr)
    print(f"{len(changes)} file(s) updated from {CONFIG}: {address.url} (branch {address.branch}), site {address.site}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
