"""The package ships cleanly: sdist and wheel build, pass ``twine check``, hold exactly the
package and its data, and the sdist installs and runs outside the checkout.

The build runs on a copy of the repository's files in a temporary folder (without build
isolation: the set-up's setuptools builds it, offline), so the checkout gets no build/,
dist/ or egg-info. About 15 s.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "rkd_tutorial"


def _repository_files() -> list[str]:
    """Tracked files and new ones that git does not ignore: what a clone would hold."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                         cwd=ROOT, capture_output=True, check=True).stdout.decode()
    return sorted(p for p in out.split("\0") if p and (ROOT / p).is_file())


def _git_available() -> bool:
    try:
        subprocess.run(["git", "rev-parse", "--git-dir"], cwd=ROOT, capture_output=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return False
    return True


needs_git = pytest.mark.skipif(not _git_available(), reason="not a git checkout")


def _version() -> str:
    text = (ROOT / PACKAGE / "__init__.py").read_text()
    return re.search(r'^__version__ = "([^"]+)"$', text, re.M).group(1)


def expected_package_files() -> set[str]:
    """What the wheel must hold besides its .dist-info: modules, checkpoints, shipped results."""
    files = {p for p in _repository_files() if p.startswith(f"{PACKAGE}/")}
    modules = {p for p in files if p.endswith(".py")}
    data = {p for p in files if re.fullmatch(rf"{PACKAGE}/checkpoints/([^/]+\.pt|SHA256SUMS)", p)
            or re.fullmatch(rf"{PACKAGE}/results/[^/]+\.(json|md)", p)}
    return modules | data


@pytest.fixture(scope="module")
def dists(tmp_path_factory) -> dict:
    """sdist and wheel of a copy of the repository: ``{"sdist", "wheel", "src", "tmp"}``."""
    pytest.importorskip("build", reason="the build package is not installed (requirements.txt)")
    if not _git_available():
        pytest.skip("not a git checkout")
    tmp = tmp_path_factory.mktemp("packaging")
    src = tmp / "src"
    for path in _repository_files():
        (src / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / path, src / path)
    out = tmp / "dist"
    result = subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(src)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, (result.stdout + result.stderr)[-5000:]
    sdists, wheels = sorted(out.glob("*.tar.gz")), sorted(out.glob("*.whl"))
    assert len(sdists) == 1 and len(wheels) == 1, sorted(p.name for p in out.iterdir())
    return {"sdist": sdists[0], "wheel": wheels[0], "src": src, "tmp": tmp}


# ----------------------------------------------------------------------------- metadata, version, repository

def test_version_is_written_once():
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'^dynamic = \["version"\]', pyproject, re.M), "pyproject.toml should read the version"
    assert re.search(r'^version = \{ ?attr = "rkd_tutorial\.__version__" ?\}', pyproject, re.M)
    assert not re.search(r'^version = "', pyproject, re.M), "a second copy of the version in pyproject.toml"
    changelog = (ROOT / "CHANGELOG.md").read_text()
    headings = re.findall(r"^## (.+)$", changelog, re.M)
    assert headings[0] == "Unreleased" and "0.1.0" in headings, headings
    assert _version() in headings, f"CHANGELOG.md has no section for {_version()}"
    assert re.search(r"^## Unreleased\n\n- ", changelog, re.M), "the Unreleased section lists its changes as bullets"


def test_runtime_dependencies():
    pyproject = (ROOT / "pyproject.toml").read_text()
    requirements = (ROOT / "requirements.txt").read_text().splitlines()
    assert '"pandas>=1.5"' in pyproject and "pandas>=1.5" in requirements   # the chapters import it
    for tool in ("build", "twine"):
        assert any(re.match(rf"{tool}\b", line) for line in requirements), f"{tool} is missing from requirements.txt"


@needs_git
def test_build_outputs_stay_out_of_the_repository():
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    bad = [p for p in tracked if p.startswith(("build/", "dist/", "_build/")) or ".egg-info/" in p]
    assert not bad, f"build outputs are tracked: {bad[:10]}"
    for path in ("build/x", "dist/x.whl", "rkd_tutorial.egg-info/PKG-INFO", "_build/html/index.html"):
        ignored = subprocess.run(["git", "check-ignore", "-q", "--no-index", path], cwd=ROOT)
        assert ignored.returncode == 0, f".gitignore does not cover {path}"


# ----------------------------------------------------------------------------- sdist and wheel

def test_twine_check_passes(dists):
    pytest.importorskip("twine", reason="twine is not installed (requirements.txt)")
    result = subprocess.run([sys.executable, "-m", "twine", "check", "--strict", str(dists["sdist"]), str(dists["wheel"])],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_wheel_holds_exactly_the_package_and_its_data(dists):
    version = _version()
    assert dists["wheel"].name == f"{PACKAGE}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(dists["wheel"]) as wheel:
        names = set(wheel.namelist())
        metadata = wheel.read(f"{PACKAGE}-{version}.dist-info/METADATA").decode()
    info = {n for n in names if n.startswith(f"{PACKAGE}-{version}.dist-info/")}
    content = names - info
    expected = expected_package_files()
    assert content == expected, (f"missing from the wheel: {sorted(expected - content)}; "
                                 f"not expected in it: {sorted(content - expected)}")
    assert not [n for n in names if n.startswith(("tests/", "book/", "build/", "results/", "scripts/"))]
    assert any(n.endswith(".pt") for n in content) and f"{PACKAGE}/checkpoints/SHA256SUMS" in content
    if (ROOT / PACKAGE / "results").is_dir():
        assert any(n.startswith(f"{PACKAGE}/results/") and n.endswith(".json") for n in content)
    assert f"{PACKAGE}-{version}.dist-info/licenses/LICENSE" in info

    assert f"Version: {version}\n" in metadata
    assert "License-Expression: MIT\n" in metadata and "License-File: LICENSE\n" in metadata
    assert "Requires-Dist: pandas>=1.5\n" in metadata
    assert re.search(r"^Project-URL: Source, https://github\.com/", metadata, re.M)


def test_sdist_holds_the_package_not_the_repository(dists):
    version = _version()
    top = f"{PACKAGE}-{version}/"
    with tarfile.open(dists["sdist"]) as sdist:
        names = {m.name[len(top):] for m in sdist.getmembers() if m.isfile()}
    assert {"pyproject.toml", "README.md", "LICENSE", "PKG-INFO"} <= names
    assert not [n for n in names if n.startswith(("tests/", "book/", "build/", "results/", "_build/", ".github/"))]
    assert {n for n in names if n.startswith(f"{PACKAGE}/")} == expected_package_files()


def test_sdist_installs_and_runs_outside_the_checkout(dists):
    """pip installs the sdist into a fresh folder; `python -m rkd_tutorial --help` runs from there."""
    target, cwd = dists["tmp"] / "target", dists["tmp"] / "elsewhere"
    cwd.mkdir()
    install = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                              "--target", str(target), str(dists["sdist"])], capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, (install.stdout + install.stderr)[-5000:]
    assert (target / PACKAGE / "checkpoints" / "SHA256SUMS").is_file()
    env = dict(os.environ, PYTHONPATH=str(target))
    where = subprocess.run([sys.executable, "-c", "import rkd_tutorial; print(rkd_tutorial.__file__, rkd_tutorial.__version__)"],
                           cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert where.returncode == 0, where.stderr
    module_file, version = where.stdout.split()
    assert Path(module_file).resolve().is_relative_to(target.resolve()), f"imported {module_file}, not the installed copy"
    assert version == _version()
    helped = subprocess.run([sys.executable, "-m", PACKAGE, "--help"], cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=300)
    assert helped.returncode == 0, helped.stdout + helped.stderr
    assert helped.stdout.startswith("usage: python -m rkd_tutorial") and "metric" in helped.stdout
