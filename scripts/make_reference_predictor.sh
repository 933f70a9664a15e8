#!/usr/bin/env bash
# Make the shipped predictors (rtlm_cli/reference/predictors/): the fast feature families (text,
# prompt: no model needed at prediction time) with their out-of-fold predictions, seed 0:
#   reference     (smollm2-fast-256) trained on the reference profile (1,000 ShareGPT prompts, cap 256):
#                 `rtlm gateway`'s default
#   reference-64  (smollm2-fast-64) trained on the reference-64 profile (300 of them, cap 64): for
#                 replays of reference-64 (a predictor serves profiles of its own cap)
#   reference-sampled (smollm2-sampled-256) trained on every answer of the reference-sampled profile
#                 (200 prompts x 8 answers at temperature 0.7, cap 256), with the length distribution's
#                 quantiles: what the tail and rtlm-dist policies read (one LightGBM thread: the models
#                 bench/sampled.py measured)
#   reference-sampled-512 (smollm2-sampled-512) the same on reference-sampled-512 (the same prompts and
#                 seeds at cap 512)
# Deterministic; a few seconds each on 2 cores. Usage: bash scripts/make_reference_predictor.sh
set -euo pipefail
cd "$(dirname "$0")/.."
for pair in reference:smollm2-fast-256 reference-64:smollm2-fast-64; do
  .venv/bin/rtlm train-predictor "${pair%%:*}" --features text,prompt --seed 0 --no-ablation \
    --out "rtlm_cli/reference/predictors/${pair#*:}" --overwrite >/dev/null
done
for pair in reference-sampled:smollm2-sampled-256 reference-sampled-512:smollm2-sampled-512; do
  .venv/bin/rtlm train-predictor "${pair%%:*}" --features text,prompt --seed 0 --no-ablation --threads 1 \
    --out "rtlm_cli/reference/predictors/${pair#*:}" --overwrite >/dev/null
done
echo "made rtlm_cli/reference/predictors/{smollm2-fast-256,smollm2-fast-64,smollm2-sampled-256,smollm2-sampled-512}"
