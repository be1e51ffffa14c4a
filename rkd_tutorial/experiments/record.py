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
import io
import tokenize
from pathlib import Path

from .. import __version__
from ..provenance import stamp
from .profiles import device

__all__ = ["provenance", "code_fingerprint", "RESULT_CODE"]

#: The modules whose code decides a result's numbers (docstrings and comments aside).
RESULT_CODE = ("losses", "train.py", "models.py", "evaluate.py", "data", "experiments")


def _code_lines(source: str) -> str:
    """``source`` without docstrings, comments and blank lines: the lines that decide what it computes.

    Text, not an AST dump, so that every Python version gives the same result.
    """
    skip = set()
    for node in ast.walk(ast.parse(source)):
        body = getattr(node, "body", None)
        if (isinstance(body, list) and body and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str)):
            skip.update(range(body[0].lineno, body[0].end_lineno + 1))
    lines = source.splitlines()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            row, col = tok.start
            lines[row - 1] = lines[row - 1][:col]
    kept = (line.rstrip() for i, line in enumerate(lines, 1) if i not in skip)
    return "\n".join(line for line in kept if line.strip())


def code_fingerprint() -> str:
    """A short hash of the code that produces results: :data:`RESULT_CODE`, without docstrings or comments.

    Stored in every results file; a file whose fingerprint differs from the
    current code's was made by other code (``tests/test_results.py``).
    """
    root = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256()
    for entry in RESULT_CODE:
        paths = sorted((root / entry).rglob("*.py")) if (root / entry).is_dir() else [root / entry]
        for path in paths:
            digest.update(path.relative_to(root).as_posix().encode() + b"\0")
            digest.update(_code_lines(path.read_text()).encode() + b"\0")
    return digest.hexdigest()[:16]


def provenance(profile, wall_s: float, device_=None, **extra) -> dict:
    """Where a result came from: device, versions, commit, code fingerprint, profile, wall time, date."""
    name = profile if isinstance(profile, str) else profile.name
    more = {} if isinstance(profile, str) else {"smoke": profile.smoke}
    return stamp(device(device_), wall_s, profile=name, rkd_tutorial=__version__, code=code_fingerprint(),
                 **more, **extra)


