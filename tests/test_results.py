"""The results the book reads: shipped with the package, complete, and made by today's code.

* The package's ``rkd_tutorial/results/`` holds the same bytes as the
  repository's ``results/`` (``python -m rkd_tutorial ship`` copies them).
* Every quick-profile results file carries the fingerprint of the code that
  made it (:func:`rkd_tutorial.experiments.code_fingerprint`); a file made by
  other code fails here: re-run its command (``results/README.md``).
* Re-running one stored row with today's code reproduces it: exactly on the
  machine and torch version that made it, within 2 points of Recall@1 on
  another CPU kernel set or torch version (training paths drift apart in the
  last float digits and end a few images apart).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from rkd_tutorial import experiments as ex
from rkd_tutorial.experiments import studies
from rkd_tutorial.resultfiles import PACKAGE_RESULTS, check_pair
from rkd_tutorial.train import triplet

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results"
QUICK = ["metric-quick", "classify-quick", "darkknowledge-quick", "ablation-quick"]
TOLERANCE = 0.02


def _shippable(folder: Path):
    return sorted(p.name for p in folder.glob("*") if p.suffix in (".json", ".md") and p.name != "README.md")


def test_the_package_ships_the_same_bytes_as_results():
    assert _shippable(RESULTS) == _shippable(PACKAGE_RESULTS), "run: python -m rkd_tutorial ship results/*.json"
    for name in _shippable(RESULTS):
        assert (RESULTS / name).read_bytes() == (PACKAGE_RESULTS / name).read_bytes(), \
            f"{name} differs from its shipped copy; run: python -m rkd_tutorial ship results/{Path(name).stem}.json"


@pytest.mark.parametrize("stem", QUICK)
def test_quick_results_are_complete_paired_and_made_by_todays_code(stem):
    path = RESULTS / f"{stem}.json"
    assert path.exists(), f"{path} is missing: python -m rkd_tutorial {stem.split('-')[0]} --seeds 5 --out results"
    results = json.loads(path.read_text())
    prov = results["provenance"]
    assert prov["complete"] and not prov.get("smoke") and prov["profile"] == "quick"
    assert check_pair(path), f"{stem}.md was not made from {stem}.json"
    assert len(prov["seeds"]) >= 3
    assert prov["code"] == ex.code_fingerprint(), (
        f"{path.name} was made by other code (fingerprint {prov['code']}, today's {ex.code_fingerprint()}): "
        f"re-run its command in results/README.md")


def test_a_stored_row_is_reproduced_by_todays_code():
    results = json.loads((RESULTS / "ablation-quick.json").read_text())
    name = "no teacher (triplet, L2)"
    stored = next(r for r in results["rows"] if r["method"] == name and r["seed"] == 0)
    p = studies.ablation_profile("quick")
    train, _ = ex.metric_data(p, "cpu", 0)
    _, test = ex.metric_data(ex.metric_profile("quick"), "cpu", 0)
    torch.set_num_threads(1)
    student, _ = studies.train_ablation_student(p, train, None, 0, [triplet()], normalize=True, device_="cpu")
    recall = studies._recall1(student, test)
    same_machine = (results["provenance"]["torch"] == torch.__version__ and not os.environ.get("ATEN_CPU_CAPABILITY")
                    and results["provenance"]["device"].split(" (")[0] == ex.provenance("quick", 0)["device"].split(" (")[0])
    if same_machine:
        assert recall == stored["recall@1"], f"same machine and torch, Recall@1 {recall} != stored {stored['recall@1']}"
    assert abs(recall - stored["recall@1"]) <= TOLERANCE, (recall, stored["recall@1"])
