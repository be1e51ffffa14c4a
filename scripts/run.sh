#!/usr/bin/env bash
# Set everything up, then run the main job: the quick metric-learning
# experiment (a teacher and seven students on Fashion-MNIST), printing its table.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python -m rkd_tutorial metric --profile quick --out results/
