"""One self-contained HTML page: the report's tables and its figures embedded as base64 PNG."""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path

CSS = """body{font-family:system-ui,sans-serif;margin:2rem;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:0.5rem 0 1.5rem;font-size:0.85rem}
th,td{border:1px solid #ccc;padding:0.25rem 0.5rem;text-align:right}th{background:#f3f3f3}
td:first-child,th:first-child{text-align:left}img{max-width:100%;border:1px solid #eee;margin:0.5rem 0}
h2{border-bottom:1px solid #ddd;padding-bottom:0.2rem}.scroll{overflow-x:auto}"""


def _cell(v) -> str:
    if isinstance(v, float):
        return "-" if math.isnan(v) else f"{v:.4g}"
    return html.escape("-" if v is None else str(v))


def table(rows: list[dict], columns: list[str] | None = None) -> str:
    if not rows:
        return "<p>none</p>"
    cols = columns or list(rows[0])
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{_cell(r.get(c))}</td>" for c in cols) + "</tr>" for r in rows)
    return f"<div class='scroll'><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>"


def image(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'


RUN_COLUMNS = ["run", "policy", "mode", "engine", "offered_load", "max_batch", "completed", "failed", "e2el_mean_s", "e2el_p50_s",
               "e2el_p90_s", "e2el_p95_s", "e2el_p99_s", "ttft_p50_s", "ttft_p95_s", "tpot_p50_s", "queue_p50_s",
               "queue_p95_s", "throughput_rps", "throughput_tps", "deadline_miss_rate", "goodput_rps", "prediction_cost_us"]


def render(data: dict, figures: list[Path], title: str = "rtlm report") -> str:
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>"]
    if data["runs"]:
        parts += ["<h2>Runs</h2>", table(data["runs"], RUN_COLUMNS),
                  "<h3>Response time by predicted length</h3>", table(data["run_buckets"])]
    if data["profiles"]:
        parts += ["<h2>Profiles</h2>", table(data["profiles"])]
        for name, rows in data["profile_quartiles"].items():
            parts += [f"<h3>{html.escape(name)}: by uncertainty quartile</h3>", table(rows)]
    if data["predictors"]:
        parts += ["<h2>Predictors</h2>", table(data["predictors"])]
        for name, rows in data["importance"].items():
            parts += [f"<h3>{html.escape(name)}: feature importance (gain)</h3>", table(rows)]
    if figures:
        parts.append("<h2>Figures</h2>")
        parts += [image(p) for p in figures]
    parts.append("</body></html>")
    return "\n".join(parts)
