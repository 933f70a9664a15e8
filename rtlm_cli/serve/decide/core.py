"""The decision core: one object, driven alike by the simulator, rtlm's executors and the gateway.

Its interface, after vLLM v1's scheduler (``add_request``, ``schedule()``, ``update_from_output()``):

- ``add_request(request, now)``: a request arrives and waits in the policy's order.
- ``schedule(backend, now)``: what a backend that has room runs now. A static hf worker gets its
  next batch; a serving engine gets as many requests as it has free slots (at most ``inflight``);
  under direct dispatch (no limit) every waiting request goes at once, each sent with
  ``priority(request)``, and the engine orders its own queue.
- ``update(backend, now, left, output_tokens)``: requests left a backend (finished, failed or
  rejected); a static worker's batch leaves whole.

It never reads a clock: ``now`` is given. Offloading and the gateway read the waiting requests
through ``queue`` (a ``QueueView``), never the core's own fields.

- Ordering: the policy's static key, in a heap (lazy deletion).
- Dynamic consolidation (``max_batch`` > 1, static workers): ``consolidate.Consolidator``.
- Strategic offloading (``offload``): backends slower than the fastest take a request only when
  the fast ones are congested; which one is ``offload.Offloader``'s to say.
- Shedding (``shed``, serving engines): a request that can no longer meet its deadline on the
  backend asking is taken out (``take_shed``) instead of being served late. It is priced as it
  will run: its prefill, then its predicted tokens' decode steps shared with what that backend
  already runs (the timing table at that concurrency), times the backend's *pace* — how long its
  latest finished requests took against what the same table priced them at (``pace``) — so a
  backend slower than its table today, or one that runs full, sheds what it cannot serve in time.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections import deque
from collections.abc import Iterator, Sequence

from rtlm_cli.serve.decide.backend import Backend
from rtlm_cli.serve.decide.consolidate import Consolidator
from rtlm_cli.serve.decide.offload import Offloader
from rtlm_cli.serve.decide.policies import Policy
from rtlm_cli.serve.decide.request import Request

PRIORITY_ORDERS = ("lower-first", "higher-first")  # which integer priority an engine runs first
KEY_RESOLUTION = 1000  # keys become engine priorities at 1/1000 of their unit (ms for time-valued keys)
PACE_WINDOW = 32  # a backend's pace is read off this many of its latest finished requests
PACE_MIN = 8  # and is 1 (the table as it is) until this many have finished


class QueueView:
    """The waiting requests, read-only: how many, whether one waits, the first ``n`` in priority
    order, and all of them in the order they joined."""

    def __init__(self, waiting: dict[int, Request], heap: list[tuple[float, int]]):
        self._waiting, self._heap = waiting, heap

    def __len__(self) -> int:
        return len(self._waiting)

    def __contains__(self, rid: int) -> bool:
        return rid in self._waiting

    def __iter__(self) -> Iterator[Request]:
        return iter(self._waiting.values())

    def get(self, rid: int) -> Request:
        return self._waiting[rid]

    def first(self, n: int) -> list[Request]:
        """The first ``n`` waiting requests in priority order (entries of requests that left are
        dropped on the way; the order the heap gives is the same before and after)."""
        entries = []
        while self._heap and len(entries) < n:
            entry = heapq.heappop(self._heap)
            if entry[1] in self._waiting:
                entries.append(entry)
        for entry in entries:
            heapq.heappush(self._heap, entry)
        return [self._waiting[rid] for _, rid in entries]


class DecisionCore:
    def __init__(self, policy: Policy, backends: list[Backend], max_batch: int = 1, offload: bool = False,
                 cap_tokens: float | None = None, shed: bool = False, priority_order: str = "lower-first"):
        """``cap_tokens``: the token cap a mixture predictor's P(capped) refers to; ``priority_order``:
        which integer priority the engine runs first (vLLM: lower-first; SGLang: higher-first)."""
        if priority_order not in PRIORITY_ORDERS:
            raise ValueError(f"priority_order is one of {PRIORITY_ORDERS}, got {priority_order!r}")
        self.policy, self.backends = policy, backends
        self.sign = 1 if priority_order == "lower-first" else -1
        self.fast: set[int] = set()
        self._rank_speeds()
        self._by_key: list[tuple[float, int]] = []
        self._waiting: dict[int, Request] = {}
        self.queue = QueueView(self._waiting, self._by_key)
        self.shed = shed
        self._shed: list[Request] = []
        # With shedding: each request out on a serving engine (backend id, sent at, how many that
        # backend ran with it), and per backend its latest (realised, priced) service seconds.
        self._sent: dict[int, tuple[int, float, int]] = {}
        self._paces: dict[int, deque[tuple[float, float]]] = {}  # (realised, priced) s, the latest PACE_WINDOW
        self.consolidator = Consolidator(policy, max_batch, cap_tokens) if max_batch > 1 else None
        self.offloader = Offloader(policy, backends, self.fast, self.queue) if offload and len(backends) > 1 else None

    def _rank_speeds(self) -> None:
        """``fast``: the backends within 5% of the fastest (in place: offloading holds the set)."""
        fastest = min((b.step_s for b in self.backends), default=0.0)
        self.fast.clear()
        self.fast.update(b.bid for b in self.backends if b.step_s <= fastest * 1.05)

    # -- the interface ---------------------------------------------------------------------------
    def add_backend(self, backend: Backend) -> None:
        """A backend joins (a Ray Serve replica that started); it takes requests at once."""
        self.backends.append(backend)
        self._rank_speeds()

    def remove_backend(self, bid: int) -> Backend:
        """A backend is gone for good (a replica Ray stopped): nothing more goes there, and what it
        held is no longer counted anywhere."""
        backend = next(b for b in self.backends if b.bid == bid)
        self.backends.remove(backend)
        self._rank_speeds()
        for rid in [rid for rid, sent in self._sent.items() if sent[0] == bid]:
            del self._sent[rid]
        self._paces.pop(bid, None)
        return backend

    def add_request(self, req: Request, now: float) -> None:
        self._waiting[req.rid] = req
        heapq.heappush(self._by_key, (self.policy.key(req), req.rid))
        if self.offloader:
            self.offloader.arrived(req, now)

    def schedule(self, backend: Backend, now: float, limit: int | None = None) -> list[Request]:
        """What ``backend`` runs now: its next batch (a static worker, idle), up to its free slots
        (a serving engine; at most ``limit``), or everything waiting (direct dispatch). Each request
        handed out is counted in ``backend.outstanding`` until ``update`` says it left."""
        if backend.static:
            return self._next_batch(backend, now) if backend.free else []
        out = []
        while self._waiting and (backend.free is None or backend.free > 0) and (limit is None or len(out) < limit):
            req = self._next_for_slot(backend, now)
            if req is None:
                break
            backend.outstanding += 1
            if self.shed:
                self._sent[req.rid] = (backend.bid, now, self._running(backend, backend.outstanding))
            out.append(req)
        return out

    def priority(self, req: Request) -> int | None:
        """The engine priority ``req`` is sent with under direct dispatch: the policy's key at
        1/``KEY_RESOLUTION`` of its unit, in the engine's order; None for a policy that keeps arrival
        order (the engine's own FCFS)."""
        if not self.policy.reorders:
            return None
        return self.sign * math.floor(self.policy.key(req) * KEY_RESOLUTION)

    def update(self, backend: Backend, now: float, left: Sequence[Request],
               output_tokens: Sequence[int | None] = ()) -> None:
        """``left`` left ``backend`` (a static worker: its whole batch); ``output_tokens`` of those
        that finished (None for the others) tell offloading how expected lengths come out."""
        backend.outstanding = max(backend.outstanding - len(left), 0)
        if backend.static:
            backend.busy_until = now
        for req, tokens in itertools.zip_longest(left, output_tokens[:len(left)]):
            if self.offloader and tokens is not None:
                self.offloader.ended(req, tokens)
            sent = self._sent.pop(req.rid, None)  # every one that left: none is kept behind
            if sent is not None and tokens:
                self._paces.setdefault(backend.bid, deque(maxlen=PACE_WINDOW)).append(
                    (now - sent[1], backend.cost.service_s(req.prompt_tokens, tokens, sent[2])))

    def withdraw(self, rid: int) -> bool:
        """A waiting request leaves the queue unserved (its client went away); False if it was not
        waiting (already handed out, or never added)."""
        return self._waiting.pop(rid, None) is not None  # its heap entry is skipped when reached

    def pace(self, backend: Backend) -> float:
        """How long ``backend``'s latest finished requests took against what its timing table priced
        them at (their prompt and realised tokens, at the concurrency each was sent into): above 1
        it runs slower than its table. 1 until ``PACE_MIN`` have finished; kept only with ``shed``."""
        window = self._paces.get(backend.bid, ())
        if len(window) < PACE_MIN:
            return 1.0
        priced = sum(p for _, p in window)
        return sum(r for r, _ in window) / priced if priced > 0 else 1.0

    def take_shed(self) -> list[Request]:
        """The requests shed since the last call (their deadline could no longer be met)."""
        shed, self._shed = self._shed, []
        return shed

    # -- internals -------------------------------------------------------------------------------
    @staticmethod
    def _running(backend: Backend, outstanding: int) -> int:
        """How many run at once on ``backend`` with ``outstanding`` sent to it: at most its K."""
        return outstanding if backend.inflight is None else min(outstanding, backend.inflight)

    def _late(self, req: Request, backend: Backend, now: float) -> bool:
        """Would ``req``, sent to ``backend`` now, end past its deadline? Priced at the concurrency
        it would run at (what the backend holds, plus itself, at most its K) and the backend's pace."""
        if req.deadline_s is None:
            return False
        service = backend.cost.service_s(req.prompt_tokens, req.predicted_tokens,
                                         self._running(backend, backend.outstanding + 1))
        return now + self.pace(backend) * service > req.deadline_s

    def _take(self, req: Request) -> Request:
        del self._waiting[req.rid]  # its heap entry is left behind, skipped when reached
        return req

    def _pop_head(self) -> Request | None:
        """The first waiting request in priority order, taken out of the queue."""
        while self._by_key:
            _, rid = heapq.heappop(self._by_key)
            if rid in self._waiting:
                return self._take(self._waiting[rid])
        return None

    def _next_batch(self, backend: Backend, now: float) -> list[Request]:
        if not self._waiting:
            return []
        if self.offloader and backend.bid not in self.fast:
            req = self.offloader.for_batch(backend, now)
            batch = [self._take(req)] if req else []
        else:
            head = self._pop_head()
            batch = self._consolidate(backend, head) if head else []
        if batch:
            backend.outstanding += len(batch)
            _, _, end = backend.cost.batch_times([r.prompt_tokens for r in batch],
                                                 [self.policy.size(r) for r in batch])
            backend.busy_until = now + end
        return batch

    def _consolidate(self, backend: Backend, head: Request) -> list[Request]:
        if self.consolidator is None or self.consolidator.limit(backend, head) == 1:
            return [head]
        window = [self._take(r) for r in self.queue.first(self.consolidator.window)]  # their entries stay
        batch = self.consolidator.batch(backend, head, window)
        chosen = {r.rid for r in batch}
        for r in [head] + window:
            if r.rid not in chosen:  # back into the queue, same key
                self._waiting[r.rid] = r
                if r is head:  # the head's entry was popped
                    heapq.heappush(self._by_key, (self.policy.key(r), r.rid))
        return batch

    def _next_for_slot(self, backend: Backend, now: float) -> Request | None:
        """The request a free slot of ``backend`` takes now, or None. A slow backend (offloading)
        takes only an offload candidate; a request that can no longer meet its deadline there is
        shed (with ``shed``) and the next one is asked."""
        while self._waiting:
            if self.offloader and backend.bid not in self.fast:
                req = self.offloader.for_slot(backend, now)
                if req is not None:
                    self._take(req)
            else:
                req = self._pop_head()
            if req is None:
                return None
            if self.shed and self._late(req, backend, now):
                self._shed.append(req)
                continue
            return req
        return None
