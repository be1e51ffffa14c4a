#!/usr/bin/env bash
# Set everything up, then build the book (the chapters' stored outputs, from the
# quick profile on a CPU) into _build/html and say where to open it.
# The experiments themselves: .venv/bin/python -m rkd_tutorial metric --profile quick
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build_book.sh     # set-up, then the book's build (the one CI publishes)
echo
echo "The book is built: open $(pwd)/_build/html/index.html in a browser"
echo "(or serve it: .venv/bin/python -m http.server -d _build/html 8000, then http://localhost:8000)."
