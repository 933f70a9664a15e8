"""Seconds of prefill and decode at a batch size and context length, from a timing table.

Piecewise-linear in batch and in context (bilinear between measured points, linear beyond the
last two). Pure Python with memoization: the simulator calls it for every batch.
"""

from __future__ import annotations

import bisect
from functools import lru_cache


def _interp(xs: list[float], ys: list[float], x: float) -> float:
    if len(xs) == 1:
        return ys[0]
    i = min(max(bisect.bisect_right(xs, x) - 1, 0), len(xs) - 2)
    x0, x1, y0, y1 = xs[i], xs[i + 1], ys[i], ys[i + 1]
    return max(y0 + (y1 - y0) * (x - x0) / (x1 - x0), 0.0)


class CostModel:
    def __init__(self, rows: list[dict], name: str = "worker"):
        """``rows``: dicts with batch, context, prefill_s, decode_step_s (a timing table)."""
        if not rows:
            raise ValueError("empty timing table")
        self.name = name
        self.batches = sorted({int(r["batch"]) for r in rows})
        self.contexts = sorted({int(r["context"]) for r in rows})
        grid = {(int(r["batch"]), int(r["context"])): r for r in rows}
        # Fill holes of the grid from the nearest measured context of the same batch.
        self._prefill, self._step = {}, {}
        for b in self.batches:
            have = sorted(c for (bb, c) in grid if bb == b)
            cs = [float(c) for c in have]
            self._prefill[b] = (cs, [float(grid[(b, c)]["prefill_s"]) for c in have])
            self._step[b] = (cs, [float(grid[(b, c)]["decode_step_s"]) for c in have])
        self.prefill = lru_cache(maxsize=65536)(self._at(self._prefill))
        self.step = lru_cache(maxsize=65536)(self._at(self._step))

    @classmethod
    def from_table(cls, df, name: str = "worker") -> "CostModel":
        return cls(df.to_dict("records"), name)

    def _at(self, table):
        batches = [float(b) for b in self.batches]

        def at(batch: int, context: int) -> float:
            per_batch = [_interp(*table[b], float(context)) for b in self.batches]
            return _interp(batches, per_batch, float(batch))

        return at

    def batch_times(self, prompt_tokens: list[int], output_tokens: list[float]) -> tuple[float, list[float], float]:
        """(ttft, finish time of each member, batch end) from the batch start, in seconds.

        Prompts are padded to the longest; a decode step is priced at the context halfway through
        the longest answer. The first token comes out of the prefill.
        """
        b = len(prompt_tokens)
        ctx = max(prompt_tokens) if prompt_tokens else 1
        longest = max(output_tokens) if output_tokens else 1
        pre = self.prefill(b, bucket(ctx))
        step = self.step(b, bucket(ctx + longest / 2))
        finishes = [pre + max(n - 1, 0) * step for n in output_tokens]
        return pre, finishes, pre + max(longest - 1, 0) * step

    def service_s(self, prompt_tokens: int, output_tokens: float, concurrency: int = 1) -> float:
        """A request's prefill (alone) plus its decode steps, each shared with ``concurrency - 1``
        others (1: a batch of one, as ``batch_times`` prices it)."""
        pre = self.prefill(1, bucket(prompt_tokens))
        return pre + max(output_tokens - 1, 0) * self.step(concurrency, bucket(prompt_tokens + output_tokens / 2))


def bucket(context: float) -> int:
    """Coarse contexts (16-token steps) keep the memo small."""
    return int(context) // 16 * 16 + 16
