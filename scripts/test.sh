#!/usr/bin/env bash
# Set up .venv with the vllm engine and Ray Serve (see setup.sh), install Chromium (Debian's package, for the
# report's browser test) when it is missing, and run the whole test suite: the embedded-model
# tests, the real vLLM tests and the Ray Serve tests included (about 10 minutes on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --vllm --ray
if ! command -v chromium >/dev/null 2>&1; then
  echo "rtlm test setup: installing chromium (apt) for the report's browser test" >&2
  as_root=""; [ "$(id -u)" = 0 ] || as_root="sudo"
  $as_root apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $as_root apt-get install -y -qq chromium >/dev/null
fi
exec .venv/bin/python -m pytest -q "$@"
