#!/usr/bin/env bash
# The main job on the embedded defaults, at a small scale: set up .venv, then profile SmolLM2 on
# real ShareGPT prompts on this machine's device. Outputs go under profiles/demo-*.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
RTLM=.venv/bin/rtlm
$RTLM profile --num-prompts 8 --max-new-tokens 128 --out profiles/demo-smollm2
