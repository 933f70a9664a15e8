"""Report figures with matplotlib (Agg, no display): small multiples, one panel per comparable group
(or per policy), so runs that cannot be compared never share an axis. Each function writes one PNG
and returns its path (None when there is nothing to draw)."""

from __future__ import annotations

import textwrap

from pathlib import Path

import numpy as np

from rtlm_cli.formats.run import with_latencies
from rtlm_cli.report.compare import GROUP_KEYS, group_key, label

MAX_PANELS = 9


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _grid(n: int, width: float = 4.2, height: float = 3.2):
    plt = _plt()
    cols = min(n, 3)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def _save(fig, path: Path, title: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.suptitle(textwrap.fill(title, int(fig.get_figwidth() * 11)))  # a one-panel figure is narrow
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    _plt().close(fig)
    return path


def _label(ax, xlabel: str, ylabel: str, legend: int = 7) -> None:
    """A panel's axis labels, light grid and legend."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=legend)


def _where(row: dict) -> str:
    engine = f" on {row['engine']}" if row.get("engine") else ""
    return f"{row['profile']} (cap {row['cap']}), {row['mode']}{engine}, {row['batching']}"


def _style(policy: str, baseline: str) -> dict:
    if policy == baseline:
        return {"color": "black", "ls": "--", "lw": 1.6}
    if policy.startswith("oracle"):
        return {"color": "gray", "ls": ":", "lw": 1.6}
    return {"lw": 1.3}


def response_cdf(found, rows: list[dict], path: Path, baseline: str) -> Path | None:
    """The distribution of response time, one panel per comparable group."""
    frames = {str(p): df for p, _, df in found.runs}
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault(group_key(r), []).append(r)
    groups = dict(list(groups.items())[:MAX_PANELS])
    if not groups:
        return None
    fig, axes = _grid(len(groups))
    for ax, (key, members) in zip(axes, groups.items()):
        long_tail = False
        for r in members:
            e = np.sort(with_latencies(frames[r["path"]].query("status == 'finished'"))["e2el_s"].to_numpy())
            if len(e):
                ax.plot(e, np.arange(1, len(e) + 1) / len(e), label=label(r), **_style(label(r), baseline))
                long_tail |= e[-1] > 20 * max(e[0], 1e-3)
        if long_tail:
            ax.set_xscale("log")
        g = dict(zip(GROUP_KEYS, key))
        load = f"load {g['load']:.2f}" if isinstance(g["load"], float) else g["arrivals"]
        ax.set_title(f"{_where(members[0])}\n{load}, {g['num_requests']} requests, seed {g['seed']}", fontsize=8)
        _label(ax, "response time (s)", "share of requests")
    return _save(fig, path, "distribution of response time, one panel per comparable group")


def latency_vs_load(rows: list[dict], path: Path, baseline: str) -> Path | None:
    """Mean response time against load per policy, one panel per workload swept over loads."""
    keys = [k for k in GROUP_KEYS if k != "load"]
    sweeps: dict[tuple, list[dict]] = {}
    for r in rows:
        if isinstance(r.get("load"), float):
            sweeps.setdefault(tuple(r.get(k) for k in keys), []).append(r)
    sweeps = {k: v for k, v in sweeps.items() if len({r["load"] for r in v}) >= 2}
    if not sweeps:
        return None
    fig, axes = _grid(min(len(sweeps), MAX_PANELS))
    for ax, members in zip(axes, sweeps.values()):
        by_policy: dict[str, list[dict]] = {}
        for r in members:
            by_policy.setdefault(label(r), []).append(r)
        for policy, rs in sorted(by_policy.items()):
            rs = sorted(rs, key=lambda r: r["load"])
            ax.plot([r["load"] for r in rs], [r["e2el_mean_s"] for r in rs], marker="o", label=policy,
                    **_style(policy, baseline))
        ax.set_title(_where(members[0]), fontsize=9)
        ax.set_xlabel("offered load (share of capacity)")
        ax.set_ylabel("mean response time (s)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return _save(fig, path, f"response time against load ({baseline}: dashed black; oracle: dotted gray)")


def queue_over_time(found, rows: list[dict], path: Path) -> Path | None:
    """Requests waiting over time, one panel per policy (a line per load or run)."""
    frames = {str(p): df for p, _, df in found.runs}
    by_policy: dict[str, list[dict]] = {}
    for r in rows:
        by_policy.setdefault(label(r), []).append(r)
    by_policy = dict(list(by_policy.items())[:MAX_PANELS])
    if not by_policy:
        return None
    fig, axes = _grid(len(by_policy))
    for ax, (policy, members) in zip(axes, by_policy.items()):
        for r in members:
            done = frames[r["path"]].query("status == 'finished'")
            events = np.concatenate([np.c_[done["arrival_s"], np.ones(len(done))],
                                     np.c_[done["start_s"], -np.ones(len(done))]])
            events = events[np.lexsort((-events[:, 1], events[:, 0]))]
            tag = f"load {r['load']:.2f}" if isinstance(r.get("load"), float) else r["run"]
            ax.step(events[:, 0], np.cumsum(events[:, 1]), where="post", lw=0.8, label=tag)
        ax.set_title(policy, fontsize=9)
        ax.set_xlabel("time (s)")
        ax.set_ylabel("requests waiting")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return _save(fig, path, "queue length over time, one panel per policy")


def predicted_vs_actual(predictors, path: Path) -> Path | None:
    """Held-out predictions against true lengths as a density, the share at the cap shown."""
    import pandas as pd

    frames = [(p.name, meta, pd.read_parquet(p / "holdout.parquet")) for p, meta in predictors
              if (p / "holdout.parquet").is_file()][:MAX_PANELS]
    if not frames:
        return None
    fig, axes = _grid(len(frames), 4.2, 4.0)
    for ax, (name, meta, h) in zip(axes, frames):
        hb = ax.hexbin(h["actual"], h["predicted"], gridsize=25, mincnt=1, cmap="viridis")
        hi = float(max(h["actual"].max(), h["predicted"].max(), 1.0))
        ax.plot([0, hi], [0, hi], color="gray", lw=0.8)
        capped = float((~h["ended"].astype(bool)).mean()) if "ended" in h else float("nan")
        ax.set_title(f"{name}: {capped:.0%} of answers at the cap ({meta.get('cap') or '-'})", fontsize=9)
        ax.set_xlabel("actual tokens")
        ax.set_ylabel("predicted tokens")
        fig.colorbar(hb, ax=ax, label="prompts")
    return _save(fig, path, "predicted against actual length (held-out prompts)")


def calibration(predictors, path: Path) -> Path | None:
    """Distribution predictors: the share of answers at or below each predicted quantile against its
    level (out of fold where there, else held out), the baselines beside; on the diagonal is calibrated."""
    from rtlm_cli.formats.predictor import read_distribution

    dists = [(p.name, read_distribution(p)) for p, _ in predictors]
    dists = [(name, d.get("out_of_fold") or d["held_out"]) for name, d in dists if d][:MAX_PANELS]
    if not dists:
        return None
    fig, axes = _grid(len(dists), 4.2, 4.0)
    for ax, (name, rows) in zip(axes, dists):
        ax.plot([0, 1], [0, 1], color="gray", lw=0.8)
        for r in rows:
            c = r["calibration"]
            ax.plot([x["level"] for x in c], [x["observed"] for x in c], marker="o", ms=3,
                    lw=2.0 if r["model"] == "quantile model" else 1.0, label=f"{r['model']} (pinball {r['pinball']:.1f})")
        ax.set_title(f"{name}: {rows[0]['n']} answers", fontsize=9)
        _label(ax, "quantile level", "share of answers at or below it", legend=6)
    return _save(fig, path, "calibration of predicted length quantiles (a point on the diagonal is calibrated)")


def latency_vs_uncertainty(profiles, path: Path) -> Path | None:
    """Output length and latency against the uncertainty score, one row of panels per profile."""
    profiles = profiles[:MAX_PANELS // 2 or 1]
    if not profiles:
        return None
    fig, axes = _grid(2 * len(profiles), 4.5, 3.2)
    for i, (p, meta, df) in enumerate(profiles):
        a, b = axes[2 * i], axes[2 * i + 1]
        a.scatter(df["uncertainty_score"], df["output_tokens"], s=6, alpha=0.4)
        b.scatter(df["uncertainty_score"], df["e2e_s"], s=6, alpha=0.4)
        a.set_ylabel("output tokens")
        b.set_ylabel("end-to-end latency (s)")
        for ax in (a, b):
            ax.set_xlabel("uncertainty score")
            ax.set_title(f"{p.name}: {meta['model']['model_id']} on {meta['device']['device_name']}", fontsize=9)
            ax.grid(alpha=0.3)
    return _save(fig, path, "output length and latency against input uncertainty")


def all_figures(found, data: dict, directory: Path) -> list[Path]:
    rows, baseline = data["runs"], data["baseline"]
    out = []
    if found.runs:
        out += [latency_vs_load(rows, directory / "latency_vs_load.png", baseline),
                response_cdf(found, rows, directory / "response_cdf.png", baseline),
                queue_over_time(found, rows, directory / "queue_length.png")]
    if found.predictors:
        out += [predicted_vs_actual(found.predictors, directory / "predicted_vs_actual.png"),
                calibration(found.predictors, directory / "calibration.png")]
    if found.profiles:
        out.append(latency_vs_uncertainty(found.profiles, directory / "latency_vs_uncertainty.png"))
    return [p for p in out if p is not None]
