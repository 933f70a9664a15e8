# Is the real executor slower per decode step than the profiler's generate on this GPU, or is it host noise?
set -e
export PYTHONPATH=/tmp/site:$PWD COLUMNS=160 HF_HUB_OFFLINE=1 RTLM_HOME=/tmp/rh
A=/tmp/g/smollm2.gguf.part-00; [ -f $A ] || A=.gpu/smollm2.gguf.part-00
M=/tmp/g/SmolLM2-135M-Instruct.Q4_1.gguf; cat $A .gpu/smollm2.gguf.part-01 > $M
R="python3 -m rtlm_cli.cli"
$R profile --model $M --prompts .gpu/prompts.json --device cuda -n 16 -b 8 --max-new-tokens 128 --calibrate --calibration-batches 1,8 --calibration-contexts 128 --calibration-steps 32 --out /tmp/p --json > $OUT/profile.json
for i in 1 2 3; do
  $R serve-local --profile /tmp/p --model $M --worker cuda --policy fcfs --arrivals burst -n 16 --max-batch 8 --no-dashboard --out /tmp/r$i --json > $OUT/real$i.json 2> /tmp/err$i || { tail -3 /tmp/err$i; exit 1; }
done
python3 - <<'PY'
import pandas as pd
p = pd.read_parquet("/tmp/p/requests")
print("profile: per-token ms median", round(p["tpot_s"].median() * 1000, 1), "by batch:", (p.groupby("batch_id")["tpot_s"].median() * 1000).round(1).tolist() if "batch_id" in p else "")
for i in (1, 2, 3):
    d = pd.read_parquet(f"/tmp/r{i}/requests.parquet")
    g = d.groupby("batch_id").agg(s=("start_s", "min"), f=("finish_s", "max"), ft=("first_token_s", "min"), n=("output_tokens", "max"))
    print(f"real {i}: ms/step by batch", (((g.f - g.ft) / (g.n - 1)) * 1000).round(1).tolist(), "mean e2e", round((d.finish_s - d.arrival_s).mean(), 2))
PY
