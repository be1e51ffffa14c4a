"""Unpacking downloaded dataset archives safely.

An archive member is just a name and some bytes, and the name can be
``../../.bashrc`` or ``/etc/cron.d/job``; a tar member can also be a symlink
to ``/`` followed by a file written "through" it (the tar path-traversal
bug, CVE-2007-4559), or one link in a chain of links that each look harmless
alone. Extracting an archive from the internet with a plain ``extractall``
can therefore write anywhere you can.

:func:`safe_extract` checks *every* member before writing anything, and
refuses the whole archive if one of them

* has an absolute name, climbs out with ``..``, or is a device file or FIFO;
* is written, or links, *through* a symlink of the same archive (so every
  path means what its text says, and a chain of links can't mislead the
  checks), or is a link whose target is outside the destination;
* is a link while Python's ``tarfile`` has no ``data_filter`` (added in
  Python 3.9.17, 3.10.12, 3.11.4 and 3.12), which checks links again on the
  disk; or is a zip symlink (``zipfile`` would write it as a small text file);
* takes the total size past ``max_bytes``.

Extracted files lose setuid, setgid and sticky bits and group/other write
permission. Extraction goes into a temporary folder and the result is then
moved into place, so a failure (a refused or corrupt member, a full disk)
leaves nothing half-extracted behind.

This module imports only the standard library.
"""

from __future__ import annotations

import copy
import gzip
import lzma
import os
import stat
import tarfile
import tempfile
import zipfile
import zlib
from pathlib import Path, PureWindowsPath

TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")

MAX_BYTES = 16 * 2**30
"""Default bound on the extracted size, 16 GiB: several times the largest of the paper's datasets (SOP, about 3 GB)."""

_DAMAGED = (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, gzip.BadGzipFile, lzma.LZMAError)


def _inside(base: str, path: str) -> bool:
    return path == base or path.startswith(base + os.sep)


def _absolute(name: str) -> bool:
    return name.replace("\\", "/").startswith("/") or bool(PureWindowsPath(name).drive)


def _check_path(name: str, base: str, member: str | None = None, what: str = "would be written to") -> None:
    """Refuse ``name`` if, joined to ``base``, it is absolute or leaves ``base``.

    ``member`` is the archive member to name in the error (default: ``name``).
    The check is on the text of the path (``os.path.normpath``), which is
    exact because no path may go through a symlink (:func:`_through_symlink`).
    """
    member = name if member is None else member
    if _absolute(name):
        raise ValueError(f"refusing archive member {member!r}: it is an absolute path.")
    target = os.path.normpath(os.path.join(base, name.replace("\\", "/")))
    if not _inside(base, target):
        raise ValueError(f"refusing archive member {member!r}: it {what} {target}, outside {base}.")


def _link_path(member: tarfile.TarInfo) -> str:
    """A link's target as an archive path: symlinks are relative to their folder, hard links to the root."""
    if member.issym():
        return os.path.join(os.path.dirname(member.name), member.linkname)
    return member.linkname


def _through_symlink(path: str, symlinks: set[str]) -> str | None:
    """The symlink member that ``path`` passes through (a folder on its way, not its end), else None."""
    parts = path.replace("\\", "/").split("/")
    for i in range(1, len(parts)):
        folder = os.path.normpath("/".join(parts[:i]))
        if folder in symlinks:
            return folder
    return None


def _check_size(total: int, max_bytes: int, archive: Path) -> None:
    if total > max_bytes:
        raise ValueError(
            f"refusing {archive}: it would extract to {total:,} bytes, more than max_bytes={max_bytes:,} "
            f"({max_bytes / 2**30:g} GiB). If you trust it and the disk has room, pass a larger "
            "max_bytes to safe_extract."
        )


def _check_tar(tar: tarfile.TarFile, base: str, max_bytes: int, archive: Path) -> list[tarfile.TarInfo]:
    members = tar.getmembers()
    symlinks = {os.path.normpath(m.name) for m in members if m.issym()}
    for m in members:
        _check_path(m.name, base)
        paths = [m.name]
        if m.issym() or m.islnk():
            if not hasattr(tarfile, "data_filter"):
                raise ValueError(
                    f"refusing archive member {m.name!r}: it is a link, and this Python's tarfile has no "
                    "data_filter to check links safely. Use Python >= 3.9.17, 3.10.12, 3.11.4 or 3.12, "
                    "or unpack the archive with a tool you trust."
                )
            if _absolute(m.linkname):
                raise ValueError(f"refusing archive member {m.name!r}: it links to the absolute path {m.linkname!r}.")
            paths.append(_link_path(m))
            _check_path(paths[-1], base, member=m.name, what=f"links ({m.linkname!r}) to")
        elif not (m.isfile() or m.isdir()):
            raise ValueError(f"refusing archive member {m.name!r}: it is a device file or FIFO.")
        for path in paths:
            link = _through_symlink(path, symlinks)
            if link is not None:
                raise ValueError(f"refusing archive member {m.name!r}: it goes through the archive's symlink {link!r}.")
    _check_size(sum(m.size for m in members if m.isfile()), max_bytes, archive)
    return members


def _check_zip(archive: zipfile.ZipFile, base: str, max_bytes: int, path: Path) -> None:
    for info in archive.infolist():
        _check_path(info.filename, base)
        if stat.S_ISLNK(info.external_attr >> 16):  # a symlink stored by Unix zip
            raise ValueError(
                f"refusing archive member {info.filename!r}: it is a symlink, which zipfile would "
                "extract as a small text file instead."
            )
    _check_size(sum(info.file_size for info in archive.infolist()), max_bytes, path)


def _plain(member: tarfile.TarInfo) -> tarfile.TarInfo:
    """A copy of a file or folder member under the data filter's rules: no special bits, no owner.

    Used only where ``tarfile`` has no ``data_filter`` (and links were refused).
    """
    member = copy.copy(member)
    member.mode = (member.mode & 0o755) | (0o700 if member.isdir() else 0o600)
    if hasattr(os, "geteuid"):  # run as root, tarfile would hand the files to the archive's owners
        member.uid, member.gid, member.uname, member.gname = os.geteuid(), os.getegid(), "", ""
    return member


def _move_into(tree: Path, dest: Path) -> None:
    """Move the extracted ``tree`` to ``dest``: all of it or, on any error, none of it. Never overwrites."""
    try:
        os.rename(tree, dest)  # dest absent (or an empty folder): one atomic step
        return
    except OSError:
        if not dest.is_dir():
            raise
    moved: list[str] = []
    try:
        for entry in sorted(tree.iterdir()):
            target = dest / entry.name
            if os.path.lexists(target):
                raise FileExistsError(
                    f"{target} already exists; nothing was changed in {dest}. "
                    "Remove it first, or extract somewhere else."
                )
            os.rename(entry, target)
            moved.append(entry.name)
    except BaseException:
        for name in reversed(moved):
            os.rename(dest / name, tree / name)
        raise


def safe_extract(
    archive_path: str | os.PathLike[str], dest: str | os.PathLike[str], *, max_bytes: int = MAX_BYTES
) -> Path:
    """Extract a ``.tar``/``.tar.gz``/``.tgz``/``.zip`` archive into ``dest``.

    Every member is checked first (see the module's docstring); then the
    members are extracted into a temporary folder (inside ``dest`` if it
    exists, else beside it) and moved into ``dest`` (created if needed, with
    the usual permissions; existing files are never overwritten).

    Returns:
        ``dest`` as an absolute :class:`~pathlib.Path`.

    Raises:
        ValueError: a member is unsafe (the message names it), the archive
            would extract to more than ``max_bytes``, or the file is not a
            tar or zip archive, or is damaged. Nothing is left in ``dest``.
        FileNotFoundError: ``archive_path`` does not exist.
        FileExistsError: a top-level entry of the archive already exists in
            ``dest``; nothing was changed.
    """
    archive = Path(archive_path).expanduser()
    dest = Path(os.path.abspath(Path(dest).expanduser()))
    base = str(dest)
    if not archive.is_file():
        raise FileNotFoundError(f"archive {archive} does not exist.")
    name = archive.name.lower()
    is_zip = name.endswith(".zip") or (not name.endswith(TAR_SUFFIXES) and zipfile.is_zipfile(archive))
    try:
        opened = zipfile.ZipFile(archive) if is_zip else tarfile.open(archive, "r:*")
    except _DAMAGED as err:
        raise ValueError(f"{archive} is not a tar or zip archive ({err}).") from err

    with opened:
        try:
            if is_zip:
                _check_zip(opened, base, max_bytes, archive)
            else:
                members = _check_tar(opened, base, max_bytes, archive)
            work_in = dest if dest.is_dir() else dest.parent  # same file system as dest: renames work
            work_in.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(prefix=f".{dest.name}.extracting-", dir=work_in) as work:
                tree = Path(work) / "tree"
                tree.mkdir()  # with the umask's permissions, unlike the private temporary folder
                if is_zip:
                    opened.extractall(tree)
                elif hasattr(tarfile, "data_filter"):  # the standard library checks every member again
                    try:
                        opened.extractall(tree, members=members, filter="data")
                    except tarfile.FilterError as err:
                        raise ValueError(f"refusing archive member {err.tarinfo.name!r}: {err}") from err
                else:
                    opened.extractall(tree, members=[_plain(m) for m in members])
                _move_into(tree, dest)
        except _DAMAGED as err:
            raise ValueError(
                f"{archive} is damaged or truncated ({type(err).__name__}: {err}); delete it and download it again."
            ) from err
    return dest
