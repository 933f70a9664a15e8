"""One self-contained HTML page: the headline comparison first, then figures, the details, and where
every run came from; figures embedded as base64 PNG, numbers in human units, no sideways scrolling
at 1280 px (wide tables scroll inside their own box)."""

from __future__ import annotations

import base64
import html
from pathlib import Path

from rtlm_cli.report.compare import across_line
from rtlm_cli.report.units import human

CSS = """body{font-family:system-ui,sans-serif;margin:1.5rem auto;max-width:1200px;padding:0 1rem;color:#222}
table{border-collapse:collapse;margin:0.5rem 0 1rem;font-size:0.85rem}
th,td{border:1px solid #ccc;padding:0.2rem 0.45rem;text-align:right}th{background:#f3f3f3}
td:first-child,th:first-child{text-align:left}img{max-width:100%;height:auto;border:1px solid #eee;margin:0.5rem 0}
h2{border-bottom:1px solid #ddd;padding-bottom:0.2rem;margin-top:2rem}.scroll{overflow-x:auto;max-width:100%}
.sentence{margin:0.2rem 0}.apart{color:#666;font-size:0.85rem}.group{font-size:0.95rem;color:#444}"""

HEADLINE_COLUMNS = ["policy", "e2el_mean_vs_baseline", "e2el_p50_vs_baseline", "e2el_p99_vs_baseline",
                    "ttft_mean_vs_baseline", "ttft_p99_vs_baseline", "goodput_vs_baseline", "oracle_gain_share"]
RUN_COLUMNS = ["run", "policy", "mode", "offered_load", "completed", "failed", "e2el_mean_s", "e2el_p50_s", "e2el_p99_s",
               "ttft_p50_s", "throughput_rps", "throughput_tps", "deadline_miss_rate"]
PROVENANCE = ["run", "profile", "predictor", "engine", "model", "seed", "rtlm_version", "git_revision"]
NAMES = {"policy": "policy", "e2el_mean_vs_baseline": "mean response", "e2el_p50_vs_baseline": "median",
         "e2el_p99_vs_baseline": "p99", "ttft_mean_vs_baseline": "TTFT mean", "ttft_p99_vs_baseline": "TTFT p99",
         "goodput_vs_baseline": "goodput", "oracle_gain_share": "of the oracle's gain", "run": "run", "mode": "mode",
         "offered_load": "load", "completed": "finished", "failed": "failed", "e2el_mean_s": "mean response",
         "e2el_p50_s": "median", "e2el_p99_s": "p99", "ttft_p50_s": "median TTFT", "throughput_rps": "requests/s",
         "throughput_tps": "tokens/s", "deadline_miss_rate": "deadline misses", "profile": "profile",
         "predictor": "predictor", "engine": "engine", "model": "model", "seed": "seed", "rtlm_version": "rtlm",
         "git_revision": "git revision", "predicted_tokens": "predicted tokens", "requests": "requests",
         "e2el_p95_s": "p95"}


def table(rows: list[dict], columns: list[str] | None = None) -> str:
    if not rows:
        return "<p>none</p>"
    cols = columns or list(rows[0])
    head = "".join(f"<th>{html.escape(NAMES.get(c, c.replace('_', ' ')))}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(human(c, r.get(c)))}</td>" for c in cols) + "</tr>"
                   for r in rows)
    return f"<div class='scroll'><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>"


def image(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(path.stem.replace("_", " "))}" src="data:image/png;base64,{data}">'


def headline(data: dict) -> list[str]:
    parts = ["<section id='headline'><h2>Did the policy help?</h2>"]
    if not data["headline"]:
        parts.append("<p>No two comparable runs (each policy is set against "
                     f"<b>{html.escape(data['baseline'])}</b> on the same workload).</p>")
    groups: dict[str, list[dict]] = {}
    for r in data["headline"]:
        groups.setdefault(r["group"], []).append(r)
    for group, rows in groups.items():
        parts.append(f"<p class='group'>Against <b>{html.escape(data['baseline'])}</b> on {html.escape(group)}:</p>")
        parts += [f"<p class='sentence'>{html.escape(r['sentence'])}</p>" for r in rows]
        parts.append(table(rows, HEADLINE_COLUMNS))
    for a in data.get("across_seeds", []):
        parts.append(f"<p class='sentence'>Over {a['draws']} seeds of {html.escape(a['workload'])}: "
                     f"{html.escape(across_line(a, data['baseline']))}</p>")
    if data["kept_apart"]:
        parts.append("<p class='apart'>Kept apart (never set in one ratio with the others): "
                     + "; ".join(html.escape(f"{a['run']}: {a['why']}") for a in data["kept_apart"]) + "</p>")
    parts.append("</section>")
    return parts


def render(data: dict, figures: list[Path], title: str = "rtlm report") -> str:
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><meta name='viewport' content='width=device-width'>"
             f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>"]
    if data["runs"]:
        parts += headline(data)
    if figures:
        parts.append("<h2>Figures</h2>")
        parts += [image(p) for p in figures]
    if data["runs"]:
        parts += ["<h2>Runs in detail</h2>", table(data["runs"], RUN_COLUMNS),
                  "<h3>Response time by predicted length (each run's quartiles)</h3>", table(data["run_buckets"])]
        if data.get("run_distributions"):
            parts += ["<h3>Predicted length distributions against the answers each run produced</h3>",
                      table(data["run_distributions"])]
    if data["profiles"]:
        parts += ["<h2>Profiles</h2>", table(data["profiles"])]
        for name, rows in data["profile_quartiles"].items():
            parts += [f"<h3>{html.escape(name)}: by uncertainty quartile</h3>", table(rows)]
    if data["predictors"]:
        parts += ["<h2>Predictors</h2>", table(data["predictors"], ["predictor", "model", "kind", "mae", "rmse",
                                                                    "spearman", "kendall_tau", "pairwise_accuracy"])]
        if data.get("predictor_distributions"):
            parts += ["<h3>Length distributions: pinball loss and interval coverage against the baselines</h3>",
                      table(data["predictor_distributions"])]
        for name, rows in data["importance"].items():
            parts += [f"<h3>{html.escape(name)}: feature importance (gain)</h3>", table(rows)]
    if data["runs"]:
        parts += ["<h2>Where every run came from</h2>", table(data["runs"], PROVENANCE)]
    parts.append("</body></html>")
    return "\n".join(parts)
