"""Chapters 3, 4 and 7 from an installed package (Colab, ``pip install``), not a checkout.

The package is built as a wheel and installed into a folder of its own; each
chapter runs from an empty folder with that folder on ``PYTHONPATH`` and the
checkout off ``sys.path``, and must show real results, no placeholders.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from chapter_runs import PLACEHOLDERS, ROOT, outputs_text, run_chapter


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The package built as a wheel and installed into a folder of its own."""
    base = tmp_path_factory.mktemp("installed")
    wheels, target = base / "wheels", base / "site"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(wheels), str(ROOT)], check=True, capture_output=True, timeout=600)
    (wheel,) = wheels.glob("rkd_tutorial-*.whl")
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, capture_output=True, timeout=600)
    return target


CHECK_SOURCE = """
import sys, rkd_tutorial
assert rkd_tutorial.__file__.startswith({target!r}), rkd_tutorial.__file__
assert not any(p.rstrip("/") == {root!r} for p in sys.path), "the checkout is on sys.path"
"""


@pytest.mark.parametrize("name", ["03_implementing_rkd", "04_metric_learning", "07_full_scale"])
def test_chapter_runs_from_the_installed_package_and_shows_real_results(installed, tmp_path, name):
    chapter = ROOT / "book" / f"{name}.ipynb"
    empty = tmp_path / "reader"
    nb = run_chapter(chapter, empty, {"PYTHONPATH": str(installed), "RKD_SMOKE": "1",
                                      "RKD_DATA": os.environ.get("RKD_DATA", "")},
                     prepend=CHECK_SOURCE.format(target=str(installed), root=str(ROOT)))
    text = outputs_text(nb)
    for word in PLACEHOLDERS:
        assert word not in text, f"{name} shows {word!r} when installed"
    assert "<table" in text or "| method" in text or "|---" in text, f"{name} shows no results table"
    shutil.rmtree(empty, ignore_errors=True)
