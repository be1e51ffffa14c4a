#!/usr/bin/env bash
# Run every test: the package's unit tests, the chapters re-executed with nbval (and once
# more under a second CPU kernel set, under the full profile at smoke scale, and from an
# installed wheel), the book's build and the browser check of the built site.
# The tests run on both cores (pytest-xdist); a notebook's cells stay on one worker.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export TQDM_DISABLE=1 MPLBACKEND=Agg PYTHONHASHSEED=0
exec .venv/bin/python -m pytest -n "${RKD_TEST_WORKERS:-2}" --dist loadfile "$@"
