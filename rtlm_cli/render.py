"""Rich tables of every job's result, for people (``--json`` gives programs the same data)."""

from __future__ import annotations

from pathlib import Path

from rich.table import Table


def _fmt(v, spec: str = ".2f") -> str:
    return "-" if v is None or (isinstance(v, float) and v != v) else format(v, spec)


def profile_table(result) -> Table:
    meta, summary = result.meta, result.meta["summary"]
    table = Table(title=f"profile {result.out}", show_header=False)
    table.add_row("model", f"{meta['model']['model_id']} ({meta['model']['dtype']})")
    table.add_row("device", f"{meta['device']['device']} ({meta['device']['device_name']})")
    sampled = meta.get("decoding", {}).get("samples", 1)
    of = f", {summary.get('prompts', 0)} prompts x {sampled} samples" if sampled > 1 else ""
    table.add_row("requests", f"{summary.get('requests', 0)} ({result.new_requests} new{of})")
    if summary.get("requests"):
        table.add_row("ended before the cap", f"{summary['ended_share']:.0%}")
        table.add_row("output tokens, mean", f"{summary['output_tokens_mean']:.1f}")
        table.add_row("TTFT, median", f"{summary['ttft_s_median'] * 1000:.0f} ms")
        table.add_row("TPOT, median", f"{summary['tpot_s_median'] * 1000:.1f} ms")
        table.add_row("decode tokens/s, median", f"{summary['decode_tokens_per_s_median']:.1f}")
    if result.calibrated:
        table.add_row("timing table", str(result.out / "timing.parquet"))
    return table


def evaluation_table(rows: list[dict], title: str) -> Table:
    table = Table(title=title)
    for col in ("model", "MAE", "RMSE", "Spearman", "Kendall tau", "pairwise acc", "bucket acc"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for r in rows:
        style = "bold" if r["kind"] in ("chosen", "cross-validated") else ("dim" if r["kind"] == "baseline" else None)
        table.add_row(r["model"], f"{r['mae']:.1f}", f"{r['rmse']:.1f}", f"{r['spearman']:.3f}", f"{r['kendall_tau']:.3f}",
                      f"{r['pairwise_accuracy']:.3f}", f"{r['bucket_accuracy']:.3f}", style=style)
    return table


def importance_table(rows: list[dict], top: int = 12) -> Table:
    table = Table(title=f"feature importance (gain), top {top}")
    for col in ("feature", "family", "gain"):
        table.add_column(col, justify="right" if col == "gain" else "left")
    for r in rows[:top]:
        table.add_row(r["feature"], r["family"], f"{r['gain']:.0f}")
    return table


def training_tables(result) -> list:
    from rtlm_cli.predict.distribution import flat

    rows = result.meta["rows"]
    what = f"{rows['test']} answers" if rows.get("samples_per_prompt", 1) > 1 else f"{rows['test']} prompts"
    title = f"predictor {result.out}: held-out {what}, target {result.meta['target']}"
    costs = ", ".join(f"{k} {v * 1e3:.3f} ms" for k, v in result.meta["feature_cost_s_per_prompt"].items())
    dist = []
    if result.distribution:
        levels = ", ".join(f"{lv:g}" for lv in result.distribution["levels"])
        for part, label in (("held_out", "held-out prompts"), ("out_of_fold", "every prompt, out of fold")):
            if result.distribution.get(part):
                dist.append(distribution_table([flat(r) for r in result.distribution[part]],
                                               f"length distribution, {label} (quantiles {levels})"))
    return [evaluation_table(result.evaluation, title), *dist, importance_table(result.importance),
            f"feature cost per prompt: {costs}"]


def distribution_table(rows: list[dict], title: str, bold: str | None = "quantile model") -> Table:
    """A distribution predictor against its baselines (rows of ``predict.distribution.flat``): pinball
    loss, coverage overall, of ended and capped answers, within the fifths of the predicted median,
    Kendall tau of the predicted median and mean against each prompt's mean length."""
    table = Table(title=title)
    for col in ("model", "pinball", "50% covers", "80% covers", "80%: ended", "80%: capped", "80%: fifths",
                "tau of median", "tau of mean"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for r in rows:
        lo, hi = r["coverage_80_fifths_min"], r["coverage_80_fifths_max"]
        table.add_row(r["model"], f"{r['pinball']:.2f}", _fmt(r["coverage_50"], ".0%"), _fmt(r["coverage_80"], ".0%"),
                      _fmt(r["coverage_80_ended"], ".0%"), _fmt(r["coverage_80_capped"], ".0%"),
                      "-" if lo is None else f"{lo:.0%}-{hi:.0%}", _fmt(r["kendall_tau_median_vs_prompt_mean"], ".3f"),
                      _fmt(r["kendall_tau_mean_vs_prompt_mean"], ".3f"),
                      style="" if bold is None else "bold" if r["model"] == bold else "dim")
    return table


def run_table(metas: list[dict]) -> Table:
    modes = sorted({m["mode"] if not m.get("engine") else f"{m['mode']}, {m['engine']}" for m in metas})
    table = Table(title="replay" + (f" ({'; '.join(modes)})" if metas else ""))
    for col in ("run", "policy", "load", "done", "mean s", "p50 s", "p95 s", "ttft p50 s", "req/s", "tok/s", "in flight", "misses"):
        table.add_column(col, justify="left" if col in ("run", "policy") else "right")
    for m in metas:
        s, w = m["summary"], m["workload"]
        miss = f"{s['deadline_miss_rate']:.1%}" if "deadline_miss_rate" in s else "-"
        load = f"{w['offered_load']:.2f}" if w.get("offered_load") else "-"
        table.add_row(Path(m["out"]).name, m["policy"], load, f"{s['completed']}/{s['requests']}", f"{s['e2el_s']['mean']:.2f}",
                      f"{s['e2el_s']['p50']:.2f}", f"{s['e2el_s']['p95']:.2f}", f"{s['ttft_s']['p50']:.2f}",
                      f"{s['throughput_rps']:.3f}", f"{s['throughput_tps']:.1f}", f"{s.get('mean_in_flight', s['mean_batch_size']):.1f}", miss)
    return table


def headline_tables(data: dict) -> list:
    """The comparison a reader came for: per comparable group, each policy against the baseline."""
    from rtlm_cli.report.units import human

    out, groups = [], {}
    for r in data["headline"]:
        groups.setdefault(r["group"], []).append(r)
    cols = ["e2el_mean_vs_baseline", "e2el_p50_vs_baseline", "e2el_p99_vs_baseline", "ttft_mean_vs_baseline",
            "ttft_p99_vs_baseline", "goodput_vs_baseline", "oracle_gain_share"]
    names = ["mean", "median", "p99", "TTFT mean", "TTFT p99", "goodput", "of the oracle's gain"]
    from rtlm_cli.report.compare import across_line

    for group, rows in groups.items():
        t = Table(title=f"against {data['baseline']}: {group}", title_justify="left")
        t.add_column("policy")
        for name in names:
            t.add_column(name, justify="right")
        for r in rows:
            t.add_row(r["policy"], *(human(c, r[c]) for c in cols))
        out.append(t)
        out += [f"  {r['sentence']}" for r in rows]
    out += [f"  over {a['draws']} seeds of {a['workload']}: {across_line(a, data['baseline'])}"
            for a in data.get("across_seeds", [])]
    for a in data["kept_apart"]:
        out.append(f"[dim]kept apart: {a['run']}: {a['why']}[/dim]")
    return out



def report_tables(data: dict) -> list:
    from rtlm_cli.report.units import human

    out = headline_tables(data)
    if data["runs"]:
        t = Table(title="runs")
        cols = ("run", "policy", "mode", "load", "finished/failed", "mean", "median", "p99", "TTFT median",
                "req/s", "tok/s", "deadline misses", "goodput")
        for c in cols:
            t.add_column(c, justify="left" if c in ("run", "policy", "mode") else "right")
        for r in data["runs"]:
            t.add_row(r["run"], r["policy"], r["mode"] + (f", {r['engine']}" if r.get("engine") else ""),
                      human("load", r["offered_load"]), f"{r['completed']}/{r['failed']}",
                      *(human(c, r[c]) for c in ("e2el_mean_s", "e2el_p50_s", "e2el_p99_s", "ttft_p50_s")),
                      f"{r['throughput_rps']:.3g}", f"{r['throughput_tps']:.3g}", human("deadline_miss_rate", r["deadline_miss_rate"]),
                      "-" if r["goodput_rps"] is None else f"{r['goodput_rps']:.3g}")
        out.append(t)
        b = Table(title="response time by predicted length (quantile buckets)")
        for c in ("run", "predicted tokens", "requests", "mean", "p95"):
            b.add_column(c)
        for r in data["run_buckets"]:
            b.add_row(r["run"], r["predicted_tokens"], str(r["requests"]), human("e2el_mean_s", r["e2el_mean_s"]),
                      human("e2el_p95_s", r["e2el_p95_s"]))
        out.append(b)
    for r in data["profiles"]:
        t = Table(title=f"profile {r['profile']}: {r['model']} on {r['device']}, {r['requests']} requests", show_header=False)
        t.add_row("capped at the token limit", f"{r['capped_share']:.0%}")
        t.add_row("output tokens, mean", f"{r['output_tokens_mean']:.1f}")
        t.add_row("e2e / ttft / tpot, median", f"{r['e2e_p50_s']:.2f} s / {r['ttft_p50_s'] * 1e3:.0f} ms / {r['tpot_p50_s'] * 1e3:.1f} ms")
        t.add_row("peak RSS / GPU memory", f"{_fmt(r['rss_peak_bytes'] / 2**30)} GiB / {_fmt(r['gpu_mem_peak_bytes'] / 2**30)} GiB")
        for k, v in r.items():
            if k.startswith("spearman_tokens_vs_"):
                t.add_row(f"Spearman(output tokens, {k.removeprefix('spearman_tokens_vs_')})", _fmt(v, ".3f"))
        out.append(t)
        q = Table(title="by uncertainty quartile")
        for c in ("quartile", "requests", "score", "output tokens", "capped", "e2e s"):
            q.add_column(c)
        for row in data["profile_quartiles"][r["profile"]]:
            q.add_row(row["quartile"], str(row["requests"]), f"{row['score_mean']:.3f}", f"{row['output_tokens_mean']:.1f}",
                      f"{row['capped_share']:.0%}", f"{row['e2e_mean_s']:.2f}")
        out.append(q)
    by_pred: dict[str, list] = {}
    for r in data["predictors"]:
        by_pred.setdefault(r["predictor"], []).append(r)
    for name, rows in by_pred.items():
        out.append(evaluation_table(rows, f"predictor {name}"))
    by_part: dict[tuple, list] = {}
    for r in data.get("predictor_distributions", []):
        by_part.setdefault((r["predictor"], r["evaluated_on"]), []).append(r)
    for (name, part), rows in by_part.items():
        out.append(distribution_table(rows, f"predictor {name}: length distribution, {part.replace('_', ' ')}"))
    if data.get("run_distributions"):
        out.append(distribution_table(data["run_distributions"], "runs: the predicted length quantiles against the "
                                      "answers each run produced (model = run)", bold=None))
    return out
