"""``rtlm report``: runs, profiles and predictors side by side, as data (dicts) for tables, JSON and CSV.

Figures live in ``figures.py``, the HTML page in ``html.py``, the job in ``job.py``. Percentiles come from
numpy (``formats.run.summarize``), rank statistics from scipy. No torch here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rtlm_cli.errors import RtlmError
from rtlm_cli.formats.predictor import IMPORTANCE_FILE, read_distribution, read_evaluation
from rtlm_cli.formats.profile import cap, load_profile, read_profile_meta
from rtlm_cli.formats.run import load_run, quantile_levels, summarize, with_latencies
from rtlm_cli.formats.store import read_meta
from rtlm_cli.paths import source_path
from rtlm_cli.prompts.uncertainty import FAMILY_SCORE_NAMES
from rtlm_cli.report.compare import across_seeds, headline

KINDS = ("run", "profile", "predictor")


@dataclass
class Artifacts:
    runs: list[tuple[Path, dict, object]] = field(default_factory=list)  # (path, meta, requests df)
    profiles: list[tuple[Path, dict, object]] = field(default_factory=list)
    predictors: list[tuple[Path, dict]] = field(default_factory=list)


def _kind(path: Path) -> str | None:
    meta = path / "meta.json"
    if not meta.is_file():
        return None
    try:
        kind = json.loads(meta.read_text()).get("kind", "")
    except (OSError, json.JSONDecodeError):
        raise RtlmError(f"{meta} is unreadable: the directory is damaged") from None
    return kind.removeprefix("rtlm.") if kind.removeprefix("rtlm.") in KINDS else None


def collect(paths: list[str]) -> Artifacts:
    """Load every path; a directory holding runs (a sweep) stands for all of them."""
    found = Artifacts()
    if not paths:
        raise RtlmError("nothing to report: pass run, profile or predictor directories")
    for raw in paths:
        path = source_path(raw)
        if not path.is_dir():
            raise RtlmError(f"{raw} is not a directory: pass run, profile or predictor directories")
        kind = _kind(path)
        targets = [(path, kind)] if kind else [(p, _kind(p)) for p in sorted(path.iterdir()) if p.is_dir() and _kind(p)]
        if not targets:
            raise RtlmError(f"{raw} is not an rtlm run, profile or predictor (no meta.json of a known kind)")
        for p, k in targets:
            if k == "run":
                meta, df = load_run(p)
                if df.empty:
                    raise RtlmError(f"run {p} holds no requests: nothing to report")
                found.runs.append((p, meta, df))
            elif k == "profile":
                meta, df = load_profile(p, samples_ok=True)
                if df.empty:
                    raise RtlmError(f"profile {p} holds no requests: nothing to report")
                found.profiles.append((p, meta, df))
            else:
                found.predictors.append((p, read_meta(p, "predictor")))
    return found


def run_rows(runs) -> list[dict]:
    rows = []
    for path, meta, df in runs:
        s = summarize(df, meta.get("goodput_slo"))
        w = meta.get("workload", {})
        load = w.get("offered_load")
        row = {"run": path.name, "path": str(path), "policy": meta.get("policy"), "mode": meta.get("mode"),
               "engine": meta.get("engine"), "batching": meta.get("batching", "static"),
               "dispatch": meta.get("dispatch"), "inflight": meta.get("inflight"), "offload": meta.get("offload"),
               "profile": meta.get("profile") or meta.get("prompts"), "cap": run_cap(meta),
               "arrivals": w.get("arrivals"), "num_requests": w.get("num_requests"), "seed": meta.get("seed"),
               "load": round(load, 3) if load else (w.get("rate_rps") and f"{w['rate_rps']:g} req/s"),
               "max_batch": meta.get("max_batch"), "offered_load": load, "rate_rps": w.get("rate_rps"),
               "device": ",".join(x["name"] for x in meta.get("workers", [])),
               "requests": s["requests"], "completed": s["completed"], "failed": s["failed"],
               "complete": bool(meta.get("complete", True)),
               "rtlm_version": meta.get("versions", {}).get("rtlm"), "git_revision": meta.get("git_revision"),
               "predictor": meta.get("predictor"), "model": (meta.get("model") or {}).get("model_id")}
        for metric in ("e2el_s", "ttft_s", "tpot_s", "queue_s"):
            for stat, v in s[metric].items():
                row[f"{metric.removesuffix('_s')}_{stat}_s"] = v
        row.update(throughput_rps=s["throughput_rps"], throughput_tps=s["throughput_tps"],
                   mean_batch_size=s["mean_batch_size"], mean_in_flight=s.get("mean_in_flight"),
                   prediction_cost_us=1e6 * s["prediction_cost_s_mean"],
                   deadline_miss_rate=s.get("deadline_miss_rate"), goodput_rps=s.get("goodput_rps"),
                   request_goodput_rps=s.get("request_goodput_rps"), slo_attainment=s.get("slo_attainment"))
        rows.append(row)
    return rows


def run_cap(meta: dict) -> int | None:
    """The token cap a run's answers were generated under: recorded, else its profile's."""
    if meta.get("cap"):
        return int(meta["cap"])
    try:
        return cap(read_profile_meta(meta["profile"])) if meta.get("profile") else None
    except (RtlmError, KeyError, OSError):
        return None


def bucket_rows(runs, buckets: int = 4) -> list[dict]:
    """Mean and p95 response time per predicted-length bucket, per run; the buckets are the run's own
    quantiles of predicted length (so each holds about as many requests), merged where they tie."""
    rows = []
    for path, _, df in runs:
        done = with_latencies(df[df["status"] == "finished"])
        pred = done["predicted_tokens"].to_numpy(float)
        if not len(pred):
            continue
        edges = np.unique(np.quantile(pred, np.linspace(0, 1, buckets + 1)))
        which = np.clip(np.searchsorted(edges, pred, side="left") - 1, 0, max(len(edges) - 2, 0))
        for i in range(max(len(edges) - 1, 1)):
            part = done["e2el_s"].to_numpy()[which == i]
            if len(part):
                lo, hi = edges[i], edges[min(i + 1, len(edges) - 1)]
                rows.append({"run": path.name, "predicted_tokens": f"{lo:.0f}-{hi:.0f}", "requests": int(len(part)),
                             "e2el_mean_s": float(part.mean()), "e2el_p95_s": float(np.percentile(part, 95))})
    return rows


def profile_rows(profiles) -> list[dict]:
    from scipy import stats

    rows = []
    for path, meta, df in profiles:
        row = {"profile": path.name, "model": meta["model"]["model_id"], "device": meta["device"]["device_name"],
               "requests": int(len(df)), "capped_share": float(1 - df["ended"].mean()),
               "output_tokens_mean": float(df["output_tokens"].mean()), "e2e_p50_s": float(df["e2e_s"].median()),
               "ttft_p50_s": float(df["ttft_s"].median()), "tpot_p50_s": float(df["tpot_s"].median()),
               "rss_peak_bytes": float(df["rss_bytes"].max()), "gpu_mem_peak_bytes": float(df["gpu_mem_bytes"].max())}
        for col in ("uncertainty_score",) + FAMILY_SCORE_NAMES:
            rho = stats.spearmanr(df[col], df["output_tokens"]).statistic if df[col].nunique() > 1 and len(df) > 2 else float("nan")
            row[f"spearman_tokens_vs_{col}"] = float(rho)
        rows.append(row)
    return rows


def uncertainty_quartiles(df) -> list[dict]:
    """Output length and latency by uncertainty-score quartile of a profile."""
    import pandas as pd

    q = pd.qcut(df["uncertainty_score"].rank(method="first"), 4, labels=["Q1 (least)", "Q2", "Q3", "Q4 (most)"])
    out = []
    for label, part in df.groupby(q, observed=True):
        out.append({"quartile": str(label), "requests": int(len(part)), "score_mean": float(part["uncertainty_score"].mean()),
                    "output_tokens_mean": float(part["output_tokens"].mean()), "capped_share": float(1 - part["ended"].mean()),
                    "e2e_mean_s": float(part["e2e_s"].mean())})
    return out


def predictor_rows(predictors) -> list[dict]:
    rows = []
    for path, meta in predictors:
        for r in read_evaluation(path):
            rows.append({"predictor": path.name, **r})
    return rows


def distribution_rows(predictors) -> list[dict]:
    """A distribution predictor's evaluation (``distribution.json``), one flat row per model and part."""
    from rtlm_cli.predict.distribution import flat

    return [{"predictor": path.name, "evaluated_on": part, **flat(r)}
            for path, _ in predictors for part, rows in (read_distribution(path) or {}).items() if part != "levels"
            for r in rows]


def run_distribution_rows(runs) -> list[dict]:
    """Runs made with a distribution predictor (``q10_tokens``, ... in their rows): how its predicted
    quantiles held on the answers the run produced (its finished requests), as ``distribution_rows``."""
    from rtlm_cli.predict.distribution import evaluate, flat

    rows = []
    for path, meta, df in runs:
        cols = quantile_levels(df)
        done = df[df["status"] == "finished"]
        if not cols or len(done) < 2:
            continue
        levels, names = [lv for lv, _ in cols], [c for _, c in cols]
        y, limit = done["output_tokens"].to_numpy(float), run_cap(meta)
        if "ended" in done and done["ended"].notna().all():
            ended = done["ended"].to_numpy(bool)
        else:  # a simulated answer's end is not recorded: it ended if it stopped short of the cap
            ended = y < limit if limit else np.ones(len(y), bool)
        r = evaluate(path.name, y, done[names].to_numpy(float),
                     levels, done["prompt_id"].to_numpy(), ended)
        rows.append({"run": path.name, "policy": meta.get("policy"), **flat(r)})
    return rows


def build(paths: list[str], baseline: str = "fcfs") -> tuple[Artifacts, dict]:
    """Everything a report shows, the headline comparison first (the order of the JSON too)."""
    found = collect(paths)
    runs = run_rows(found.runs)
    comparison, apart = headline(runs, baseline)
    data = {
        "headline": comparison,
        "kept_apart": apart,
        "across_seeds": across_seeds(comparison),
        "baseline": baseline,
        "runs": runs,
        "run_buckets": bucket_rows(found.runs),
        "profiles": profile_rows(found.profiles),
        "profile_quartiles": {p.name: uncertainty_quartiles(df) for p, _, df in found.profiles},
        "predictors": predictor_rows(found.predictors),
        "predictor_distributions": distribution_rows(found.predictors),
        "run_distributions": run_distribution_rows(found.runs),
        "importance": {p.name: _importance(p) for p, _ in found.predictors},
    }
    return found, data


def _importance(path: Path) -> list[dict]:
    import pandas as pd

    f = path / IMPORTANCE_FILE
    return pd.read_parquet(f).head(15).to_dict("records") if f.is_file() else []
