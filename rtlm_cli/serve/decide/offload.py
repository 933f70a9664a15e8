"""Strategic offloading: which waiting request a worker slower than the fastest takes, if any.

Slower workers take work only while the fast ones are congested. Which request depends on what a
request holds there:

- Static workers (the hf executor's batches; RT-LM's rule): the longest, most uncertain request,
  and only if it would finish sooner on the slow worker than behind the fast workers' backlog, all
  priced at batch 1. A long request in a static batch holds the whole batch, so moving it away
  frees the fast workers' batches from it.
- Serving engines (per-slot dispatch, ``--dispatch gateway``), where a long request holds one slot
  rather than a batch and the slow backend's value is its capacity: the request whose move saves
  the most waiting in all, among those that would finish no later there, and, once the fast
  backends alone are overloaded, the one that saves the most even if it does not pay for itself.
  Why RT-LM's rule was replaced there: docs/benchmarks.md, "Two heterogeneous backends".

It reads the waiting requests through the decision core's ``QueueView`` and never a clock: ``now``
is given. It only chooses; the core takes the chosen request out of the queue.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections import deque

from rtlm_cli.serve.decide.backend import Backend
from rtlm_cli.serve.decide.policies import Policy
from rtlm_cli.serve.decide.request import Request


class Offloader:
    WINDOW = 64  # per-slot offloading weighs this many of the first waiting requests in priority order
    LOAD_WINDOW = 256  # and reads the fast side's load off this many latest arrivals (and ends)
    OVERLOAD = 1.0  # at or above this load on the fast side alone, the slow backends are needed

    def __init__(self, policy: Policy, backends: list[Backend], fast: set[int], queue):
        """``fast``: the ids of the fastest backends; ``queue``: the core's ``QueueView``."""
        self.policy, self.backends, self.fast, self.queue = policy, backends, fast, queue
        fast_backends = [b for b in backends if b.bid in fast]
        self.fast_cost = min(fast_backends, key=lambda b: b.bid).cost
        slots = [1 if b.static else b.inflight for b in fast_backends]
        self.fast_k, self.fast_slots = max(slots), sum(slots)
        self.by_size: list[tuple[float, int]] = []  # longest, most uncertain first (static workers)
        self.recent: deque[tuple[float, float]] = deque()  # (arrival, its work on the fast side)
        self.recent_work = 0.0
        self.lengths: deque[tuple[float, float]] = deque()  # (expected, realised) tokens of the latest ends
        self.lengths_sum = [0.0, 0.0]

    # -- what it is told -------------------------------------------------------------------------
    def arrived(self, req: Request, now: float) -> None:
        heapq.heappush(self.by_size, (-req.predicted_service_s * (1.0 + req.uncertainty), req.rid))
        work = self.fast_cost.service_s(req.prompt_tokens, self.policy.size(req), self.fast_k) / self.fast_slots
        self.recent.append((now, work))
        self.recent_work += work
        if len(self.recent) > self.LOAD_WINDOW:
            self.recent_work -= self.recent.popleft()[1]

    def ended(self, req: Request, output_tokens: int) -> None:
        """A request finished with ``output_tokens``: how the expected lengths come out."""
        pair = (self.policy.size(req), float(output_tokens))
        self.lengths.append(pair)
        self.lengths_sum = [self.lengths_sum[0] + pair[0], self.lengths_sum[1] + pair[1]]
        if len(self.lengths) > self.LOAD_WINDOW:
            old = self.lengths.popleft()
            self.lengths_sum = [self.lengths_sum[0] - old[0], self.lengths_sum[1] - old[1]]

    # -- what it reads ---------------------------------------------------------------------------
    def length_bias(self) -> float:
        """Realised over expected tokens of the latest requests that finished (1 until 32 have)."""
        if len(self.lengths) < 32 or self.lengths_sum[0] <= 0:
            return 1.0
        return self.lengths_sum[1] / self.lengths_sum[0]

    def fast_load(self) -> float | None:
        """The load the latest arrivals put on the fast backends alone: their work there (each
        request's service at those backends' concurrency, spread over all their slots) per second
        of arrivals, their expected lengths scaled by how the latest ended ones came out
        (``length_bias``); at 1 they cannot keep up by themselves. None until 32 have arrived."""
        if len(self.recent) < 32 or self.recent[-1][0] <= self.recent[0][0]:
            return None
        first = self.recent[0]
        return self.length_bias() * (self.recent_work - first[1]) / (self.recent[-1][0] - first[0])

    # -- what it decides -------------------------------------------------------------------------
    def for_batch(self, backend: Backend, now: float) -> Request | None:
        """A static slow worker (RT-LM's rule): the longest, most uncertain request, if it would
        finish sooner there than behind the fast workers' backlog, all priced at batch 1."""
        fast = [b for b in self.backends if b.bid in self.fast]
        backlog = self._backlog(lambda r: self.fast_cost.service_s(r.prompt_tokens, r.predicted_tokens)) \
            / self.fast_slots + sum(max(b.busy_until - now, 0.0) for b in fast) / len(fast)
        while self.by_size:
            _, rid = self.by_size[0]
            if rid not in self.queue:
                heapq.heappop(self.by_size)
                continue
            req = self.queue.get(rid)
            here = backend.cost.service_s(req.prompt_tokens, req.predicted_tokens)
            there = backlog + self.fast_cost.service_s(req.prompt_tokens, req.predicted_tokens)
            if here < there:
                heapq.heappop(self.by_size)
                return req
            return None
        return None

    def for_slot(self, backend: Backend, now: float) -> Request | None:
        """A free slot of a slow serving engine, only while every live fast slot is taken: of the
        first ``WINDOW`` waiting requests in priority order, the one whose move there saves the
        most waiting in all, among those that would finish no later there than behind the fast
        engines. Behind them a request waits for the ones ahead of it to drain through all their
        slots, and moving it spares each one behind it its share of a slot. Both sides are priced at
        the concurrency they would run at (a serving engine's step slows as it fills): here its
        requests in flight plus this one, there their slots full. When the fast side alone is
        overloaded (``fast_load`` >= ``OVERLOAD``), the slow engines' capacity is needed, not only
        their help in a burst: the slot then takes the request that saves the most, even one that
        would finish later there (waiting for a request that pays would let the queue grow until
        every request pays, and all wait that long)."""
        fast = [b for b in self.backends if b.bid in self.fast and not b.down]
        if not fast:
            return next(iter(self.queue.first(1)), None)  # the fast backends are gone: the next request in order
        if any(b.free for b in fast):
            return None  # a fast slot is free: not congested
        load = self.fast_load()
        needed = load is not None and load >= self.OVERLOAD
        window = self.queue.first(self.WINDOW)
        here_at, behind, ahead = backend.outstanding + 1, len(self.queue), 0.0
        best, best_saving = None, (-math.inf if needed else 0.0)
        for r in window:
            behind -= 1
            size = self.policy.size(r)
            there = self.fast_cost.service_s(r.prompt_tokens, size, self.fast_k)
            here = backend.cost.service_s(r.prompt_tokens, size, here_at)
            saving = ahead + there + behind * there / self.fast_slots - here
            if (needed or here <= ahead + there) and saving > best_saving + 1e-9:  # ties: the earlier
                best, best_saving = r, saving
            ahead += there / self.fast_slots
        return best

    def _backlog(self, service) -> float:
        """The waiting requests' total service (a sample of 64 scaled up when more wait)."""
        n = len(self.queue)
        if n < 64:
            return sum(service(r) for r in self.queue)
        sample = list(itertools.islice(self.queue, 64))
        return n * sum(service(r) for r in sample) / len(sample)
