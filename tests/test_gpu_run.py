"""The GPU script's plumbing, walked on the CPU: `scripts/gpu_run.sh` at smoke scale.

A lent GPU comes with a few minutes of device time, so the script must not fail on a
glob or a file name there. This runs its `full` step (concurrent runs, then `merge`)
with one seed at smoke scale and checks the merged files it leaves behind.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash")
def test_gpu_run_full_step_merges_its_parts(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "OUT": str(out), "PARTS": str(tmp_path / "parts"), "PY": sys.executable,
           "RKD_SMOKE": "1", "STEPS": "full", "SEEDS": "0", "RKD_DATA": str(tmp_path / "data"),
           "T_FULL": "300"}
    done = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_run.sh")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-3000:]
    assert "no metric results" not in log and "no classify results" not in log, log[-3000:]
    assert "failed" not in log and "a run exited" not in log, log[-3000:]
    for experiment in ("metric", "classify"):
        merged = json.loads((out / f"{experiment}-full-smoke.json").read_text())
        assert merged["provenance"]["profile_settings"]["name"] == "full"
        assert {row["seed"] for row in merged["rows"]} == {0}
        assert {"teacher", "rkd-da"} <= {row["method"] for row in merged["rows"]}
        assert (out / f"{experiment}-full-smoke.md").exists()
    assert (out / "gpu-log.txt").exists()
