"""Where a result came from, and writing it without ever leaving half a file.

Every number the book shows comes from a file written by the project's own
code, with its provenance: the device, the library versions, the commit of the
code, the date and the wall time. The experiments (:mod:`.experiments`), the
benchmarks (:mod:`.bench`) and the training checkpoints (:mod:`.train`) all use
the helpers here.

Writes are atomic: the data goes to a temporary file in the same folder, which
then replaces the target in one ``os.replace``. A crash leaves the old file or
the new one, never a mixture.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import secrets
import stat
import subprocess
from pathlib import Path
from typing import Callable

import torch

__all__ = ["device_name", "git_commit", "stamp", "write_atomic", "write_text_atomic", "write_json_atomic"]


def device_name(device=None) -> str:
    """A readable name of the device, e.g. ``NVIDIA H200`` or ``CPU: AMD EPYC (2 cores, 2 torch threads)``."""
    device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"CPU: {model} ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"


#: Folders that runs write into (relative to the checkout's top): not code.
RUN_OUTPUTS = ("results", "rkd_tutorial/results", "rkd_tutorial/checkpoints")


def git_commit() -> str:
    """The commit of this package's own checkout (``-dirty`` with uncommitted changes).

    What the runs themselves write (``results/``, the shipped copies of those files
    and the shipped teacher checkpoints) does not count as a change: a run that
    refreshes them records the commit whose code it ran, and its code fingerprint
    (``experiments.record``) names that code exactly.

    Recorded only where this file is tracked by git as ``rkd_tutorial/provenance.py``
    at the top level of the checkout: a package installed into another project's
    virtual environment, or copied into another repository, must not record that
    project's commit. Otherwise ``$RKD_COMMIT`` (set it where the code runs without
    its ``.git``, e.g. a copied tree on a GPU machine), else ``"unknown"``.
    """
    here = Path(__file__).resolve()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}  # no GIT_DIR from a caller

    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", *args], capture_output=True, text=True, timeout=10, cwd=here.parent, env=env)

    try:
        top = git("rev-parse", "--show-toplevel")
        own = (top.returncode == 0 and Path(top.stdout.strip()).resolve() / "rkd_tutorial" / here.name == here
               and git("ls-files", "--error-unmatch", here.name).returncode == 0)
        sha = git("rev-parse", "HEAD") if own else None
        if sha is not None and sha.returncode == 0 and sha.stdout.strip():
            dirty = git("status", "--porcelain", "--untracked-files=no", "--", ":/",
                        *(f":(top,exclude){out}" for out in RUN_OUTPUTS)).stdout.strip()
            return sha.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return os.environ.get("RKD_COMMIT") or "unknown"


def stamp(device=None, wall_s: float = 0.0, **extra) -> dict:
    """The provenance block: device, torch (and Triton) versions, commit, date, wall time, extras."""
    try:
        import triton
        triton_version = triton.__version__
    except Exception:  # not installed, or broken
        triton_version = None
    return {"device": device_name(device), "torch": str(torch.__version__), "triton": triton_version,
            "python": platform.python_version(), "commit": git_commit(),
            "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "wall_s": round(wall_s, 3), **extra}


def write_atomic(path, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then move it into place.

    The file gets the permissions of the file it replaces, or, if new, those the
    umask gives any new file (e.g. ``rw-r--r--``): others can read a shared data
    folder or results. A failure leaves ``path`` as it was and no temporary file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))  # 0o666 less the umask
    try:
        write(str(tmp))
        try:
            os.chmod(tmp, stat.S_IMODE(os.stat(path).st_mode))
        except FileNotFoundError:
            pass
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_text_atomic(path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    return write_atomic(path, lambda tmp: Path(tmp).write_text(text))


def write_json_atomic(path, payload) -> Path:
    """Write ``payload`` as indented JSON to ``path`` atomically."""
    return write_text_atomic(path, json.dumps(payload, indent=2) + "\n")
