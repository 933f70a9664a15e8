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
  the fast workers are congested; which one is ``offload.Offloader``'s to say.
- Shedding (``shed``, per-slot dispatch): a request that can no longer meet its deadline on the
  worker asking is taken out (``self.shed``) instead of being served late.
"""

from __future__ import annotations

import heapq
import math

from rtlm_cli.serve.scheduling.offload import Offloader
from rtlm_cli.serve.scheduling.policies import Policy
from rtlm_cli.serve.scheduling.request import Request
from rtlm_cli.serve.scheduling.worker import Worker

__all__ = ["Scheduler", "Worker"]


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
        self._waiting: dict[int, Request] = {}
        self._limits: dict[tuple[int, int, int], int] = {}
        self.alike_log_ratio = math.log(alike_ratio)
        self.cap_tokens = cap_tokens
        self.shed_late = shed
        self.shed: list[Request] = []  # taken out: their deadline could no longer be met
        self.offloader = Offloader(self) if self.offload else None

    # -- the interface ---------------------------------------------------------------------------
    def arrive(self, req: Request, now: float) -> None:
        self._waiting[req.rid] = req
        heapq.heappush(self._by_key, (self.policy.key(req), req.rid))
        if self.offloader:
            self.offloader.arrived(req, now)

    def next_batch(self, worker: Worker, now: float) -> list[Request]:
        if not self._waiting:
            return []
        if self.offloader and worker.wid not in self.fast:
            req = self.offloader.for_batch(worker, now)
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
            if self.offloader and worker.wid not in self.fast:
                req = self.offloader.for_slot(worker, now)
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
        """Per-slot dispatch: a request finished with ``output_tokens`` (offloading learns from it)."""
        if self.offloader:
            self.offloader.ended(req, output_tokens)

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
