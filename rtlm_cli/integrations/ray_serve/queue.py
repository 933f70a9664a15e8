"""rtlm's decision core as a central capacity queue for Ray Serve's replicas (no Ray in this module).

A *token* is a request's right to run on one replica: the queue hands tokens out in the policy's
order, at most ``max_ongoing_requests`` (K) per replica, each to the free replica with the fewest in
flight (``least-loaded``, the fastest among equals). It is the same ``DecisionCore`` and ``SlotQueue``
the simulator, the replays and ``rtlm gateway`` drive; here the backends are Ray Serve replicas
that come and go (``add_replica`` / ``remove_replica``), requests are named by Ray's internal request
id, and times are wall-clock seconds (``time.time()``), so a request keeps its arrival time when the
queue is restarted and it asks again.

It is driven by ``serve/live/driver.SlotDriver``, the one async driver the gateway service and the
gateway replay use: ``acquire`` waits in the policy's order and gives the replica's id (``SHED``: the
request was shed); a cancelled ``acquire`` leaves the queue. ``RtlmCapacityQueue`` (``actor.py``)
wraps it in a Ray actor; this module has no Ray in it, so that the rules are tested without Ray.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from collections.abc import Callable

from rtlm_cli.serve.costmodel import CostModel
from rtlm_cli.serve.decide.backend import Backend
from rtlm_cli.serve.decide.request import Request
from rtlm_cli.serve.live.driver import SlotDriver
from rtlm_cli.serve.queue import QueueConfig

SHED = ""  # what acquire gives a request shed by its deadline
FIELDS = {f.name for f in dataclasses.fields(Request)} - {"rid", "prompt_id", "prompt"}


class TokenQueue:
    def __init__(self, policy: str, cost: CostModel, placement: str = "least-loaded", gather_s: float = 0.0,
                 shed: bool = False, clock: Callable[[], float] = time.time):
        """``cost``: the replicas' timing table (replicas of one deployment are alike), which prices
        predicted service and, with ``shed``, deadlines; ``clock``: wall-clock seconds (injected in
        tests)."""
        self.cost, self.clock = cost, clock
        queue = QueueConfig(policy=policy, placement=placement, gather_ms=1000.0 * gather_s, shed=shed,
                            classes=True).validate()
        self.core = queue.build_core([])
        self.slots = queue.slot_queue(self.core)
        self.driver = SlotDriver(self.slots, clock, on_withdrawn=self._withdrawn)
        self.rids = itertools.count()
        self.bids = itertools.count()
        self.replicas: dict[str, int] = {}  # replica id -> backend id
        self.names: dict[int, str] = {}  # backend id -> replica id
        self.waiting: dict[str, Request] = {}  # token -> its request, not yet placed
        self.placed: dict[str, tuple[Request, int]] = {}  # token -> (request, backend id), until released
        self.handed = 0  # tokens handed out, ever
        self.reclaimed = 0  # tokens taken back because their replica went away
        self.cancelled = 0  # waiting requests whose caller went away

    # -- replicas --------------------------------------------------------------------------------
    def add_replica(self, replica: str, capacity: int) -> None:
        """A replica that takes at most ``capacity`` requests at once joins; its slots take what waits."""
        if replica in self.replicas:
            return
        bid = next(self.bids)
        self.replicas[replica], self.names[bid] = bid, replica
        self.driver.add_backend(Backend(bid, replica, self.cost, inflight=capacity))

    def remove_replica(self, replica: str) -> list[str]:
        """A replica is gone (stopped, or died and replaced): its tokens are reclaimed (their
        requests ended with it: Ray retries or fails them). The tokens reclaimed."""
        bid = self.replicas.pop(replica, None)
        if bid is None:
            return []
        del self.names[bid]
        self.slots.remove_backend(bid)
        gone = [t for t, (_, b) in self.placed.items() if b == bid]
        for token in gone:
            del self.placed[token]
        self.reclaimed += len(gone)
        return gone

    # -- requests --------------------------------------------------------------------------------
    async def acquire(self, token: str, fields: dict) -> str:
        """The replica the request named ``token`` runs on, once the policy's order reaches it
        (``SHED``: it was shed). ``fields``: what rtlm knows of it (see ``describe``; unknown keys are
        ignored, missing ones default: no prediction, arrival now). A cancelled call leaves the queue."""
        known = {k: v for k, v in fields.items() if k in FIELDS}
        known.setdefault("arrival_s", self.clock())
        r = Request(rid=next(self.rids), prompt_id=token, **known)  # a request's token is its prompt_id
        self.waiting[token] = r
        try:
            while True:
                backend = await self.driver.acquire(r)
                if backend is None:
                    return SHED
                if backend.bid in self.names:
                    break  # else its replica went away between the decision and now: ask again
        finally:
            self.waiting.pop(token, None)
        self.placed[token] = (r, backend.bid)
        self.handed += 1
        return self.names[backend.bid]

    def release(self, token: str, output_tokens: int | None = None) -> None:
        """The request named ``token`` ended (answered, failed or cancelled after it was placed): its
        slot takes the next request. An unknown token (already released, reclaimed, or handed out
        by a queue that has since restarted) changes nothing."""
        entry = self.placed.pop(token, None)
        if entry is not None:
            r, bid = entry
            self.driver.release(self.slots.backends[bid], r, output_tokens)

    def _withdrawn(self, r: Request) -> None:
        self.cancelled += 1

    def in_flight(self) -> dict[str, tuple[int, int]]:
        """Each replica's (tokens out, capacity)."""
        return {name: (self.slots.backends[bid].outstanding, self.slots.backends[bid].inflight)
                for bid, name in self.names.items()}



def describe(request: Request) -> dict:
    """What the queue needs of an admitted request (``serve.admit.Admission``), as plain values
    that cross Ray's process boundaries: its prediction, size, class and deadline, not its text."""
    return {k: v for k, v in dataclasses.asdict(request).items() if k in FIELDS}
