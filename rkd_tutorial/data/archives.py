"""Unpacking downloaded dataset archives safely.

An archive member is just a name and some bytes, and the name can be
``../../.bashrc`` or ``/etc/cron.d/job``; a tar member can also be a symlink
to ``/`` followed by a file written "through" it (the tar path-traversal
bug, CVE-2007-4559). Extracting an archive from the internet with a plain
``extractall`` can therefore write anywhere you can.

:func:`safe_extract` checks *every* member before writing anything and
refuses the whole archive if one of them would land outside the
destination. It then extracts into a temporary folder next to the
destination and moves the result into place, so a failure (a corrupt
archive, a full disk) leaves nothing half-extracted behind.
"""

from __future__ import annotations

import os
import shutil
import stat
import tarfile
import tempfile
import zipfile
from pathlib import Path, PureWindowsPath

TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")


def _inside(base: str, path: str) -> bool:
    return path == base or path.startswith(base + os.sep)


def _check_path(name: str, base: str, member: str | None = None, what: str = "would be written to") -> None:
    """Refuse ``name`` if, joined to ``base``, it is absolute or leaves ``base``.

    ``member`` is the archive member to name in the error (default: ``name``).

    The check is on the text of the path (``os.path.normpath``), not on the
    file system: nothing of the archive exists yet, and links inside the
    archive are checked one by one.
    """
    member = name if member is None else member
    posix = name.replace("\\", "/")
    if posix.startswith("/") or PureWindowsPath(name).drive:
        raise ValueError(f"refusing archive member {member!r}: it is an absolute path.")
    target = os.path.normpath(os.path.join(base, posix))
    if not _inside(base, target):
        raise ValueError(f"refusing archive member {member!r}: it {what} {target}, outside {base}.")


def _check_link(name: str, link: str, base: str, relative_to_member: bool) -> None:
    """Refuse a link whose target is absolute or outside ``base``.

    Symlink targets are relative to the link's own folder; hard-link targets
    are archive paths, relative to the archive's root.
    """
    if link.replace("\\", "/").startswith("/") or PureWindowsPath(link).drive:
        raise ValueError(f"refusing archive member {name!r}: it links to the absolute path {link!r}.")
    folder = os.path.dirname(name) if relative_to_member else ""
    _check_path(os.path.join(folder, link), base, member=name, what=f"links ({link!r}) to")


def _check_tar(tar: tarfile.TarFile, base: str) -> list[tarfile.TarInfo]:
    members = tar.getmembers()
    for m in members:
        _check_path(m.name, base)
        if m.issym():
            _check_link(m.name, m.linkname, base, relative_to_member=True)
        elif m.islnk():
            _check_link(m.name, m.linkname, base, relative_to_member=False)
        elif not (m.isfile() or m.isdir()):
            raise ValueError(f"refusing archive member {m.name!r}: it is a device file or FIFO.")
    return members


def _check_zip(archive: zipfile.ZipFile, base: str) -> None:
    for info in archive.infolist():
        _check_path(info.filename, base)
        if stat.S_ISLNK(info.external_attr >> 16):  # a symlink stored by Unix zip
            link = archive.read(info).decode("utf-8", errors="replace")
            _check_link(info.filename, link, base, relative_to_member=True)


def _move_into(extracted: Path, dest: Path) -> None:
    """Move the freshly extracted tree into ``dest`` without overwriting anything."""
    if not dest.exists():
        shutil.move(str(extracted), str(dest))
        return
    entries = list(extracted.iterdir())
    for entry in entries:
        target = dest / entry.name
        if target.exists() or target.is_symlink():
            raise FileExistsError(
                f"{target} already exists; nothing was changed in {dest}. "
                "Remove it first, or extract somewhere else."
            )
    for entry in entries:
        shutil.move(str(entry), str(dest / entry.name))


def safe_extract(archive_path: str | os.PathLike[str], dest: str | os.PathLike[str]) -> Path:
    """Extract a ``.tar``/``.tar.gz``/``.tgz``/``.zip`` archive into ``dest``.

    Every member is checked first; the archive is refused if any member has an
    absolute path, climbs out with ``..``, or is a symlink or hard link
    pointing outside ``dest`` (tar device files and FIFOs are refused too).
    The members are then extracted into a temporary folder beside ``dest``
    and moved into ``dest`` (created if needed; existing files are never
    overwritten).

    Returns:
        ``dest`` as an absolute :class:`~pathlib.Path`.

    Raises:
        ValueError: a member is unsafe (the message names it), or the file is
            not a tar or zip archive. Nothing is written in that case.
        FileNotFoundError: ``archive_path`` does not exist.
        FileExistsError: a top-level entry of the archive already exists in
            ``dest``.
    """
    archive = Path(archive_path).expanduser()
    dest = Path(os.path.abspath(Path(dest).expanduser()))
    base = str(dest)
    if not archive.is_file():
        raise FileNotFoundError(f"archive {archive} does not exist.")
    name = archive.name.lower()
    is_zip = name.endswith(".zip") or (not name.endswith(TAR_SUFFIXES) and zipfile.is_zipfile(archive))

    if is_zip:
        opened = zipfile.ZipFile(archive)
    else:
        try:
            opened = tarfile.open(archive, "r:*")
        except tarfile.ReadError as err:
            raise ValueError(f"{archive} is not a tar or zip archive ({err}).") from err

    with opened:
        if is_zip:
            _check_zip(opened, base)
        else:
            members = _check_tar(opened, base)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.extracting-", dir=dest.parent))
        try:
            if is_zip:
                opened.extractall(tmp)
            elif hasattr(tarfile, "data_filter"):  # Python >= 3.11.4: a second line of defence
                try:
                    opened.extractall(tmp, members=members, filter="data")
                except tarfile.FilterError as err:
                    raise ValueError(f"refusing archive member {err.tarinfo.name!r}: {err}") from err
            else:
                opened.extractall(tmp, members=members)
            _move_into(tmp, dest)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return dest
