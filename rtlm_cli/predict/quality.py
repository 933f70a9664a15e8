"""How well the serving predictor ranks the requests it serves: Kendall tau-b and the mean absolute
error of predicted against realised output tokens over the latest finished requests (the gateway's
``/metrics`` and the live view both read it).

Censoring, as it stands: an answer cut by its ``max_tokens`` counts at its cap (its true length is at
least that: right-censored, so a capped request predicted long is scored as if exact); a request that
failed, was shed or whose client left has no realised length and is not counted.
"""

from __future__ import annotations

import math
from collections import deque

WINDOW = 200  # finished requests the rolling figures are taken over
MIN_PAIRS = 20  # fewer than this: no figure (NaN)


class RollingQuality:
    """The latest ``window`` (predicted, realised) pairs of finished requests."""

    def __init__(self, window: int = WINDOW):
        self.pairs: deque[tuple[float, float]] = deque(maxlen=window)

    def add(self, predicted: float, realised: float) -> None:
        if predicted == predicted and realised == realised:  # NaN: no prediction (e.g. FCFS) or no length
            self.pairs.append((float(predicted), float(realised)))

    def __len__(self) -> int:
        return len(self.pairs)

    def figures(self) -> dict[str, float]:
        """``kendall_tau`` (tau-b, scipy) and ``abs_error_tokens`` (mean), NaN under ``MIN_PAIRS`` pairs
        or when either side is constant; ``requests``: the pairs they are over."""
        n = len(self.pairs)
        out = {"kendall_tau": math.nan, "abs_error_tokens": math.nan, "requests": float(n)}
        if n < MIN_PAIRS:
            return out
        from scipy.stats import kendalltau

        predicted, realised = zip(*self.pairs)
        tau = kendalltau(predicted, realised).statistic
        out["kendall_tau"] = float(tau) if tau == tau else math.nan
        out["abs_error_tokens"] = sum(abs(p - r) for p, r in self.pairs) / n
        return out
