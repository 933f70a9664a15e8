"""The profile format: a directory with ``meta.json``, ``requests/`` (Parquet shards, one row per
request), ``telemetry.parquet`` and, when calibrated, ``timing.parquet``. Columns: docs/formats.md.

Read with pandas or duckdb alone: ``pd.read_parquet(DIR / "requests")``. This module reads,
validates and summarizes a profile; the profiling job (``profile/job.py``) writes it request by
request through a journal (``formats.store.RecordShards``), so a killed run keeps what it finished.
"""

from __future__ import annotations

from pathlib import Path

from rtlm_cli.errors import RtlmError
from rtlm_cli.formats.store import read_meta, read_records
from rtlm_cli.paths import source_path

KIND = "profile"
SCHEMA_VERSION = 1
REQUESTS_DIR = "requests"
TIMING_FILE = "timing.parquet"
TELEMETRY_FILE = "telemetry.parquet"
KEY = "prompt_id"

# Per-request columns besides the uncertainty features and telemetry (documented in docs/formats.md).
MEASURED_COLUMNS = (
    "prompt_id", "prompt_index", "prompt", "output_text", "prompt_tokens", "output_tokens",
    "max_new_tokens", "ended", "finish_reason", "ttft_s", "e2e_s", "tpot_s", "decode_tokens_per_s",
    "service_s", "batch_size", "batch_id", "started_at",
)
# Device telemetry over each request's span (NaN where absent, e.g. GPU columns on a CPU).
TELEMETRY_COLUMNS = ("rss_bytes", "cpu_percent", "gpu_mem_bytes", "gpu_util_percent", "gpu_power_w")


def read_profile_meta(path: str | Path) -> dict:
    """A profile's meta.json (a shipped reference may be named, e.g. ``reference``)."""
    path = source_path(path)
    meta = read_meta(path, KIND)
    if meta.get("schema_version", 1) > SCHEMA_VERSION:
        raise RtlmError(f"{path} was written by a newer rtlm (profile schema {meta['schema_version']}): upgrade rtlm")
    return meta


def load_profile(path: str | Path):
    """(meta, requests DataFrame) of a profile directory; older schema versions are read too."""
    meta = read_profile_meta(path)
    return meta, read_records(source_path(path) / REQUESTS_DIR, key=KEY)


def load_nonempty(path: str | Path, hint: str = ""):
    """``load_profile`` for a job that needs rows: an empty profile is an error that says so."""
    meta, df = load_profile(path)
    if df.empty:
        raise RtlmError(f"profile {path} holds no requests{hint}")
    return meta, df


def cap(meta: dict) -> int:
    """The token cap its answers were generated under (answers that reach it are 'capped')."""
    return int(meta["decoding"]["max_new_tokens"])


def summarize(df) -> dict:
    if df.empty:
        return {"requests": 0}
    return {
        "requests": int(len(df)),
        "ended_share": float(df["ended"].mean()),
        "output_tokens_mean": float(df["output_tokens"].mean()),
        "prompt_tokens_mean": float(df["prompt_tokens"].mean()),
        "ttft_s_median": float(df["ttft_s"].median()),
        "e2e_s_median": float(df["e2e_s"].median()),
        "tpot_s_median": float(df["tpot_s"].median()),
        "decode_tokens_per_s_median": float(df["decode_tokens_per_s"].median()),
    }
