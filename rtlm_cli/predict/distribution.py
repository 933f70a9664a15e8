"""A length distribution given as quantiles: its mean and upper tail (what the tail-aware policies
read), and how good such predictions are (pinball loss, interval coverage, calibration) against two
baselines: one distribution for every prompt (prompt-blind) and a point model with conformal
intervals. numpy only (scipy for Kendall tau); no model here.

Quantiles are rows of ``Q`` (requests x levels), sorted, in tokens. Between the levels the quantile
function is linear; below the first and above the last level it is extended by the nearest
segment's slope, clipped to [0, cap]: that is what ``mean`` and ``cvar`` integrate.
"""

from __future__ import annotations

import numpy as np

INTERVALS = ((0.25, 0.75, "coverage_50"), (0.1, 0.9, "coverage_80"))


def quantile_function(levels, q, cap: float | None = None):
    """The knots (u, tokens) of one request's quantile function, from u = 0 to u = 1."""
    lv, q = np.asarray(levels, float), np.asarray(q, float)
    if len(lv) > 1:
        lo = q[0] - (q[1] - q[0]) * lv[0] / (lv[1] - lv[0])
        hi = q[-1] + (q[-1] - q[-2]) * (1.0 - lv[-1]) / (lv[-1] - lv[-2])
    else:
        lo = hi = q[0]
    hi = max(min(hi, cap), q[-1]) if cap else hi
    return np.r_[0.0, lv, 1.0], np.r_[max(lo, 0.0), q, hi]


def mean(levels, q, cap: float | None = None) -> float:
    """The expected length: the quantile function's integral over [0, 1]."""
    u, x = quantile_function(levels, q, cap)
    return float(np.trapezoid(x, u))  # exact: the function is linear between its knots


def cvar(levels, q, alpha: float, cap: float | None = None) -> float:
    """CVaR at level alpha: the expected length of the longest (1 - alpha) share of answers."""
    u, x = quantile_function(levels, q, cap)
    top = np.r_[alpha, u[u > alpha]]
    return float(np.trapezoid(np.interp(top, u, x), top) / (1.0 - alpha))


def spread(q) -> float:
    """The predicted spread in [0, 1]: (top quantile - bottom quantile) / top quantile."""
    return float((q[-1] - q[0]) / q[-1]) if q[-1] > 0 else 0.0


def pinball(y, Q, levels) -> float:
    """Mean pinball (quantile) loss over requests and levels, in tokens (lower is better)."""
    d = np.asarray(y, float)[:, None] - np.asarray(Q, float)
    lv = np.asarray(levels, float)[None, :]
    return float(np.maximum(lv * d, (lv - 1.0) * d).mean())


EPS = 1e-3  # token counts are integers: a quantile of 255.9999988 (LightGBM's float round-off) at a cap of 256 is the cap


def coverage(y, lo, hi) -> float:
    """Share of ``y`` inside [lo, hi] (closed: an answer at the cap is inside an interval ending there)."""
    y = np.asarray(y, float)
    return float(np.mean((y >= np.asarray(lo) - EPS) & (y <= np.asarray(hi) + EPS))) if len(y) else float("nan")


def calibration(y, Q, levels) -> list[dict]:
    """Per level: the share of answers at or below the predicted quantile (a calibrated one: the level)."""
    y = np.asarray(y, float)
    return [{"level": float(lv), "observed": float(np.mean(y <= Q[:, j] + EPS))} for j, lv in enumerate(levels)]


def _intervals(y, Q, levels) -> dict:
    out = {}
    for lo, hi, name in INTERVALS:
        if lo in levels and hi in levels:
            out[name] = coverage(y, Q[:, levels.index(lo)], Q[:, levels.index(hi)])
    return out


def median_of(Q, levels) -> np.ndarray:
    return Q[:, levels.index(0.5)] if 0.5 in levels else Q[:, len(levels) // 2]


def evaluate(name: str, y, Q, levels, prompt_ids, ended, fifths: int = 5) -> dict:
    """Pinball loss, interval coverage overall, for ended and capped answers apart, and within each
    fifth of the predicted median (ties broken by the predicted mean); calibration per level; Kendall
    tau of the predicted median and mean against each prompt's mean length (one point per prompt)."""
    import pandas as pd
    from scipy.stats import kendalltau

    levels = [float(lv) for lv in levels]
    y, Q, ended = np.asarray(y, float), np.asarray(Q, float), np.asarray(ended, bool)
    med = median_of(Q, levels)
    cap = float(y.max())  # the answers' own cap (or longest): where the top of a quantile function stops
    means = np.asarray([mean(levels, q, cap) for q in Q])
    row = {"model": name, "n": int(len(y)), "pinball": pinball(y, Q, levels), **_intervals(y, Q, levels),
           "calibration": calibration(y, Q, levels)}
    for part, mask in (("ended", ended), ("capped", ~ended)):
        row[part] = {"n": int(mask.sum()), **({"pinball": pinball(y[mask], Q[mask], levels),
                                                **_intervals(y[mask], Q[mask], levels)} if mask.any() else {})}
    # fifths of the predicted median, ties (a median at the cap, say) broken by the predicted mean
    rank = np.empty(len(y))
    rank[np.lexsort((means, med))] = np.arange(len(y))
    which = pd.qcut(rank, fifths, labels=False) if len(y) >= fifths else np.zeros(len(y), int)
    row["by_fifth"] = [{"fifth": int(f) + 1, "n": int((which == f).sum()),
                        "median_tokens": [float(med[which == f].min()), float(med[which == f].max())],
                        "mean_tokens": [float(means[which == f].min()), float(means[which == f].max())],
                        **_intervals(y[which == f], Q[which == f], levels)} for f in sorted(set(which))]
    by_prompt = pd.DataFrame({"p": list(prompt_ids), "y": y, "m": med, "e": means}).groupby("p").agg(
        y=("y", "mean"), m=("m", "first"), e=("e", "first"))
    for col, key in (("m", "kendall_tau_median_vs_prompt_mean"), ("e", "kendall_tau_mean_vs_prompt_mean")):
        row[key] = float(kendalltau(by_prompt[col], by_prompt["y"])[0]) if by_prompt[col].nunique() > 1 else 0.0
    row["prompts"] = int(len(by_prompt))
    return row


def prompt_blind(y_train, levels, n: int) -> np.ndarray:
    """The training answers' own quantiles, the same for every request."""
    return np.tile(np.quantile(np.asarray(y_train, float), levels), (n, 1))


def leave_one_out(y, prompt_ids, levels) -> np.ndarray:
    """Each answer's prompt's *other* answers' quantiles: what the best prompt-only distribution knows
    (the mean oracle's distribution; needs >= 2 answers per prompt)."""
    import pandas as pd

    y = np.asarray(y, float)
    Q = np.empty((len(y), len(levels)))
    for idx in pd.Series(range(len(y))).groupby(list(prompt_ids)).indices.values():
        for i in idx:
            others = y[idx[idx != i]] if len(idx) > 1 else y[idx]
            Q[i] = np.quantile(others, levels)
    return Q


def conformal(point_cal, y_cal, point, levels, cap: float | None = None) -> np.ndarray:
    """A point model's predictions shifted by the quantiles of its log-scale residuals on answers it was
    not fitted on (split conformal), clipped to [0, cap]: intervals of one relative width for all."""
    shifts = np.quantile(np.log1p(np.asarray(y_cal, float)) - np.log1p(np.asarray(point_cal, float)), levels)
    Q = np.expm1(np.log1p(np.asarray(point, float))[:, None] + shifts[None, :])
    return np.sort(np.clip(Q, 0.0, cap), axis=1)


def flat(row: dict) -> dict:
    """One ``evaluate`` row without its nested parts (for tables and CSV): coverage of ended and capped
    answers and the range over the fifths as columns."""
    fifths = [f["coverage_80"] for f in row["by_fifth"] if "coverage_80" in f]
    return {"model": row["model"], "n": row["n"], "pinball": row["pinball"], "coverage_50": row.get("coverage_50"),
            "coverage_80": row.get("coverage_80"), "coverage_80_ended": row["ended"].get("coverage_80"),
            "coverage_80_capped": row["capped"].get("coverage_80"), "coverage_80_fifths_min": min(fifths, default=None),
            "coverage_80_fifths_max": max(fifths, default=None),
            "kendall_tau_median_vs_prompt_mean": row["kendall_tau_median_vs_prompt_mean"],
            "kendall_tau_mean_vs_prompt_mean": row.get("kendall_tau_mean_vs_prompt_mean")}
