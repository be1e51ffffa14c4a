"""The checked outputs hold under a second set of torch's CPU kernels.

A course hands the tests to machines with other vector units: the outputs
that nbval compares must not depend on which kernels run
(``ATEN_CPU_CAPABILITY=default`` is torch's portable set).
"""

import os
import subprocess
import sys

from chapter_runs import CHAPTERS, ROOT


def test_checked_outputs_hold_under_another_cpu_capability():
    """nbval's checked cells, re-run with torch's portable CPU kernels instead of this CPU's best."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env.update(ATEN_CPU_CAPABILITY="default", TQDM_DISABLE="1", MPLBACKEND="Agg", PYTHONHASHSEED="0")
    result = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-o", "addopts=",
                             "--nbval-lax", "--nbval-current-env", "--nbval-sanitize-with",
                             "tests/nbval_sanitize.cfg", *[str(c.relative_to(ROOT)) for c in CHAPTERS]],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=3600)
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-2000:]
