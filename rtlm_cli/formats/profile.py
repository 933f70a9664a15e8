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
SAMPLE_KEY = "sample_id"  # a sampled profile's key (--samples > 1): PROMPT_ID#K, one row per answer

# Per-request columns besides the uncertainty features and telemetry (documented in docs/formats.md).
MEASURED_COLUMNS = (
    "prompt_id", "prompt_index", "prompt", "output_text", "prompt_tokens", "output_tokens",
    "max_new_tokens", "ended", "finish_reason", "ttft_s", "e2e_s", "tpot_s", "decode_tokens_per_s",
    "service_s", "batch_size", "batch_id", "started_at", "sample", "sample_seed",
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


def samples(meta: dict) -> int:
    """Answers per prompt (``rtlm profile --samples``; 1 for greedy and older profiles)."""
    return int(meta.get("decoding", {}).get("samples", 1))


def key_of(meta_or_samples) -> str:
    """The column that names a row: the prompt, or in a sampled profile the prompt's answer."""
    n = meta_or_samples if isinstance(meta_or_samples, int) else samples(meta_or_samples)
    return SAMPLE_KEY if n > 1 else KEY


def load_profile(path: str | Path, samples_ok: bool = False):
    """(meta, requests DataFrame) of a profile directory; older schema versions are read too. A
    sampled profile (several answers per prompt) is an error unless the caller reads one
    (``samples_ok``): jobs that take one answer per prompt would otherwise pick one silently."""
    meta = read_profile_meta(path)
    if samples(meta) > 1 and not samples_ok:
        raise RtlmError(f"profile {path} holds {samples(meta)} sampled answers per prompt (--samples): this command reads "
                        "one answer per prompt for now; give it a profile made without --samples")
    return meta, read_records(source_path(path) / REQUESTS_DIR, key=key_of(meta))


def load_nonempty(path: str | Path, hint: str = "", samples_ok: bool = False):
    """``load_profile`` for a job that needs rows: an empty profile is an error that says so."""
    meta, df = load_profile(path, samples_ok)
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
        "prompts": int(df["prompt_id"].nunique()),
        "ended_share": float(df["ended"].mean()),
        "output_tokens_mean": float(df["output_tokens"].mean()),
        "prompt_tokens_mean": float(df["prompt_tokens"].mean()),
        "ttft_s_median": float(df["ttft_s"].median()),
        "e2e_s_median": float(df["e2e_s"].median()),
        "tpot_s_median": float(df["tpot_s"].median()),
        "decode_tokens_per_s_median": float(df["decode_tokens_per_s"].median()),
    }
