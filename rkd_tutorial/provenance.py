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
import subprocess
import tempfile
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


def git_commit() -> str:
    """The commit of the checkout holding this package (``-dirty`` with uncommitted changes).

    Falls back to ``$RKD_COMMIT`` (set it where the code runs without its ``.git``,
    e.g. a copied tree on a GPU machine), else ``"unknown"``.
    """
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, cwd=here)
        if sha.returncode == 0 and sha.stdout.strip():
            dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                   capture_output=True, text=True, timeout=10, cwd=here).stdout.strip()
            return sha.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return os.environ.get("RKD_COMMIT", "unknown")


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
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then move it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_text_atomic(path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    return write_atomic(path, lambda tmp: Path(tmp).write_text(text))


def write_json_atomic(path, payload) -> Path:
    """Write ``payload`` as indented JSON to ``path`` atomically."""
    return write_text_atomic(path, json.dumps(payload, indent=2) + "\n")
