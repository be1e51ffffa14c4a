#!/usr/bin/env bash
# Set up everything on a fresh Debian/Ubuntu machine (or a laptop): a virtual
# environment in .venv with the requirements and this package, and the
# Fashion-MNIST files from Debian's package when the network can't fetch them.
# Safe to run again: it only does what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    echo "== creating .venv"
    "$PY" -m venv .venv
fi
stamp=.venv/.rkd-installed
if [ ! -f "$stamp" ] || [ requirements.txt -nt "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    echo "== installing requirements (torch is large: a few minutes the first time)"
    .venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
    .venv/bin/python -m pip install -q -r requirements.txt
    .venv/bin/python -m pip install -q --no-deps -e .
    touch "$stamp"
fi

# Fashion-MNIST: torchvision downloads it where the network is reachable; on an
# offline Debian/Ubuntu machine, Debian's package provides the same files.
if [ ! -d /usr/share/datasets/fashion-mnist ] && [ ! -d "${RKD_DATA:-$HOME/.cache/rkd_tutorial}/FashionMNIST/raw" ]; then
    if command -v apt-get >/dev/null 2>&1; then
        SUDO=""; [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && SUDO="sudo"
        echo "== installing Debian's dataset-fashion-mnist"
        $SUDO apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 \
            || { $SUDO apt-get update -q >/dev/null 2>&1 && $SUDO apt-get install -y -q dataset-fashion-mnist >/dev/null; } \
            || echo "   (could not install it; torchvision will try to download Fashion-MNIST instead)"
    fi
fi
echo "== ready: .venv/bin/python has torch $(.venv/bin/python -c 'import torch; print(torch.__version__)')"
