"""The device's timing table: prefill and per-step decode seconds by (batch, context).

Written by ``rtlm profile --calibrate`` as ``timing.parquet`` in a profile; a ``.jsonl`` or
``.parquet`` file with the columns batch, context, prefill_s, decode_step_s is read too (e.g. the
shipped H200 table, named ``h200``). No torch here.
"""

from __future__ import annotations

from pathlib import Path

from rtlm_cli.errors import RtlmError
from rtlm_cli.formats.profile import TIMING_FILE
from rtlm_cli.paths import source_path

COLUMNS = ("batch", "context", "prefill_s", "decode_step_s")


def load_timing_table(source: str | Path, missing_ok: bool = False):
    import pandas as pd

    path = source_path(source)
    if path.is_dir():
        path = path / TIMING_FILE
    if not path.is_file():
        if missing_ok:
            return None
        raise RtlmError(f"no timing table at {path}: run `rtlm profile --calibrate` or pass a timing .jsonl/.parquet file")
    try:
        df = pd.read_json(path, lines=True) if path.suffix == ".jsonl" else pd.read_parquet(path)
    except Exception as e:
        raise RtlmError(f"cannot read timing table {path}: {type(e).__name__}") from None
    missing = [c for c in COLUMNS if c not in df]
    if missing or df.empty:
        raise RtlmError(f"timing table {path} lacks {', '.join(missing) or 'rows'}: it needs columns {', '.join(COLUMNS)}")
    return df[list(COLUMNS)].sort_values(["batch", "context"]).reset_index(drop=True)


def timing_origin(source: str | Path) -> str:
    """What measured a timing table: ``hf`` (static batches in rtlm's process: every table made before
    engines existed, and the shipped H200 table) or the serving engine it was measured through."""
    import json

    path = source_path(source)
    meta = path / "meta.json" if path.is_dir() else path.with_name(path.stem + "-meta.json")
    if not meta.is_file():
        return "hf"
    data = json.loads(meta.read_text())
    return (data.get("calibration") or data).get("engine") or "hf"


def static_pricing(tables: list[str]) -> str | None:
    """A warning for a continuously batching run (a serving engine, or its simulation) priced by
    tables measured with static batches (the hf engine), which overweight a long prompt's prefill;
    None when every table was measured through an engine."""
    static = sorted({str(t) for t in tables if timing_origin(t) == "hf"})
    if not static:
        return None
    return (f"the timing table of {', '.join(static)} was measured with static batches (the hf engine) but this run "
            "batches continuously: its predicted service times, oracle-service's order and any deadline pricing follow "
            "the wrong costs; pass --timing vllm-cpu (the shipped vLLM-CPU table) or one made with `rtlm profile "
            "--engine vllm --calibrate -n 0`")
