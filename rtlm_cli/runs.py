"""The run format (one row per request + meta.json) and its metrics, named as in vLLM's and
GuideLLM's benchmarks: e2el (end-to-end latency = response time), ttft, tpot, queueing delay.
Percentiles with numpy. No torch here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rtlm_cli.errors import RtlmError
from rtlm_cli.store import atomic_write_json, atomic_write_parquet, read_meta

SCHEMA_VERSION = 1
REQUESTS_FILE = "requests.parquet"
PERCENTILES = (50, 90, 95, 99)


def with_latencies(df):
    """Per-request e2el_s, ttft_s, tpot_s, queue_s and deadline_missed from the run's timestamps."""
    df = df.copy()
    df["e2el_s"] = df["finish_s"] - df["arrival_s"]
    df["ttft_s"] = df["first_token_s"] - df["arrival_s"]
    df["queue_s"] = df["start_s"] - df["arrival_s"]
    steps = (df["output_tokens"] - 1).clip(lower=1)
    df["tpot_s"] = (df["last_token_s"] - df["first_token_s"]) / steps
    df["deadline_missed"] = df["finish_s"] > df["deadline_s"]  # NaN deadline compares False
    return df


def _dist(values) -> dict[str, float]:
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if not len(v):
        return {"mean": float("nan"), **{f"p{p}": float("nan") for p in PERCENTILES}}
    return {"mean": float(v.mean()), **{f"p{p}": float(x) for p, x in zip(PERCENTILES, np.percentile(v, PERCENTILES))}}


def summarize(df) -> dict:
    if df.empty:
        raise RtlmError("the run holds no requests")
    done = with_latencies(df[df["status"] == "finished"])
    makespan = float(done["finish_s"].max() - df["arrival_s"].min()) if len(done) else float("nan")
    has_slo = bool(np.isfinite(df["deadline_s"]).any())
    out = {
        "requests": int(len(df)), "completed": int(len(done)), "failed": int((df["status"] == "failed").sum()),
        "cancelled": int((df["status"] == "cancelled").sum()),
        "e2el_s": _dist(done["e2el_s"]), "ttft_s": _dist(done["ttft_s"]), "tpot_s": _dist(done["tpot_s"]),
        "queue_s": _dist(done["queue_s"]),
        "makespan_s": makespan,
        "throughput_rps": len(done) / makespan if makespan > 0 else float("nan"),
        "throughput_tps": float(done["output_tokens"].sum()) / makespan if makespan > 0 else float("nan"),
        "mean_batch_size": float(done["batch_size"].mean()) if len(done) else float("nan"),
        "prediction_cost_s_mean": float(df["prediction_cost_s"].mean()),
    }
    if has_slo:
        missed = int(done["deadline_missed"].sum()) + out["failed"] + out["cancelled"]
        out["deadline_miss_rate"] = missed / len(df)
        out["goodput_rps"] = (len(done) - int(done["deadline_missed"].sum())) / makespan if makespan > 0 else float("nan")
    return out


def write_run(out: Path, records: list[dict], meta: dict) -> dict:
    import pandas as pd

    df = pd.DataFrame(records)
    meta = {"kind": "rtlm.run", "schema_version": SCHEMA_VERSION, **meta, "summary": summarize(df)}
    atomic_write_parquet(df, out / REQUESTS_FILE)
    atomic_write_json(out / "meta.json", meta)  # written last: its presence marks a complete run
    return meta


def load_run(path: str | Path):
    path = Path(path)
    meta = read_meta(path, "run")
    if meta.get("schema_version", 1) != SCHEMA_VERSION:
        raise RtlmError(f"run {path} has schema version {meta.get('schema_version')}, this rtlm reads {SCHEMA_VERSION}")
    import pandas as pd

    return meta, pd.read_parquet(path / REQUESTS_FILE)
