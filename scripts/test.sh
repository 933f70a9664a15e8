#!/usr/bin/env bash
# Set up .venv with the vllm engine (see setup.sh) and run the whole test suite: the embedded-model
# tests and the real vLLM tests included (about 10 minutes on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --vllm
exec .venv/bin/python -m pytest -q "$@"
