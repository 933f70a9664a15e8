#!/usr/bin/env bash
# The whole pipeline on the embedded defaults at a small scale (a few minutes on a 2-core CPU):
# set up .venv; profile SmolLM2 on real ShareGPT prompts on this device (with its timing table);
# train a predictor on the shipped 1,000-prompt reference profile; replay workloads in the
# simulator (a load sweep over three policies) and for real on the local model; write a report.
# Outputs go under demo/ (ignored by git).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
RTLM=.venv/bin/rtlm
REF=reference
OUT=demo
mkdir -p $OUT

echo "== 1/5 profile 12 ShareGPT prompts on this device (64-token answers) + timing table (a rerun resumes $OUT/profile and recalibrates; delete it to profile afresh)"
$RTLM profile -n 12 --max-new-tokens 64 --batch-size 4 --calibrate --calibration-batches 1,2,4 \
  --calibration-contexts 128,512 --out $OUT/profile

echo "== 2/5 train a predictor on the shipped reference profile ($REF)"
$RTLM train-predictor $REF --out $OUT/predictor --overwrite

echo "== 3/5 simulate a load sweep: fcfs, rtlm, oracle at loads 0.5 / 0.8 / 0.95, 3,000 requests each"
$RTLM serve-local --simulate --profile $REF --predictor $OUT/predictor --policy fcfs,rtlm,oracle \
  --loads 0.5,0.8,0.95 -n 3000 --out $OUT/sweep --overwrite

echo "== 4/5 replay 8 requests for real on SmolLM2 (shortest prompt first, batches of up to 4)"
$RTLM serve-local --profile $OUT/profile --policy sjf-input --load 0.8 -n 8 --max-batch 4 --out $OUT/real --overwrite

echo "== 5/5 report"
$RTLM report $OUT/sweep $OUT/real $REF $OUT/predictor --plots $OUT/figures --html $OUT/report.html --csv $OUT/tables
echo "open $OUT/report.html"
