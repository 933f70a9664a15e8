"""The decision point shared by the simulator and the real executor.

Three calls, nothing else: ``arrive(request, now)``, ``next_batch(worker, now)`` when a worker is
free, ``finished(worker, now)`` when its batch is done; in front of serving engines, which batch by
themselves, ``next_request(worker, now)`` fills one free slot instead of handing out a batch. It
never reads a clock: ``now`` is given.

- Ordering: the policy's static key, in a heap (lazy deletion).
- Dynamic consolidation (``max_batch`` > 1): the batch size is at most the smallest that reaches
  (within 5%) the best throughput, prefill included, that the worker's timing table shows up to
  ``max_batch`` for requests like the head one. Policies that know lengths then fill the head's
  batch from the waiting requests of alike predicted length (within ``alike_ratio``x of it), each
  time with the one that lengthens the batch least (its expected price: padded prefill plus its
  longest answer, an expected one with a mixture predictor), and only while the newcomer pays its
  way: joining lengthens the batch for every member and for itself, (n + 1) x the growth, which
  must not exceed what a full batch of requests like the newcomer would take to serve it later.
  Of the batches so formed around each of the first four requests in priority order, the one with
  the least expected price per member runs. Policies blind to lengths batch the next requests in
  their order.
- Strategic offloading (``offload``): workers slower than the fastest take a request only when
  the fast workers are congested. Static workers (RT-LM's rule): the longest, most uncertain one,
  and only if it would finish sooner there than behind the fast workers' backlog. Serving engines
  (per-slot dispatch), where a long request holds one slot rather than a whole batch: the request
  whose move saves the most waiting in all (its own and that of those behind it), only if it
  would finish no later there, unless the fast engines alone are overloaded; see ``_offload_slot``.
- Shedding (``shed``, per-slot dispatch): a request that can no longer meet its deadline on the
  worker asking is taken out (``self.shed``) instead of being served late.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from dataclasses import dataclass, field

from rtlm_cli.serve.costmodel import CostModel
from rtlm_cli.serve.scheduling.policies import Policy
from rtlm_cli.serve.scheduling.request import Request


@dataclass
class Worker:
    wid: int
    name: str
    cost: CostModel
    busy_until: float = 0.0
    running: list[Request] = field(default_factory=list)
    slots: int = 1  # requests it may hold at once: 1 batch for static workers, K for a serving engine
    in_flight: int = 0  # per-slot dispatch: requests sent to it and not yet ended (the gateway keeps it)
    down: bool = False  # per-slot dispatch: the backend died; nothing more goes there


class Scheduler:
    HEADS = 4  # consolidation: how many of the first requests in priority order may lead a batch
    def __init__(self, policy: Policy, workers: list[Worker], max_batch: int = 1, offload: bool = False,
                 window: int | None = None, alike_ratio: float = 4.0, cap_tokens: float | None = None,
                 shed: bool = False):
        self.policy = policy
        self.workers = workers
        self.max_batch = max_batch
        self.offload = offload and len(workers) > 1
        self.window = window or 4 * max_batch
        speed = [w.cost.step(1, 256) for w in workers]
        self.fast = {w.wid for w, s in zip(workers, speed) if s <= min(speed) * 1.05}
        self._by_key: list[tuple[float, int]] = []
        self._by_size: list[tuple[float, int]] = []  # longest, most uncertain first (offloading)
        self._waiting: dict[int, Request] = {}
        self._fast_ref = workers[min(self.fast)].cost
        self._limits: dict[tuple[int, int, int], int] = {}
        self.alike_log_ratio = math.log(alike_ratio)
        self.cap_tokens = cap_tokens
        self.shed_late = shed
        self.shed: list[Request] = []  # taken out: their deadline could no longer be met
        fast = [w for w in workers if w.wid in self.fast]
        self._fast_k, self._fast_slots = max(w.slots for w in fast), sum(w.slots for w in fast)
        self._recent: deque[tuple[float, float]] = deque()  # offloading: (arrival, its work on the fast side)
        self._recent_work = 0.0
        self._lengths: deque[tuple[float, float]] = deque()  # offloading: (expected, realised) tokens of the latest ends
        self._lengths_sum = [0.0, 0.0]

    # -- the interface ---------------------------------------------------------------------------
    def arrive(self, req: Request, now: float) -> None:
        self._waiting[req.rid] = req
        heapq.heappush(self._by_key, (self.policy.key(req), req.rid))
        if self.offload:
            heapq.heappush(self._by_size, (-req.predicted_service_s * (1.0 + req.uncertainty), req.rid))
            work = self._fast_ref.service_s(req.prompt_tokens, self._size(req), self._fast_k) / self._fast_slots
            self._recent.append((now, work))
            self._recent_work += work
            if len(self._recent) > self.LOAD_WINDOW:
                self._recent_work -= self._recent.popleft()[1]

    def next_batch(self, worker: Worker, now: float) -> list[Request]:
        if not self._waiting:
            return []
        if self.offload and worker.wid not in self.fast:
            req = self._offload_candidate(worker, now)
            batch = [req] if req else []
        else:
            batch = self._consolidate(worker, self._pop(self._by_key))
        for r in batch:
            self._waiting.pop(r.rid, None)
        worker.running = batch
        if batch:
            _, _, end = worker.cost.batch_times([r.prompt_tokens for r in batch], [self._size(r) for r in batch])
            worker.busy_until = now + end
        return batch

    def next_request(self, worker: Worker, now: float) -> Request | None:
        """Per-slot dispatch: the request a free slot of ``worker`` takes now, or None. A slow worker
        (offloading) takes only an offload candidate."""
        while self._waiting:
            if self.offload and worker.wid not in self.fast:
                req = self._offload_slot(worker, now)
            else:
                req = self._pop(self._by_key)
            if req is None:
                return None
            self._waiting.pop(req.rid)
            late = req.deadline_s is not None and now + worker.cost.service_s(req.prompt_tokens, req.predicted_tokens) > req.deadline_s
            if self.shed_late and late:
                self.shed.append(req)
                continue
            return req
        return None

    def finished(self, worker: Worker, now: float) -> None:
        worker.running = []
        worker.busy_until = now

    def ended(self, req: Request, output_tokens: int) -> None:
        """Per-slot dispatch: a request finished with ``output_tokens``. Offloading reads the fast
        side's load off expected lengths, scaled by how the latest ones came out (``length_bias``)."""
        if not self.offload:
            return
        pair = (self._size(req), float(output_tokens))
        self._lengths.append(pair)
        self._lengths_sum = [self._lengths_sum[0] + pair[0], self._lengths_sum[1] + pair[1]]
        if len(self._lengths) > self.LOAD_WINDOW:
            old = self._lengths.popleft()
            self._lengths_sum = [self._lengths_sum[0] - old[0], self._lengths_sum[1] - old[1]]

    def length_bias(self) -> float:
        """Realised over expected tokens of the latest requests that finished (1 until 32 have)."""
        if len(self._lengths) < 32 or self._lengths_sum[0] <= 0:
            return 1.0
        return self._lengths_sum[1] / self._lengths_sum[0]

    @property
    def queue_len(self) -> int:
        return len(self._waiting)

    # -- internals -------------------------------------------------------------------------------
    def _pop(self, heap) -> Request | None:
        while heap:
            _, rid = heapq.heappop(heap)
            if rid in self._waiting:
                return self._waiting[rid]
        return None

    def _size(self, r: Request) -> float:
        return self.policy.size(r)

    def _consolidate(self, worker: Worker, head: Request | None) -> list[Request]:
        if head is None:
            return []
        limit = self._batch_limit(worker, head)
        if limit == 1:
            return [head]
        self._waiting.pop(head.rid)  # hold it out while the window is drawn
        window = []
        while len(window) < self.window and (r := self._pop(self._by_key)) is not None:
            self._waiting.pop(r.rid)
            window.append(r)
        if self.policy.groups_alike:
            batch = self._cheapest(worker, [head] + window)
        else:  # a policy blind to lengths batches the next requests in its order, as they come
            batch = [head] + window[: limit - 1]
        chosen = {r.rid for r in batch}
        for r in [head] + window:
            self._waiting[r.rid] = r
            if r.rid not in chosen:  # back into the heap, same key
                heapq.heappush(self._by_key, (self.policy.key(r), r.rid))
        return batch

    def _cheapest(self, worker: Worker, queue: list[Request]) -> list[Request]:
        """Among the batches led by each of the first ``HEADS`` requests in priority order (each
        filled by ``_alike``), the one with the least expected price per member; the first on ties.
        Near capacity the worker is never idle, so a cheaper batch per member is throughput, and a
        short queue is what keeps response times low (what it buys: docs/benchmarks.md).
        Priority still rules: only the first few may lead, and the first leads unless another's
        batch is strictly cheaper per member."""
        best: tuple[float, list[Request]] | None = None
        for i, head in enumerate(queue[: self.HEADS]):
            members, price = self._alike(worker, head, queue[:i] + queue[i + 1:], self._batch_limit(worker, head))
            if best is None or price / len(members) < best[0]:
                best = (price / len(members), members)
        return best[1]

    def _alike(self, worker: Worker, head: Request, window: list[Request], limit: int) -> tuple[list[Request], float]:
        """The head's batch (head first) and its expected price, filled greedily: among the window's
        requests of a predicted length within ``alike_ratio``x of the head's, the one whose joining
        lengthens the batch least (a batch pays for its longest answer and, padded, for its longest
        prompt: on a CPU, prefill at 512 tokens costs ~5x prefill at 128), while it pays its way:
        (n + 1) x the growth of the batch (the n members wait that much longer, the newcomer waits
        for all of it) at most the price of a full batch of requests like the newcomer (what serving
        it later would take).
        With a mixture predictor the longest answer is an expected one, so a batch that is likely
        to run to the cap anyway takes members by their prompts, and one likely to end early keeps
        out a request likely to run to the cap."""
        h = math.log1p(self._size(head))
        candidates = [r for r in window if abs(math.log1p(self._size(r)) - h) <= self.alike_log_ratio]
        batch = [head]
        price = self._price(worker, batch)
        while len(batch) < limit and candidates:
            grown, i = min((self._price(worker, batch + [r]), i) for i, r in enumerate(candidates))
            if (len(batch) + 1) * (grown - price) > self._price(worker, [candidates[i]] * limit):
                break
            batch.append(candidates.pop(i))
            price = grown
        return batch, price

    def _price(self, worker: Worker, members: list[Request]) -> float:
        """Seconds a batch of these members takes (padded prefill, then its longest answer)."""
        longest = self.policy.longest(members, self.cap_tokens)
        return worker.cost.batch_times([r.prompt_tokens for r in members], [longest] * len(members))[2]

    def _batch_limit(self, worker: Worker, head: Request) -> int:
        """The smallest batch within 5% of the best throughput the worker's timing table shows up
        to ``max_batch`` for requests like the head (its prompt and size): requests per second of
        a batch = b / (prefill(b, prompt) + size x step(b)). On a CPU, prefill grows with the batch
        and caps it; on a GPU, batching is nearly free and the limit is ``max_batch``."""
        ctx = int(head.prompt_tokens) // 64 * 64 + 64
        size = int(self._size(head)) // 32 * 32 + 32
        key = (worker.wid, ctx, size)
        if key not in self._limits:
            sizes = sorted({1, self.max_batch} | {b for b in worker.cost.batches if b <= self.max_batch})
            rate = {b: b / (worker.cost.prefill(b, ctx) + size * worker.cost.step(b, ctx + size // 2)) for b in sizes}
            best = max(rate.values())
            self._limits[key] = min(b for b in sizes if rate[b] >= 0.95 * best)
        return self._limits[key]

    def _offload_candidate(self, worker: Worker, now: float) -> Request | None:
        """Static workers (RT-LM's rule): the longest, most uncertain request, if it would finish
        sooner on this slow worker than behind the fast workers' backlog, all priced at batch 1."""
        fast = [w for w in self.workers if w.wid in self.fast]
        slots = sum(w.slots for w in fast)
        backlog = self._backlog(lambda r: self._fast_ref.service_s(r.prompt_tokens, r.predicted_tokens)) / slots \
            + sum(max(w.busy_until - now, 0.0) for w in fast) / len(fast)
        while self._by_size:
            _, rid = self._by_size[0]
            if rid not in self._waiting:
                heapq.heappop(self._by_size)
                continue
            req = self._waiting[rid]
            here = worker.cost.service_s(req.prompt_tokens, req.predicted_tokens)
            there = backlog + self._fast_ref.service_s(req.prompt_tokens, req.predicted_tokens)
            if here < there:
                heapq.heappop(self._by_size)
                return req
            return None
        return None

    OFFLOAD_WINDOW = 64  # per-slot offloading weighs this many of the first requests in priority order
    LOAD_WINDOW = 256  # and reads the fast side's load off this many latest arrivals
    OVERLOAD = 1.0  # at or above this load on the fast side alone, the slow backends are needed

    def fast_load(self) -> float | None:
        """The load the latest arrivals put on the fast backends alone: their work there (each
        request's service at those backends' concurrency, spread over all their slots) per second
        of arrivals, their expected lengths scaled by how the latest ended ones came out
        (``length_bias``); at 1 they cannot keep up by themselves. None until 32 have arrived."""
        if len(self._recent) < 32 or self._recent[-1][0] <= self._recent[0][0]:
            return None
        first = self._recent[0]
        return self.length_bias() * (self._recent_work - first[1]) / (self._recent[-1][0] - first[0])

    def _offload_slot(self, worker: Worker, now: float) -> Request | None:
        """A free slot of a slow serving engine, only while every live fast slot is taken: of the
        first ``OFFLOAD_WINDOW`` waiting requests in priority order, the one whose move there saves
        the most waiting in all, among those that would finish no later there than behind the fast
        engines. Behind them a request waits for the ones ahead of it to drain through all their
        slots, and moving it spares each one behind it its share of a slot. Both sides are priced at
        the concurrency they would run at (a serving engine's step slows as it fills): here its
        requests in flight plus this one, there their slots full. When the fast side alone is
        overloaded (``fast_load`` >= ``OVERLOAD``), the slow engines' capacity is needed, not only
        their help in a burst: the slot then takes the request that saves the most, even one that
        would finish later there (waiting for a request that pays would let the queue grow until
        every request pays, and all wait that long)."""
        fast = [w for w in self.workers if w.wid in self.fast and not w.down]
        if not fast:
            return self._pop(self._by_key)  # the fast backends are gone: the next request in order
        if any(w.in_flight < w.slots for w in fast):
            return None  # a fast slot is free: not congested
        load = self.fast_load()
        needed = load is not None and load >= self.OVERLOAD
        window = []
        while self._by_key and len(window) < self.OFFLOAD_WINDOW:
            entry = heapq.heappop(self._by_key)
            if entry[1] in self._waiting:
                window.append(entry)
        here_at, behind, ahead = worker.in_flight + 1, len(self._waiting), 0.0
        best, best_saving = None, (-math.inf if needed else 0.0)
        for _, rid in window:
            r = self._waiting[rid]
            behind -= 1
            size = self._size(r)
            there = self._fast_ref.service_s(r.prompt_tokens, size, self._fast_k)
            here = worker.cost.service_s(r.prompt_tokens, size, here_at)
            saving = ahead + there + behind * there / self._fast_slots - here
            if (needed or here <= ahead + there) and saving > best_saving + 1e-9:  # ties: the earlier
                best, best_saving = r, saving
            ahead += there / self._fast_slots
        for entry in window:
            if best is None or entry[1] != best.rid:
                heapq.heappush(self._by_key, entry)
        return best

    def _backlog(self, service) -> float:
        """The waiting requests' total service (a sample of 64 scaled up when more wait)."""
        if len(self._waiting) < 64:
            return sum(service(r) for r in self._waiting.values())
        sample = list(self._waiting.values())[:64]
        return len(self._waiting) * sum(service(r) for r in sample) / len(sample)
