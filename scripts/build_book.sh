#!/usr/bin/env bash
# Build the book into _build/html from the chapters' stored outputs (they are not re-run):
# what `bash scripts/run.sh` builds, and what CI publishes to GitHub Pages
# (.github/workflows/ci.yml). -W --keep-going: any warning fails the build, after
# reporting all of them; tests/test_site.py builds with the same command.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/jupyter-book build . -W --keep-going
