"""What every result records about where it came from: provenance and a fingerprint of the code.

A number in the book must say which code, on which machine, made it. Every
results file and every shipped teacher carries :func:`provenance`, which
includes :func:`code_fingerprint`: a hash of the code that decides the
numbers (docstrings and comments aside). ``tests/test_results.py`` fails when
a shipped results file's fingerprint is not the current code's, i.e. when the
results are stale.
"""

from __future__ import annotations

import ast
import hashlib
from pathlib import Path

from .. import __version__
from ..provenance import stamp
from .profiles import device

__all__ = ["provenance", "code_fingerprint", "RESULT_CODE"]

#: The modules whose code decides a result's numbers (docstrings and comments aside).
RESULT_CODE = ("losses", "train.py", "models.py", "evaluate.py", "data", "experiments")


def _code(source: str) -> str:
    """``source`` as the code it runs: docstrings, comments and layout removed.

    The module is parsed, its docstrings dropped, and the tree written back
    as text (``ast.unparse``), so that rewording a docstring, wrapping a line
    or editing a comment leaves the fingerprint as it is, while any change to
    what the code computes changes it.
    """
    tree = ast.parse(source)
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(body, list) and body and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str)):
            body[0] = ast.Pass()
    return ast.unparse(tree)


def code_fingerprint() -> str:
    """A short hash of the code that produces results (:data:`RESULT_CODE`), as :func:`_code` reads it.

    Stored in every results file; a file whose fingerprint differs from the
    current code's was made by other code (``tests/test_results.py``).
    """
    root = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256()
    for entry in RESULT_CODE:
        paths = sorted((root / entry).rglob("*.py")) if (root / entry).is_dir() else [root / entry]
        for path in paths:
            digest.update(path.relative_to(root).as_posix().encode() + b"\0")
            digest.update(_code(path.read_text()).encode() + b"\0")
    return digest.hexdigest()[:16]


def provenance(profile, wall_s: float, device_=None, **extra) -> dict:
    """Where a result came from: device, versions, commit, code fingerprint, profile, wall time, date."""
    name = profile if isinstance(profile, str) else profile.name
    more = {} if isinstance(profile, str) else {"smoke": profile.smoke}
    return stamp(device(device_), wall_s, profile=name, rkd_tutorial=__version__, code=code_fingerprint(),
                 **more, **extra)


