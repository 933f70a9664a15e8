#!/usr/bin/env bash
# Make the shipped predictor `reference` (rtlm_cli/reference/predictors/smollm2-fast-256): the fast
# feature families (text, prompt: no model needed at prediction time) trained on the shipped
# reference profile (1,000 ShareGPT prompts, SmolLM2, cap 256), with its out-of-fold predictions, so
# that `rtlm gateway` and `serve-local --predictor reference` run on the embedded defaults.
# Deterministic (seed 0); about a minute on 2 cores. Usage: bash scripts/make_reference_predictor.sh
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/rtlm train-predictor reference --features text,prompt --seed 0 --no-ablation \
  --out rtlm_cli/reference/predictors/smollm2-fast-256 --overwrite "$@"
