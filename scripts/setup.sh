#!/usr/bin/env bash
# Set up nucleiseg in ./.venv (created if absent): PyTorch first, then the project itself.
#   bash scripts/setup.sh          # the package
#   bash scripts/setup.sh test     # the package with every extra (test, cluster, onnx, bioimageio,
#                                  # napari), as CI tests it
# PyTorch: with an NVIDIA GPU (nvidia-smi lists one) the CUDA build from PyPI; otherwise the
# CPU build (torch==2.13.0+cpu from a configured index or wheel folder, else PyTorch's CPU index),
# so a CPU-only machine never downloads the CUDA packages. An installed torch is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || "${PYTHON:-python3}" -m venv .venv
pip() { .venv/bin/python -m pip "$@"; }
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    pip install "torch==2.13.0"
  else
    pip install "torch==2.13.0+cpu" 2>/dev/null \
      || pip install "torch==2.13.0+cpu" --index-url https://download.pytorch.org/whl/cpu
  fi
fi
# The napari viewer tests need OpenGL on an X display: Xvfb (started by pytest-xvfb) and the xcb
# libraries Qt's platform plugin loads. System packages, so only for 'test', only as root with
# apt-get (Debian / Ubuntu names), and never fatal: without them those tests skip, saying why.
if [ "${1:-}" = test ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  x_packages="xvfb libxcb-icccm4 libxcb-keysyms1 libxcb-cursor0 libxcb-image0 libxcb-render-util0 libxcb-shape0 libxcb-xkb1 libxkbcommon-x11-0 libgl1 libegl1"
  apt-get install -y -q $x_packages >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q $x_packages >/dev/null 2>&1; } \
    || echo "setup.sh: could not install Xvfb and Qt's xcb libraries; the napari viewer tests will skip" >&2
fi
case "${1:-}" in
  "") pip install -e . ;;
  test) pip install -e ".[test,cluster,onnx,bioimageio,napari]" ;;
  *) pip install -e ".[$1]" ;;
esac
