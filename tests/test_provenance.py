"""Tests for rkd_tutorial.provenance: file permissions of atomic writes, and which commit is recorded."""

from __future__ import annotations

import importlib.util
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from rkd_tutorial import provenance
from rkd_tutorial.provenance import git_commit, write_atomic, write_json_atomic, write_text_atomic


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --------------------------------------------------------------------------
# write_atomic
# --------------------------------------------------------------------------


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077])
def test_new_files_follow_the_umask(tmp_path, umask, mask):
    umask(mask)
    write_text_atomic(tmp_path / "shared" / "a.txt", "hello")
    write_json_atomic(tmp_path / "shared" / "b.json", {"x": 1})
    write_atomic(tmp_path / "shared" / "c.bin", lambda tmp: Path(tmp).write_bytes(b"\0"))
    for name in ("a.txt", "b.json", "c.bin"):
        assert _mode(tmp_path / "shared" / name) == 0o666 & ~mask, name
    assert _mode(tmp_path / "shared") == 0o777 & ~mask


@pytest.mark.parametrize("mode", [0o640, 0o644, 0o600, 0o755])
def test_replacing_keeps_the_files_mode(tmp_path, umask, mode):
    umask(0o077)
    target = tmp_path / "results.json"
    target.write_text("old")
    target.chmod(mode)
    write_text_atomic(target, "new")
    assert target.read_text() == "new" and _mode(target) == mode


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "results.json"
    target.write_text("old")

    def fail(tmp):
        Path(tmp).write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_atomic(target, fail)
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]


# --------------------------------------------------------------------------
# git_commit
# --------------------------------------------------------------------------


def _git(cwd: Path, *args: str) -> str:
    out = subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.org", *args],
                         cwd=cwd, capture_output=True, text=True, check=True)
    return out.stdout.strip()


def _repo(path: Path) -> Path:
    path.mkdir(parents=True)
    _git(path, "init", "-q")
    (path / "pyproject.toml").write_text('[project]\nname = "someone-elses-project"\n')
    _git(path, "add", "pyproject.toml")
    _git(path, "commit", "-q", "-m", "theirs")
    return path


def _copy_provenance(folder: Path):
    """Copy provenance.py to ``folder/rkd_tutorial/`` and import that copy."""
    copy = folder / "rkd_tutorial" / "provenance.py"
    copy.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(provenance.__file__, copy)
    spec = importlib.util.spec_from_file_location(f"copied_provenance_{abs(hash(str(copy)))}", copy)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def no_git_env(monkeypatch):
    monkeypatch.delenv("RKD_COMMIT", raising=False)
    for key in [k for k in os.environ if k.startswith("GIT_")]:
        monkeypatch.delenv(key)


@pytest.mark.skipif(shutil.which("git") is None, reason="no git")
def test_git_commit_of_another_projects_repository_is_not_recorded(tmp_path, monkeypatch, no_git_env):
    """Installed in another project's venv, or vendored deeper in its tree: not our commit."""
    foreign = _repo(tmp_path / "project")
    installed = _copy_provenance(foreign / ".venv" / "lib" / "python3.11" / "site-packages")
    assert installed.git_commit() == "unknown"
    monkeypatch.setenv("RKD_COMMIT", "abc123")
    assert installed.git_commit() == "abc123"
    monkeypatch.setenv("RKD_COMMIT", "")
    assert installed.git_commit() == "unknown"

    vendored = _copy_provenance(foreign / "vendor")
    _git(foreign, "add", "vendor")
    _git(foreign, "commit", "-q", "-m", "vendor it")
    assert vendored.git_commit() == "unknown"


@pytest.mark.skipif(shutil.which("git") is None, reason="no git")
def test_git_commit_of_the_packages_own_checkout(tmp_path, monkeypatch, no_git_env):
    own = _repo(tmp_path / "rkd")
    module = _copy_provenance(own)
    assert module.git_commit() == "unknown"  # not tracked yet
    _git(own, "add", "rkd_tutorial")
    _git(own, "commit", "-q", "-m", "ours")
    head = _git(own, "rev-parse", "HEAD")
    assert module.git_commit() == head
    # What runs write (results, shipped results, teacher checkpoints) is not a change of code.
    for out in ("results/metric-quick.json", "rkd_tutorial/results/metric-quick.json",
                "rkd_tutorial/checkpoints/metric-quick-seed0.pt"):
        (own / out).parent.mkdir(parents=True, exist_ok=True)
        (own / out).write_text("old\n")
    _git(own, "add", "results", "rkd_tutorial")
    _git(own, "commit", "-q", "-m", "outputs")
    head = _git(own, "rev-parse", "HEAD")
    for out in ("results/metric-quick.json", "rkd_tutorial/results/metric-quick.json",
                "rkd_tutorial/checkpoints/metric-quick-seed0.pt"):
        (own / out).write_text("new\n")
    assert module.git_commit() == head
    (own / "pyproject.toml").write_text("changed\n")
    assert module.git_commit() == head + "-dirty"

    # A GIT_DIR inherited from a caller (a hook, a wrapper script) must not swap in its repository.
    foreign = _repo(tmp_path / "other")
    monkeypatch.setenv("GIT_DIR", str(foreign / ".git"))
    assert module.git_commit() == head + "-dirty"


def test_git_commit_here_is_this_checkouts_head_or_a_fallback():
    commit = git_commit()
    here = Path(provenance.__file__).resolve().parent
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True)
    if head.returncode == 0 and (here.parent / ".git").exists():
        assert commit.split("-")[0] == head.stdout.strip()
    else:
        assert commit == (os.environ.get("RKD_COMMIT") or "unknown")
