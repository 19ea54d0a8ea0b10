#!/usr/bin/env bash
# Set up hf-plasticity in ./.venv on a fresh machine.
#   bash scripts/setup.sh          # the package with the extras 'data' (mnist5k) and 'reproduce' (hf-plasticity reproduce)
#   bash scripts/setup.sh test     # ... plus the test tools (the 'test' extra includes 'reproduce')
#   bash scripts/setup.sh dev      # ... plus ruff
# `pip install hf-plasticity` alone (no extras) runs the demo, measures with bounds and saves/loads adapters;
# scripts/plain_install_check.sh checks that.
# Without a GPU, the CPU build of torch (2.13.0) is installed first, so no dependency pulls a multi-GB
# CUDA build; set TORCH_INDEX_URL (e.g. the PyTorch CPU wheel index) where pip's default index would
# otherwise serve a CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-data}"
case "$extras" in data) extras="data,reproduce" ;; test|dev) ;; *) echo "usage: bash scripts/setup.sh [data|test|dev]" >&2; exit 2 ;; esac

python_bin="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$python_bin" -c 'import sys; assert sys.version_info >= (3, 10), "hf-plasticity needs Python >= 3.10"'
  "$python_bin" -m venv .venv
fi
pip() { .venv/bin/python -m pip --disable-pip-version-check "$@"; }

if ! .venv/bin/python -c 'import torch' 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    pip install "torch>=2.4"
  elif [ -n "${TORCH_INDEX_URL:-}" ]; then
    pip install "torch==2.13.0" --index-url "$TORCH_INDEX_URL"
  else
    pip install "torch==2.13.0"
  fi
fi
pip install -q -e ".[$extras]"

# Fashion-MNIST for examples/pretrain_vit.py comes from Debian; optional (a sample ships in the package).
if [ ! -d /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) >/dev/null 2>&1 \
    || echo "note: could not install Debian's dataset-fashion-mnist (only examples/pretrain_vit.py needs it)"
fi
echo "hf-plasticity is set up in .venv ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
