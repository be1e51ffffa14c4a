"""Running chapters as a reader would, for the tests of the paths readers take besides the stored one.

(nbval re-runs the stored one.)

* **The full profile** (a GPU reader's opt-in), at smoke scale: every chapter
  runs with ``RKD_PROFILE=full RKD_SMOKE=1``, so the full profile's networks,
  sizes and code paths are exercised on a CPU in seconds.
* **Another CPU**: the checked outputs (``# NBVAL_CHECK_OUTPUT``) hold under a
  second set of torch's CPU kernels (``ATEN_CPU_CAPABILITY=default``).
* **Installed, not checked out** (Colab, ``pip install``): chapters 3, 4 and 7
  run from an empty folder against the package built as a wheel and installed
  into a folder of its own, with the checkout off ``sys.path``, and show real
  results.

Each chapter runs in a fresh kernel in a subprocess (``nbclient``), as a
reader's would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "book").glob("[0-9][0-9]_*.ipynb"))
TIMEOUT_S = 1200

#: Words that only a placeholder or a missing file would print.
PLACEHOLDERS = ("have not been produced", "not found", "No such file", "placeholder", "missing results")

RUNNER = r"""
import sys, nbformat, nbclient
path, out = sys.argv[1], sys.argv[2]
nb = nbformat.read(path, as_version=4)
client = nbclient.NotebookClient(nb, timeout=int(sys.argv[3]), kernel_name="python3", allow_errors=False)
try:
    client.execute()
finally:
    nbformat.write(nb, out)
"""


def run_chapter(chapter: Path, workdir: Path, env: dict, prepend: str = "") -> dict:
    """Execute a copy of ``chapter`` in ``workdir`` with ``env``; return the executed notebook as a dict.

    ``prepend``: source of a code cell run first (e.g. checks on where the package comes from).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    nb = json.loads(chapter.read_text())
    if prepend:
        nb["cells"].insert(0, {"cell_type": "code", "metadata": {}, "source": prepend, "outputs": [],
                               "execution_count": None})
    src, out = workdir / chapter.name, workdir / f"executed-{chapter.name}"
    src.write_text(json.dumps(nb))
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "RKD_"))}
    full_env.update({"TQDM_DISABLE": "1", "MPLBACKEND": "Agg", "PYTHONHASHSEED": "0"}, **env)
    result = subprocess.run([sys.executable, "-c", RUNNER, str(src), str(out), str(TIMEOUT_S)], cwd=workdir,
                            env=full_env, capture_output=True, text=True, timeout=TIMEOUT_S + 120)
    if result.returncode != 0:
        pytest.fail(f"{chapter.name} failed in {workdir} with {env}:\n{result.stderr[-6000:]}")
    return json.loads(out.read_text())


def outputs_text(nb: dict) -> str:
    parts = []
    for cell in nb["cells"]:
        for o in cell.get("outputs", []):
            if "text" in o:
                parts.append("".join(o["text"]))
            for kind in ("text/markdown", "text/plain", "text/html"):
                if kind in o.get("data", {}):
                    parts.append("".join(o["data"][kind]))
    return "\n".join(parts)


