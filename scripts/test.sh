#!/usr/bin/env bash
# Run every test: the package's unit tests, the chapters re-executed with nbval,
# the book's build and the browser check of the built site.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export TQDM_DISABLE=1 MPLBACKEND=Agg PYTHONHASHSEED=0
exec .venv/bin/python -m pytest "$@"
