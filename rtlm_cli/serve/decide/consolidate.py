"""Dynamic consolidation: which alike requests share a static worker's batch.

The batch size is at most the smallest that reaches (within 5%) the best throughput, prefill
included, that the worker's timing table shows up to ``max_batch`` for requests like the head one.
Policies that know lengths then fill the head's batch from the waiting requests of alike predicted
length (within ``alike_ratio``x of it), each time with the one that lengthens the batch least (its
expected price: padded prefill plus its longest answer, an expected one with a mixture predictor),
and only while the newcomer pays its way: joining lengthens the batch for every member and for
itself, (n + 1) x the growth, which must not exceed what a full batch of requests like the newcomer
would take to serve it later. Of the batches so formed around each of the first ``HEADS`` requests
in priority order, the one with the least expected price per member runs. Policies blind to
lengths batch the next requests in their order.
"""

from __future__ import annotations

import math

from rtlm_cli.serve.decide.backend import Backend
from rtlm_cli.serve.decide.policies import Policy
from rtlm_cli.serve.decide.request import Request


class Consolidator:
    HEADS = 4  # how many of the first requests in priority order may lead a batch

    def __init__(self, policy: Policy, max_batch: int, cap_tokens: float | None = None, alike_ratio: float = 4.0):
        self.policy, self.max_batch, self.cap_tokens = policy, max_batch, cap_tokens
        self.window = 4 * max_batch  # waiting requests weighed for a batch, in priority order
        self.alike_log_ratio = math.log(alike_ratio)
        self._limits: dict[tuple[int, int, int], int] = {}

    def batch(self, backend: Backend, head: Request, window: list[Request]) -> list[Request]:
        """The batch to run, from ``head`` and the next ``window`` requests in priority order."""
        if self.policy.groups_alike:
            return self._cheapest(backend, [head] + window)
        return [head] + window[: self.limit(backend, head) - 1]

    def limit(self, backend: Backend, head: Request) -> int:
        """The smallest batch within 5% of the best throughput the backend's timing table shows up
        to ``max_batch`` for requests like the head (its prompt and size): requests per second of
        a batch = b / (prefill(b, prompt) + size x step(b)). On a CPU, prefill grows with the batch
        and caps it; on a GPU, batching is nearly free and the limit is ``max_batch``."""
        ctx = int(head.prompt_tokens) // 64 * 64 + 64
        size = int(self.policy.size(head)) // 32 * 32 + 32
        key = (backend.bid, ctx, size)
        if key not in self._limits:
            cost = backend.cost
            sizes = sorted({1, self.max_batch} | {b for b in cost.batches if b <= self.max_batch})
            rate = {b: b / (cost.prefill(b, ctx) + size * cost.step(b, ctx + size // 2)) for b in sizes}
            best = max(rate.values())
            self._limits[key] = min(b for b in sizes if rate[b] >= 0.95 * best)
        return self._limits[key]

    def _cheapest(self, backend: Backend, queue: list[Request]) -> list[Request]:
        """Among the batches led by each of the first ``HEADS`` requests in priority order (each
        filled by ``_alike``), the one with the least expected price per member; the first on ties.
        Near capacity the worker is never idle, so a cheaper batch per member is throughput, and a
        short queue is what keeps response times low. Priority still rules: only the first few may
        lead, and the first leads unless another's batch is strictly cheaper per member."""
        best: tuple[float, list[Request]] | None = None
        for i, head in enumerate(queue[: self.HEADS]):
            members, price = self._alike(backend, head, queue[:i] + queue[i + 1:], self.limit(backend, head))
            if best is None or price / len(members) < best[0]:
                best = (price / len(members), members)
        return best[1]

    def _alike(self, backend: Backend, head: Request, window: list[Request], limit: int) -> tuple[list[Request], float]:
        """The head's batch (head first) and its expected price, filled greedily: among the window's
        requests of a predicted length within ``alike_ratio``x of the head's, the one whose joining
        lengthens the batch least (a batch pays for its longest answer and, padded, for its longest
        prompt), while it pays its way: (n + 1) x the growth of the batch at most the price of a full
        batch of requests like the newcomer (what serving it later would take). With a mixture
        predictor the longest answer is an expected one, so a batch likely to run to the cap anyway
        takes members by their prompts, and one likely to end early keeps out a request likely to
        run to the cap."""
        h = math.log1p(self.policy.size(head))
        candidates = [r for r in window if abs(math.log1p(self.policy.size(r)) - h) <= self.alike_log_ratio]
        batch = [head]
        price = self._price(backend, batch)
        while len(batch) < limit and candidates:
            grown, i = min((self._price(backend, batch + [r]), i) for i, r in enumerate(candidates))
            if (len(batch) + 1) * (grown - price) > self._price(backend, [candidates[i]] * limit):
                break
            batch.append(candidates.pop(i))
            price = grown
        return batch, price

    def _price(self, backend: Backend, members: list[Request]) -> float:
        """Seconds a batch of these members takes (padded prefill, then its longest answer)."""
        longest = self.policy.longest(members, self.cap_tokens)
        return backend.cost.batch_times([r.prompt_tokens for r in members], [longest] * len(members))[2]
