"""Chapter 2's explorable figure (``book/_static/rkd_explorable.js``) computes what the package computes.

The figure runs in the reader's browser, so its RKD-D and RKD-A are a second
implementation of :func:`rkd_tutorial.losses.rkd_distance_loss` and
:func:`rkd_tutorial.losses.rkd_angle_loss`. Here its functions run in node (skipped
where node is missing) on the figure's own configuration and on random ones, and must
agree with the package in float64 to 1e-9 relative. ``tests/test_site.py`` checks the
same in the built page, by dragging a point in a browser.

Also checked, without a build: chapter 2 has the figure's cell where it belongs, with
its note for Colab and Jupyter readers, and ``_config.yml`` loads the script.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from rkd_tutorial.losses import rkd_angle_loss, rkd_distance_loss

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "book" / "_static" / "rkd_explorable.js"
CHAPTER = ROOT / "book" / "02_relational_kd.ipynb"
RTOL = 1e-9


def package_losses(student, teacher) -> tuple[float, float]:
    """(RKD-D, RKD-A) of the package, in float64."""
    s = torch.tensor(student, dtype=torch.float64)
    t = torch.tensor(teacher, dtype=torch.float64)
    return rkd_distance_loss(s, t).item(), rkd_angle_loss(s, t).item()


def close(a: float, b: float, rtol: float = RTOL) -> bool:
    """Equal to ``rtol`` relative; below 1e-15 both are zero up to rounding (a perfect match)."""
    return abs(a - b) <= rtol * max(abs(a), abs(b)) or max(abs(a), abs(b)) < 1e-15


def random_configurations() -> list[dict]:
    """Student/teacher pairs: the figure's kind (6 points in 2-D) and others, edge cases included."""
    rng = np.random.default_rng(2019)
    cases = []
    for n in (6, 6, 6, 3, 9):
        cases.append({"name": f"random 2-D, N={n}",
                      "student": rng.uniform(-2, 2, (n, 2)).tolist(), "teacher": rng.uniform(-2, 2, (n, 2)).tolist()})
    cases.append({"name": "5-D teacher, 2-D student", "student": rng.normal(size=(7, 2)).tolist(),
                  "teacher": (3 * rng.normal(size=(7, 5))).tolist()})
    far = rng.uniform(-2, 2, (6, 2))
    far[0] *= 40                                          # one outlier: Huber's linear part
    cases.append({"name": "an outlier", "student": far.tolist(), "teacher": rng.uniform(-2, 2, (6, 2)).tolist()})
    twins = rng.uniform(-2, 2, (6, 2))
    twins[3] = twins[1]                                   # coincident points: distance 0, zero direction
    cases.append({"name": "two coincident points", "student": twins.tolist(),
                  "teacher": rng.uniform(-2, 2, (6, 2)).tolist()})
    return cases


def run_node(cases: list[dict]) -> list[dict]:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed (the browser test in tests/test_site.py checks the same)")
    program = (
        "const core = require(process.argv[1]);"
        "let input = ''; process.stdin.on('data', d => input += d);"
        "process.stdin.on('end', () => {"
        "  const cases = JSON.parse(input);"
        "  const out = cases.map(c => { const r = core.compute(c.student, c.teacher);"
        "    return {rkdD: r.rkdD, rkdA: r.rkdA, psiD: r.psiD.student}; });"
        "  process.stdout.write(JSON.stringify({initial: {student: core.STUDENT, teacher: core.TEACHER}, out}));"
        "});"
    )
    result = subprocess.run([node, "-e", program, str(SCRIPT)], input=json.dumps(cases),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout)


def test_figure_matches_package_on_its_initial_configuration():
    initial = run_node([])["initial"]
    result = run_node([initial])["out"][0]
    d, a = package_losses(initial["student"], initial["teacher"])
    assert d > 1e-3 and a > 1e-3, "the figure should start away from a perfect match"
    assert close(result["rkdD"], d), f"RKD-D: figure {result['rkdD']!r}, package {d!r}"
    assert close(result["rkdA"], a), f"RKD-A: figure {result['rkdA']!r}, package {a!r}"


def test_figure_matches_package_on_random_configurations():
    cases = random_configurations()
    results = run_node(cases)["out"]
    wrong = []
    for case, result in zip(cases, results):
        d, a = package_losses(case["student"], case["teacher"])
        if not close(result["rkdD"], d):
            wrong.append(f"{case['name']}: RKD-D figure {result['rkdD']!r}, package {d!r}")
        if not close(result["rkdA"], a):
            wrong.append(f"{case['name']}: RKD-A figure {result['rkdA']!r}, package {a!r}")
    assert not wrong, "\n".join(wrong)


def test_figure_distance_potentials_match_package():
    from rkd_tutorial.losses import distance_potential

    cases = random_configurations()
    for case, result in zip(cases, run_node(cases)["out"]):
        expected = distance_potential(torch.tensor(case["student"], dtype=torch.float64)).numpy()
        np.testing.assert_allclose(np.array(result["psiD"]), expected, rtol=RTOL, atol=1e-15, err_msg=case["name"])


def test_similar_copy_has_zero_loss_in_both():
    """A rotated, scaled, shifted copy of the teacher: 0 in the figure and in the package."""
    initial = run_node([])["initial"]
    teacher = np.array(initial["teacher"])
    c, s = np.cos(0.7), np.sin(0.7)
    copy = (0.6 * teacher @ np.array([[c, s], [-s, c]]) + [0.3, -0.2]).tolist()
    result = run_node([{"student": copy, "teacher": initial["teacher"]}])["out"][0]
    assert max(result["rkdD"], result["rkdA"], *package_losses(copy, initial["teacher"])) < 1e-15


def test_chapter_2_has_the_figure_after_the_losses():
    cells = json.loads(CHAPTER.read_text())["cells"]
    sources = ["".join(c["source"]) for c in cells]
    figure = [i for i, s in enumerate(sources) if 'class="rkd-explorable"' in s]
    assert len(figure) == 1, "chapter 2 needs exactly one cell with the explorable figure"
    i = figure[0]
    assert cells[i]["cell_type"] == "markdown"
    angle_section = next(k for k, s in enumerate(sources) if "## 2.3 The angle-wise loss" in s)
    invariances = next(k for k, s in enumerate(sources) if "## 2.4 " in s)
    assert angle_section < i < invariances, "the figure belongs after both losses are defined, before section 2.4"
    assert "rkd-offline-note" in sources[i] and "Colab" in sources[i] and "online book" in sources[i], \
        "the cell must tell Colab/Jupyter readers that the figure is only in the online book"


def test_config_loads_the_figure():
    config = yaml.safe_load((ROOT / "_config.yml").read_text())["sphinx"]["config"]
    assert "rkd_explorable.js" in config.get("html_js_files", [])
    assert "rkd_explorable.css" in config.get("html_css_files", [])
    static = [ROOT / p for p in config["html_static_path"]]
    assert any((p / "rkd_explorable.js").exists() and (p / "rkd_explorable.css").exists() for p in static)
