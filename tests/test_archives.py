"""Tests for rkd_tutorial.data.archives.safe_extract: good archives, hostile ones, faults, permissions.

Most tests run twice: with the standard library's ``tarfile.data_filter``
("filter") and without it ("no_filter", as on Python < 3.9.17, 3.10.12,
3.11.4, e.g. Debian 12's stock python3), by deleting the attribute.
"""

from __future__ import annotations

import io
import os
import shutil
import stat
import subprocess
import tarfile
import textwrap
import zipfile
from pathlib import Path

import pytest

from rkd_tutorial.data import archives, safe_extract

SYSTEM_PYTHON = "/usr/bin/python3"


@pytest.fixture(params=["filter", "no_filter"])
def data_filter(request, monkeypatch):
    """True where tarfile has its data filter; the "no_filter" run deletes it."""
    if request.param == "no_filter":
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
        return False
    if not hasattr(tarfile, "data_filter"):
        pytest.skip("this Python's tarfile has no data_filter")
    return True


def _tar_add(tar: tarfile.TarFile, name: str, data: bytes = b"x", **kwargs) -> None:
    info = tarfile.TarInfo(name)
    for key, value in kwargs.items():
        setattr(info, key, value)
    info.size = len(data) if info.type == tarfile.REGTYPE else 0
    tar.addfile(info, io.BytesIO(data) if info.type == tarfile.REGTYPE else None)


def _make_tar(path: Path, members, mode: str = "w") -> Path:
    """``members``: (name, data or None, TarInfo attributes) triples."""
    with tarfile.open(path, mode) as tar:
        for name, data, kwargs in members:
            _tar_add(tar, name, b"x" if data is None else data, **kwargs)
    return path


def _all_files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


SYM = tarfile.SYMTYPE
HARD = tarfile.LNKTYPE

# --------------------------------------------------------------------------
# Good archives
# --------------------------------------------------------------------------


@pytest.mark.parametrize("suffix, mode", [(".tar", "w"), (".tar.gz", "w:gz"), (".tgz", "w:gz")])
def test_safe_extract_good_tar(tmp_path, suffix, mode, data_filter):
    archive = _make_tar(tmp_path / f"good{suffix}", [
        ("data", None, {"type": tarfile.DIRTYPE, "mode": 0o755}),
        ("data/a.txt", b"hello", {}),
        ("data/sub/b.txt", b"world", {}),
    ], mode)
    dest = safe_extract(archive, tmp_path / "out")
    assert (dest / "data" / "a.txt").read_text() == "hello"
    assert _all_files(tmp_path) == {archive.name, "out", "out/data", "out/data/a.txt",
                                    "out/data/sub", "out/data/sub/b.txt"}
    # A second extraction into the same folder refuses to overwrite and changes nothing.
    with pytest.raises(FileExistsError, match="already exists"):
        safe_extract(archive, dest)
    assert (dest / "data" / "a.txt").read_text() == "hello"
    assert _all_files(tmp_path / "out") == {"data", "data/a.txt", "data/sub", "data/sub/b.txt"}


def test_safe_extract_links_inside_need_the_data_filter(tmp_path, data_filter):
    archive = _make_tar(tmp_path / "links.tar", [
        ("data/sub/b.txt", b"world", {}),
        ("data/link.txt", None, {"type": SYM, "linkname": "sub/b.txt"}),
        ("data/hard.txt", None, {"type": HARD, "linkname": "data/sub/b.txt"}),
    ])
    if data_filter:
        dest = safe_extract(archive, tmp_path / "out")
        assert (dest / "data" / "link.txt").read_text() == "world"
        assert (dest / "data" / "hard.txt").read_text() == "world"
    else:
        with pytest.raises(ValueError, match=r"'data/link.txt': it is a link.*no data_filter.*Python >= 3\.9\.17"):
            safe_extract(archive, tmp_path / "out")
        assert _all_files(tmp_path) == {"links.tar"}


def test_safe_extract_good_zip_into_existing_folder(tmp_path):
    archive = tmp_path / "good.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("Stanford_Online_Products/Ebay_train.txt", "image_id class_id super_class_id path\n")
        zf.writestr("Stanford_Online_Products/bicycle_final/1.JPG", b"jpeg")
        zf.writestr("README.txt", b"top-level file")
    dest = tmp_path / "root"
    (dest / "other").mkdir(parents=True)
    safe_extract(archive, dest)
    assert (dest / "Stanford_Online_Products" / "bicycle_final" / "1.JPG").read_bytes() == b"jpeg"
    assert _all_files(dest) == {"other", "README.txt", "Stanford_Online_Products",
                                "Stanford_Online_Products/Ebay_train.txt", "Stanford_Online_Products/bicycle_final",
                                "Stanford_Online_Products/bicycle_final/1.JPG"}  # no temporary folder left


# --------------------------------------------------------------------------
# Hostile archives: nothing is written anywhere
# --------------------------------------------------------------------------

# case -> (members, the member named in the error with the data filter, and without it)
EVIL_TARS = {
    "dotdot": ([("ok.txt", None, {}), ("../evil.txt", None, {})], "../evil.txt", None),
    "absolute": ([("ok.txt", None, {}), ("{abs}/evil_abs.txt", None, {})], "{abs}/evil_abs.txt", None),
    "symlink_out": ([("link", None, {"type": SYM, "linkname": "../.."}), ("link/evil.txt", None, {})], "link", None),
    "symlink_abs": ([("ok.txt", None, {}), ("link", None, {"type": SYM, "linkname": "{abs}"})], "link", None),
    "hardlink_out": ([("hard", None, {"type": HARD, "linkname": "../outside.txt"})], "hard", None),
    "nested_dotdot": ([("a/b/../../../evil.txt", None, {})], "a/b/../../../evil.txt", None),
    "fifo": ([("pipe", None, {"type": tarfile.FIFOTYPE})], "pipe", None),
    # Each link alone stays inside; together they climb out (l1 is ".", so l1/l2 is "..").
    "symlink_chain": ([("l1", None, {"type": SYM, "linkname": "."}),
                       ("l1/l2", None, {"type": SYM, "linkname": ".."}),
                       ("l1/l2/evil.txt", None, {})], "l1/l2", "l1"),
    "symlink_target_through_link": ([("l1", None, {"type": SYM, "linkname": "."}),
                                     ("l2", None, {"type": SYM, "linkname": "l1/.."})], "l2", "l1"),
    "write_through_inner_link": ([("sub/f", None, {}), ("l", None, {"type": SYM, "linkname": "sub"}),
                                  ("l/g", None, {})], "l/g", "l"),
}


@pytest.mark.parametrize("case", sorted(EVIL_TARS))
def test_safe_extract_refuses_malicious_tar(tmp_path, case, data_filter):
    work = tmp_path / "work"
    work.mkdir()
    members, bad, bad_without_filter = EVIL_TARS[case]
    bad = bad if data_filter or bad_without_filter is None else bad_without_filter
    members = [(name.format(abs=tmp_path), data,
                {k: v.format(abs=tmp_path) if isinstance(v, str) else v for k, v in kw.items()})
               for name, data, kw in members]
    archive = _make_tar(work / "evil.tar", members)
    with pytest.raises(ValueError, match=f"refusing archive member '{bad.format(abs=tmp_path)}'"):
        safe_extract(archive, work / "dest")
    assert _all_files(tmp_path) == {"work", "work/evil.tar"}  # nothing anywhere, not even ok.txt


def test_safe_extract_chain_and_hard_link_cannot_change_an_outside_file(tmp_path, data_filter):
    """l1 -> ".", l1/l2 -> "..": a hard link through them, then a file of the same name, wrote outside."""
    outside = tmp_path / "outside.txt"
    outside.write_text("precious")
    archive = _make_tar(tmp_path / "evil.tar", [
        ("l1", None, {"type": SYM, "linkname": "."}),
        ("l1/l2", None, {"type": SYM, "linkname": ".."}),
        ("h", None, {"type": HARD, "linkname": "l1/l2/outside.txt"}),
        ("h", b"pwned", {}),
    ])
    with pytest.raises(ValueError, match="refusing archive member"):
        safe_extract(archive, tmp_path / "dest")
    assert outside.read_text() == "precious"
    assert _all_files(tmp_path) == {"outside.txt", "evil.tar"}


def test_safe_extract_strips_setuid_and_group_write(tmp_path, data_filter):
    archive = _make_tar(tmp_path / "suid.tar", [
        ("d", None, {"type": tarfile.DIRTYPE, "mode": 0o2777}),
        ("d/run", b"#!/bin/sh\n", {"mode": 0o6777}),
        ("d/sticky", b"x", {"mode": 0o1666}),
    ])
    dest = safe_extract(archive, tmp_path / "out")
    for path in (dest / "d", dest / "d" / "run", dest / "d" / "sticky"):
        mode = path.stat().st_mode
        assert not mode & (stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX | stat.S_IWGRP | stat.S_IWOTH), (path, oct(mode))
    assert os.access(dest / "d" / "run", os.X_OK)


@pytest.mark.parametrize("bad_name", ["../evil.txt", "/abs_evil.txt", "a/../../evil.txt"])
def test_safe_extract_refuses_malicious_zip(tmp_path, bad_name):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("ok.txt", "fine")
        zf.writestr(zipfile.ZipInfo(bad_name), "evil")
    with pytest.raises(ValueError, match="refusing archive member"):
        safe_extract(archive, tmp_path / "dest")
    assert _all_files(tmp_path) == {"evil.zip"}


@pytest.mark.parametrize("target", ["../../etc", "ok.txt"])
def test_safe_extract_refuses_every_zip_symlink(tmp_path, target):
    """zipfile would write a symlink as a text file holding its target: refuse it, inside or not."""
    archive = tmp_path / "links.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("ok.txt", "fine")
        info = zipfile.ZipInfo("link")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, target)
    with pytest.raises(ValueError, match="refusing archive member 'link': it is a symlink"):
        safe_extract(archive, tmp_path / "dest")
    assert _all_files(tmp_path) == {"links.zip"}


# --------------------------------------------------------------------------
# Size bound, damaged archives, permissions
# --------------------------------------------------------------------------


def test_safe_extract_bounds_the_total_size(tmp_path, data_filter):
    tar = _make_tar(tmp_path / "big.tar", [("a", b"x" * 600, {}), ("b", b"y" * 400, {})])
    zip_path = tmp_path / "big.zip"
    with zipfile.ZipFile(zip_path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("a", b"x" * 600)
        zf.writestr("b", b"y" * 400)
    for archive in (tar, zip_path):
        with pytest.raises(ValueError, match=r"1,000 bytes, more than max_bytes=999 .*pass a larger max_bytes"):
            safe_extract(archive, tmp_path / "dest", max_bytes=999)
        assert not (tmp_path / "dest").exists()
        safe_extract(archive, tmp_path / "dest", max_bytes=1000)
        shutil.rmtree(tmp_path / "dest")
    assert archives.MAX_BYTES >= 8 * 2**30  # the paper's datasets fit under the default


def test_safe_extract_damaged_archive_leaves_nothing(tmp_path, data_filter):
    good = _make_tar(tmp_path / "good.tar.gz", [(f"f{i}", os.urandom(5000), {}) for i in range(20)], "w:gz")
    data = good.read_bytes()
    good.unlink()
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="damaged or truncated.*download it again"):
        safe_extract(truncated, tmp_path / "dest")
    assert _all_files(tmp_path) == {"truncated.tar.gz"}


def test_safe_extract_failure_midway_rolls_back(tmp_path, data_filter, monkeypatch):
    """A fault while moving entries into an existing folder undoes the entries already moved."""
    archive = _make_tar(tmp_path / "a.tar", [("a.txt", b"a", {}), ("b.txt", b"b", {}), ("c.txt", b"c", {})])
    dest = tmp_path / "dest"
    dest.mkdir()
    real_rename = os.rename

    def failing_rename(src, dst):
        if Path(dst).name == "c.txt":
            raise OSError(28, "No space left on device")
        real_rename(src, dst)

    monkeypatch.setattr(os, "rename", failing_rename)
    with pytest.raises(OSError, match="No space left"):
        safe_extract(archive, dest)
    assert _all_files(dest) == set()


def test_safe_extract_not_an_archive(tmp_path):
    bogus = tmp_path / "notes.tar"
    bogus.write_bytes(os.urandom(100))
    with pytest.raises(ValueError, match="not a tar or zip archive"):
        safe_extract(bogus, tmp_path / "dest")
    with pytest.raises(FileNotFoundError):
        safe_extract(tmp_path / "missing.tgz", tmp_path / "dest")
    assert _all_files(tmp_path) == {"notes.tar"}


@pytest.mark.parametrize("mask", [0o022, 0o002])
def test_safe_extract_new_folders_follow_the_umask(tmp_path, umask, mask):
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("top/file.txt", "x")
    umask(mask)
    dest = safe_extract(archive, tmp_path / "shared" / "data")
    for folder in (dest, dest / "top"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o777 & ~mask, folder
    assert stat.S_IMODE((dest / "top" / "file.txt").stat().st_mode) == 0o666 & ~mask


# --------------------------------------------------------------------------
# The real thing: a Python whose tarfile has no data_filter
# --------------------------------------------------------------------------


def test_safe_extract_under_a_python_without_data_filter(tmp_path):
    """Run archives.py (standard library only) under the system's python3, e.g. Debian 12's 3.11.2."""
    if not Path(SYSTEM_PYTHON).is_file():
        pytest.skip(f"no {SYSTEM_PYTHON}")
    outside = tmp_path / "outside.txt"
    outside.write_text("precious")
    chain = _make_tar(tmp_path / "chain.tar", [
        ("l1", None, {"type": SYM, "linkname": "."}),
        ("l1/l2", None, {"type": SYM, "linkname": ".."}),
        ("l1/l2/evil.txt", None, {}),
        ("h", None, {"type": HARD, "linkname": "l1/l2/outside.txt"}),
        ("h", b"pwned", {}),
    ])
    suid = _make_tar(tmp_path / "suid.tar", [("run", b"#!/bin/sh\n", {"mode": 0o4755})])
    script = textwrap.dedent("""
        import importlib.util, os, sys
        spec = importlib.util.spec_from_file_location("archives", sys.argv[1])
        archives = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(archives)
        for archive, dest in zip(sys.argv[2::2], sys.argv[3::2]):
            try:
                archives.safe_extract(archive, dest)
                print("extracted", oct(os.stat(os.path.join(dest, "run")).st_mode))
            except ValueError as err:
                print("refused", err)
    """)
    out = subprocess.run(
        [SYSTEM_PYTHON, "-I", "-c", script, archives.__file__,
         str(chain), str(tmp_path / "dest1"), str(suid), str(tmp_path / "dest2")],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("refused refusing archive member 'l1'"), lines
    assert lines[1] == "extracted 0o100755", lines
    assert outside.read_text() == "precious"
    assert _all_files(tmp_path) == {"outside.txt", "chain.tar", "suid.tar", "dest2", "dest2/run"}
