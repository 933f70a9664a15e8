"""Report figures with matplotlib (Agg, no display): each function writes one PNG and returns its path."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rtlm_cli.formats.run import with_latencies


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _plt().close(fig)
    return path


def _decorate(ax, xlabel: str, ylabel: str, title: str, legend: bool = True) -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if legend:
        ax.legend(fontsize=7)


def response_cdf(runs, path: Path) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    lo, hi = np.inf, 0.0
    for p, meta, df in runs:
        e = np.sort(with_latencies(df[df["status"] == "finished"])["e2el_s"].to_numpy())
        ax.plot(e, np.arange(1, len(e) + 1) / len(e), label=f"{p.name}")
        if len(e):
            lo, hi = min(lo, max(e[0], 1e-3)), max(hi, e[-1])
    if hi > 20 * lo:  # long tails: a log axis keeps the body of the distribution readable
        ax.set_xscale("log")
    _decorate(ax, "response time (s)", "share of requests", "CDF of response time (e2el)")
    return _save(fig, path)


def latency_vs_load(rows: list[dict], path: Path) -> Path | None:
    loads = {r["offered_load"] for r in rows if r["offered_load"]}
    if len(loads) < 2:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    by_policy: dict[str, list] = {}
    for r in rows:
        if r["offered_load"]:
            by_policy.setdefault(f"{r['policy']} (batch {r['max_batch']})", []).append(r)
    for label, rs in sorted(by_policy.items()):
        rs = sorted(rs, key=lambda r: r["offered_load"])
        line, = ax.plot([r["offered_load"] for r in rs], [r["e2el_mean_s"] for r in rs], marker="o", label=f"{label} mean")
        ax.plot([r["offered_load"] for r in rs], [r["e2el_p95_s"] for r in rs], ls="--", color=line.get_color(), alpha=0.6)
    _decorate(ax, "offered load (share of batch-1 capacity)", "response time (s); dashed: p95", "response time against load")
    return _save(fig, path)


def queue_over_time(runs, path: Path) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for p, _, df in runs:
        done = df[df["status"] == "finished"]
        events = np.concatenate([np.c_[done["arrival_s"], np.ones(len(done))], np.c_[done["start_s"], -np.ones(len(done))]])
        events = events[np.lexsort((-events[:, 1], events[:, 0]))]
        ax.step(events[:, 0], np.cumsum(events[:, 1]), where="post", label=p.name, lw=0.9)
    _decorate(ax, "time (s)", "requests waiting", "queue length over time")
    return _save(fig, path)


def predicted_vs_actual(predictors, path: Path) -> Path | None:
    import pandas as pd

    frames = [(p.name, pd.read_parquet(p / "holdout.parquet")) for p, _ in predictors if (p / "holdout.parquet").is_file()]
    if not frames:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 5))
    hi = 1.0
    for name, h in frames:
        ax.scatter(h["actual"], h["predicted"], s=8, alpha=0.5, label=name)
        hi = max(hi, float(h["actual"].max()), float(h["predicted"].max()))
    ax.plot([0, hi], [0, hi], color="gray", lw=0.8)
    _decorate(ax, "actual", "predicted", "predicted vs actual (held-out prompts)")
    return _save(fig, path)


def latency_vs_uncertainty(profiles, path: Path) -> Path:
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(9, 4))
    for p, _, df in profiles:
        axes[0].scatter(df["uncertainty_score"], df["output_tokens"], s=6, alpha=0.4, label=p.name)
        axes[1].scatter(df["uncertainty_score"], df["e2e_s"], s=6, alpha=0.4, label=p.name)
    axes[0].set_ylabel("output tokens")
    axes[1].set_ylabel("end-to-end latency (s)")
    for ax in axes:
        ax.set_xlabel("uncertainty score")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle("output length and latency against input uncertainty")
    return _save(fig, path)


def all_figures(found, data: dict, directory: Path) -> list[Path]:
    out = []
    if found.runs:
        out += [response_cdf(found.runs, directory / "response_cdf.png"),
                queue_over_time(found.runs, directory / "queue_length.png")]
        out.append(latency_vs_load(data["runs"], directory / "latency_vs_load.png"))
    if found.predictors:
        out.append(predicted_vs_actual(found.predictors, directory / "predicted_vs_actual.png"))
    if found.profiles:
        out.append(latency_vs_uncertainty(found.profiles, directory / "latency_vs_uncertainty.png"))
    return [p for p in out if p is not None]
