"""Numbers for people: seconds to three significant figures, ratios, shares, bytes in GiB, and the
human names of the report's machine columns (JSON and CSV keep the machine names)."""

from __future__ import annotations

import math

NAMES = {
    "e2el_mean_s": "mean response time", "e2el_p50_s": "median response time", "e2el_p90_s": "p90 response time",
    "e2el_p95_s": "p95 response time", "e2el_p99_s": "p99 response time", "ttft_mean_s": "mean TTFT",
    "ttft_p50_s": "median TTFT", "ttft_p99_s": "p99 TTFT", "tpot_p50_s": "median time per output token",
    "queue_p95_s": "p95 queueing delay", "throughput_rps": "requests/s", "throughput_tps": "tokens/s",
    "deadline_miss_rate": "deadline misses", "goodput_rps": "goodput (req/s in deadline)",
    "request_goodput_rps": "goodput (req/s within SLOs)", "prediction_cost_us": "prediction cost",
    "offered_load": "load", "completed": "finished", "failed": "failed", "policy": "policy", "run": "run",
    "e2el_mean_vs_baseline": "mean", "e2el_p50_vs_baseline": "median", "e2el_p99_vs_baseline": "p99",
    "ttft_mean_vs_baseline": "TTFT mean", "ttft_p99_vs_baseline": "TTFT p99", "goodput_vs_baseline": "goodput",
    "oracle_gain_share": "of the oracle's gain", "oracle_vs_baseline": "oracle's mean",
}


def _bad(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def seconds(v) -> str:
    if _bad(v):
        return "-"
    if v >= 100:
        return f"{v:,.0f} s"
    if v >= 1:
        return f"{v:.3g} s"
    return f"{v * 1e3:.3g} ms"


def ratio(v) -> str:
    return "-" if _bad(v) else f"{v:.2f}x"


def share(v) -> str:
    return "-" if _bad(v) else f"{v:.0%}"


def gib(v) -> str:
    return "-" if _bad(v) else f"{v / 2**30:.2f} GiB"


def number(v, digits: int = 3) -> str:
    if _bad(v):
        return "-"
    if isinstance(v, int):
        return f"{v:,}"
    return f"{v:.{digits}g}"


def human(column: str, v) -> str:
    """A machine column's value as people read it."""
    if column.endswith("_vs_baseline"):
        return ratio(v)
    if column in ("oracle_gain_share", "deadline_miss_rate", "slo_attainment", "capped_share"):
        return share(v)
    if column.endswith("_bytes"):
        return gib(v)
    if column.endswith("_us"):
        return "-" if _bad(v) else f"{v:.0f} µs"
    if column.endswith("_s"):
        return seconds(v)
    return number(v) if isinstance(v, (int, float)) else ("-" if v is None else str(v))
