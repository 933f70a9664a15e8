"""The run format: a directory with ``requests.parquet`` (one row per request, the same columns for
simulated and real runs) and ``meta.json`` (written last: its presence marks a finished run), and
its metrics, named as in vLLM's and GuideLLM's benchmarks: e2el (end-to-end latency = response
time), ttft, tpot, queueing delay. Percentiles with numpy. No torch here. Columns: docs/formats.md.

Schema 3 says how a run ran in four words (``serve/mode.py``): ``mode`` (simulated | real),
``batching`` (static | continuous), ``dispatch`` (batches | direct | gateway) and ``executes``
(hf-workers | serving-engine), plus ``priority_order`` and ``engine`` (what generated the tokens:
hf, fake, vllm, openai; none when simulated); its rows carry ``in_flight`` (what the backend held
when the request was sent) apart from ``batch_size`` (its static batch, 0 on a serving engine).
Schema 4 lets a run grow: a long-running service (``rtlm gateway``) writes its rows in parts under
``requests/`` (``part-*.parquet``, plus the journal of the part being written) and rewrites
``meta.json`` at each flush (``complete`` false until a clean exit); a replay still writes one
``requests.parquet``. Readers take either.
Schema 5 names the column of where a request ran ``backend`` (a URL, a worker's device, a simulated
engine's name: docs/glossary.md), not ``worker``.
Older runs are read and upgraded in memory: schema 4 and older call that column ``worker``; schema 2 had no dispatch for static runs and used
``batch_size`` for "in flight at the send" on serving engines; schema 1 used ``engine`` for
simulator | real.
"""

from __future__ import annotations

import math
import shutil
import time
from array import array
from pathlib import Path

import numpy as np

from rtlm_cli.errors import RtlmError
from rtlm_cli.formats.predictor import quantile_name
from rtlm_cli.formats.store import (
    RecordShards,
    artifact_dir,
    atomic_write_json,
    atomic_write_parquet,
    read_meta,
    read_records,
)

KIND = "run"
SCHEMA_VERSION = 5
REQUESTS_FILE = "requests.parquet"
PARTS_DIR = "requests"  # a growing run's parts (schema 4)
PERCENTILES = (50, 90, 95, 99)
MODES = ("simulated", "real")
STATUSES = ("finished", "failed", "cancelled", "shed")


def record(r, *, start_s: float, first_token_s: float, last_token_s: float, finish_s: float, backend: str,
           output_tokens: int, in_flight: int, batch_id: int = -1, batch_size: int = 0, status: str = "finished",
           ended: bool | None = None, error: str = "") -> dict:
    """One row of a run for a request ``r`` (a ``Request``): what it was, what happened to it.
    ``in_flight``: the requests its backend held when it was sent, itself included (a static
    worker: its batch); ``batch_id``/``batch_size``: its static batch (-1/0 on a serving engine)."""
    return {
        "rid": r.rid, "prompt_id": r.prompt_id, "arrival_s": r.arrival_s, "start_s": start_s,
        "first_token_s": first_token_s, "last_token_s": last_token_s, "finish_s": finish_s, "backend": backend,
        "batch_id": batch_id, "batch_size": batch_size, "in_flight": in_flight, "prompt_tokens": r.prompt_tokens,
        "output_tokens": output_tokens, "true_tokens": r.true_tokens if r.true_tokens is not None else -1,
        "predicted_tokens": r.predicted_tokens, "p90_tokens": r.p90_tokens, "uncertainty": r.uncertainty,
        "predicted_service_s": r.predicted_service_s,
        "deadline_s": r.deadline_s if r.deadline_s is not None else float("nan"),
        "prediction_cost_s": r.prediction_cost_s, "status": status, "ended": ended, "error": error,
        **quantile_columns(r),
    }


def quantile_columns(r) -> dict:
    """A distribution predictor's quantiles of ``r``'s length (``q10_tokens``, ...; none without one)."""
    levels, q = getattr(r, "quantile_levels", None) or (), getattr(r, "quantiles", None) or ()
    return {f"{quantile_name(float(lv))}_tokens": float(x) for lv, x in zip(levels, q)}


def quantile_levels(df) -> list[tuple[float, str]]:
    """The (level, column) of a run's predicted quantiles, in level order (empty: no distribution predictor)."""
    cols = [c for c in df.columns if len(c) == 10 and c[0] == "q" and c[1:3].isdigit() and c.endswith("_tokens")]
    return sorted((int(c[1:3]) / 100, c) for c in cols)


def not_run(r, status: str, error: str = "", backend: str = "", in_flight: int = 0) -> dict:
    """The row of a request that never ran to its end: cancelled (Ctrl-C), shed (its deadline could no
    longer be met) or failed before it ran (no backend left, too large for the server)."""
    nan = float("nan")
    return record(r, start_s=nan, first_token_s=nan, last_token_s=nan, finish_s=nan, backend=backend,
                  output_tokens=0, in_flight=in_flight, status=status, error=error)


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


def summarize(df, goodput: dict | None = None) -> dict:
    """The run's metrics; ``goodput`` ({"ttft_s": 2.0, "tpot_s": 0.1, "e2el_s": ...}): fixed SLOs, a
    request counting as good when it finished within every one (as `vllm bench serve` counts it)."""
    if df.empty:
        raise RtlmError("the run holds no requests")
    done = with_latencies(df[df["status"] == "finished"])
    makespan = float(done["finish_s"].max() - df["arrival_s"].min()) if len(done) else float("nan")
    has_slo = bool(np.isfinite(df["deadline_s"]).any())
    out = {
        "requests": int(len(df)), "completed": int(len(done)), "failed": int((df["status"] == "failed").sum()),
        "cancelled": int((df["status"] == "cancelled").sum()), "shed": int((df["status"] == "shed").sum()),
        "e2el_s": _dist(done["e2el_s"]), "ttft_s": _dist(done["ttft_s"]), "tpot_s": _dist(done["tpot_s"]),
        "queue_s": _dist(done["queue_s"]),
        "makespan_s": makespan,
        "throughput_rps": len(done) / makespan if makespan > 0 else float("nan"),
        "throughput_tps": float(done["output_tokens"].sum()) / makespan if makespan > 0 else float("nan"),
        "mean_batch_size": float(done["batch_size"][done["batch_size"] > 0].mean()) if len(done) else float("nan"),
        "mean_in_flight": float(done["in_flight"].mean()) if len(done) else float("nan"),
        "prediction_cost_s_mean": float(df["prediction_cost_s"].mean()),
    }
    if goodput:
        good = np.ones(len(done), dtype=bool)
        for metric, limit in goodput.items():
            good &= (done[metric] <= limit).to_numpy()
        out["slo_goodput"] = dict(goodput)
        out["slo_attainment"] = float(good.sum()) / len(df)
        out["request_goodput_rps"] = float(good.sum()) / makespan if makespan > 0 else float("nan")
    if has_slo:
        missed = int(done["deadline_missed"].sum()) + out["failed"] + out["cancelled"] + out["shed"]
        out["deadline_miss_rate"] = missed / len(df)
        out["goodput_rps"] = (len(done) - int(done["deadline_missed"].sum())) / makespan if makespan > 0 else float("nan")
    return out


def write_run(out: Path, records: list[dict], meta: dict) -> dict:
    """Write a whole run at once (a simulation): ``RunWriter`` without the parts. A failed write
    leaves an old run at ``out`` intact."""
    return RunWriter(out, meta, live=False).close(records, {})


def upgrade(meta: dict, df):
    """A run's meta and rows in the current schema (see the module's docstring)."""
    version = meta.get("schema_version", 1)
    if version == 1:
        simulated = meta.get("engine") == "simulator"
        meta = {**meta, "mode": "simulated" if simulated else "real", "engine": None if simulated else "hf",
                "batching": "static"}
    if version <= 2:
        static = meta.get("batching", "static") == "static"
        settings = meta.get("engine_settings") or {}
        meta = {**meta, "schema_version": SCHEMA_VERSION, "upgraded_from": version,
                "dispatch": "batches" if static else meta.get("dispatch") or "direct",
                "executes": "hf-workers" if static else "serving-engine",
                "priority_order": settings.get("priority_order", "lower-first")}
        df = df.assign(in_flight=df["batch_size"], batch_size=df["batch_size"] if static else 0)
    if version <= 4:
        meta = {**meta, "schema_version": SCHEMA_VERSION, "upgraded_from": meta.get("upgraded_from", version)}
        df = df.rename(columns={"worker": "backend"})
    return meta, df


def load_run(path: str | Path):
    """(meta, rows) of a run directory, in the current schema."""
    path = Path(path)
    meta = read_meta(path, KIND)
    if meta.get("schema_version", 1) > SCHEMA_VERSION:
        raise RtlmError(f"run {path} has schema version {meta.get('schema_version')}, this rtlm reads up to "
                        f"{SCHEMA_VERSION}: upgrade rtlm")
    import pandas as pd

    if (path / REQUESTS_FILE).is_file():
        return upgrade(meta, pd.read_parquet(path / REQUESTS_FILE))
    return upgrade(meta, read_records(path / PARTS_DIR, key="rid"))


# what a growing run's summary is computed from (kept in memory, the figures as 8-byte floats: ~160
# bytes a request, most of it the request id; the parts are never read back)
SUMMARY_COLUMNS = ("rid", "status", "arrival_s", "start_s", "first_token_s", "last_token_s", "finish_s",
                   "deadline_s", "output_tokens", "batch_size", "in_flight", "prediction_cost_s")
# A growing run's summary is recomputed over every row at each flush while the run holds fewer than
# SUMMARY_EVERY_FLUSH rows; past that (a service's day of traffic), only once the time since the last
# one is SUMMARY_COST_SHARE's inverse times what that one cost, so that recomputing takes at most that
# share of the writer's thread. meta.json's summary then lags (its "requests" says over how many).
SUMMARY_EVERY_FLUSH = 10_000
SUMMARY_COST_SHARE = 0.02


class RunWriter:
    """The one writer of runs. ``add`` a row when a request ends; every ``flush_s`` seconds the rows
    added since are written as one part under ``requests/`` and ``meta.json`` is rewritten with the
    summary so far (``complete: false``), so a process killed with SIGKILL loses only the rows of its
    last interval and leaves a run ``rtlm report`` reads. ``close(rows, meta)`` writes the run whole
    (one ``requests.parquet`` from ``rows``, the authoritative list) and drops the parts.

    Where it grows: at ``out`` for a new run; beside it (``OUT.partial``) when ``out`` holds a run
    already (``--overwrite``), which is replaced only by ``close``: a killed new run never leaves the
    old one half-replaced. ``live=False`` (simulations, seconds long): nothing before ``close``."""

    def __init__(self, out: Path, meta: dict, live: bool = True, flush_s: float = 2.0):
        if meta.get("mode") not in MODES:
            raise ValueError(f"a run's mode is one of {MODES}, got {meta.get('mode')!r}")
        self.final, self.meta, self.live, self.flush_s = Path(out), meta, live, flush_s
        replacing = self.final.exists() and any(self.final.iterdir())
        self.out = self.final.with_name(self.final.name + ".partial") if replacing else self.final
        self.pending: list[dict] = []
        # every row flushed, as columns: the two texts as lists, the figures as arrays of doubles
        self.summary_rows: dict[str, list | array] = {c: [] if c in ("rid", "status") else array("d")
                                                      for c in SUMMARY_COLUMNS}
        self.summary, self.summarized_at, self.summary_cost_s = None, -math.inf, 0.0
        self.flushed_at = -math.inf  # the first row is written at once; nothing before it (a run that
        if live:                     # fails before any request ends leaves no directory behind)
            # what a killed earlier run left where this one grows
            shutil.rmtree(self.out / PARTS_DIR if self.out == self.final else self.out, ignore_errors=True)
            self.shards = RecordShards(self.out / PARTS_DIR, key="rid", flush_every=1 << 30)

    def add(self, row: dict) -> None:
        if not self.live:
            return
        self.pending.append(row)
        if time.monotonic() - self.flushed_at >= self.flush_s:
            self.flush()

    def flush(self, complete: bool = False) -> dict:
        """The rows since the last flush as a part, and meta.json with the summary so far."""
        import pandas as pd

        if self.pending:
            rows, self.pending = self.pending, []
            self.shards.append(rows)
            self.shards.flush()
            for c, values in self.summary_rows.items():
                if isinstance(values, list):
                    values.extend(r.get(c) for r in rows)
                else:
                    values.extend(math.nan if r.get(c) is None else float(r[c]) for r in rows)
        self.flushed_at = now = time.monotonic()
        if (complete or len(self.summary_rows["rid"]) < SUMMARY_EVERY_FLUSH
                or now - self.summarized_at >= self.summary_cost_s / SUMMARY_COST_SHARE):
            t0 = time.perf_counter()
            df = pd.DataFrame({c: v if isinstance(v, list) else np.array(v) for c, v in self.summary_rows.items()})
            df = df.drop_duplicates(subset="rid", keep="first")  # as read_records reads parts
            self.summary = summarize(df, self.meta.get("goodput_slo")) if not df.empty else None
            self.summarized_at, self.summary_cost_s = now, time.perf_counter() - t0
        meta = {"kind": f"rtlm.{KIND}", "schema_version": SCHEMA_VERSION, **self.meta, "complete": complete,
                "summary": self.summary}
        self.out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.out / "meta.json", meta)
        return meta

    def close(self, rows: list[dict] | None = None, meta: dict | None = None) -> dict:
        """The whole run at ``out`` (``rows``; None: every row added), with ``meta`` added to the
        meta it began with; ``complete`` is ``meta``'s, else true."""
        import pandas as pd

        if rows is None:
            self.flush()
            df = read_records(self.out / PARTS_DIR, key="rid")
            if df.empty:  # nothing ever came (a service stopped before its first request)
                return self.flush(complete=True)
        else:
            df = pd.DataFrame(rows)
        meta = {"kind": f"rtlm.{KIND}", "schema_version": SCHEMA_VERSION, "complete": True, **self.meta,
                **(meta or {})}
        meta["summary"] = summarize(df, meta.get("goodput_slo"))
        with artifact_dir(self.final) as tmp:
            atomic_write_parquet(df, tmp / REQUESTS_FILE)
            atomic_write_json(tmp / "meta.json", meta)  # written last
        if self.out != self.final:
            shutil.rmtree(self.out, ignore_errors=True)
        return meta
