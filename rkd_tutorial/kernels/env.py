"""What the environment offers the kernels: Triton, and its CPU interpreter.

A module of its own so that both the package's front (:mod:`rkd_tutorial.kernels`,
which must import without Triton) and the host side (:mod:`.functions`) can
ask, without importing each other.
"""

from __future__ import annotations

import functools
import os


@functools.lru_cache(maxsize=None)
def triton_importable() -> bool:
    """True when ``import triton`` works (it is imported here, once, only when asked)."""
    try:
        import triton  # noqa: F401
        import triton.language  # noqa: F401
    except Exception:  # ImportError, or a broken install
        return False
    return True


def interpreter_enabled() -> bool:
    """True when Triton's CPU interpreter is requested (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
