"""Accuracy of length predictions: errors, rank statistics (scipy), pairwise order, buckets.

No model and no torch here; numpy and scipy only.
"""

from __future__ import annotations

import numpy as np

DEFAULT_BUCKETS = (64, 128, 256, 512)


def pairwise_order_accuracy(actual, predicted, max_pairs: int = 2_000_000, seed: int = 0) -> float:
    """Share of pairs with different actual values that the prediction orders the same way.

    A tie in the prediction counts as half right. Above ``max_pairs`` pairs a seeded sample is used.
    """
    a = np.asarray(actual, dtype=float)
    p = np.asarray(predicted, dtype=float)
    n = len(a)
    if n < 2:
        return float("nan")
    if n * (n - 1) // 2 <= max_pairs:
        i, j = np.triu_indices(n, k=1)
    else:
        rng = np.random.default_rng(seed)  # this metric's own generator
        i = rng.integers(0, n, max_pairs)
        j = rng.integers(0, n, max_pairs)
    da, dp = np.sign(a[i] - a[j]), np.sign(p[i] - p[j])
    keep = da != 0
    if not keep.any():
        return float("nan")
    score = np.where(dp[keep] == 0, 0.5, (da[keep] == dp[keep]).astype(float))
    return float(score.mean())


def bucket_of(values, edges=DEFAULT_BUCKETS) -> np.ndarray:
    """Bucket index of each value: 0 for < edges[0], ..., len(edges) for >= edges[-1]."""
    return np.searchsorted(np.asarray(edges, dtype=float), np.asarray(values, dtype=float), side="right")


def evaluate(actual, predicted, edges=DEFAULT_BUCKETS) -> dict[str, float]:
    """MAE, RMSE, Spearman rho, Kendall tau-b, pairwise order accuracy, bucket accuracy."""
    from scipy import stats

    a = np.asarray(actual, dtype=float)
    p = np.asarray(predicted, dtype=float)
    err = p - a
    constant = np.ptp(p) == 0 or np.ptp(a) == 0
    return {
        "n": int(len(a)),
        "mae": float(np.mean(np.abs(err))),
        "rmse": float(np.sqrt(np.mean(err**2))),
        # A constant prediction carries no order: its rank correlation is 0, not undefined.
        "spearman": 0.0 if constant else float(stats.spearmanr(a, p).statistic),
        "kendall_tau": 0.0 if constant else float(stats.kendalltau(a, p).statistic),
        "pairwise_accuracy": pairwise_order_accuracy(a, p),
        "bucket_accuracy": float(np.mean(bucket_of(a, edges) == bucket_of(p, edges))),
    }
