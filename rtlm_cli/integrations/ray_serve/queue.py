"""rtlm's decision core as a central capacity queue for Ray Serve's replicas (no Ray in this module).

A *token* is a request's right to run on one replica: the queue hands tokens out in the policy's
order, at most ``max_ongoing_requests`` (K) per replica, each to the free replica with the fewest in
flight (``least-loaded``, the fastest among equals). It is the same ``DecisionCore`` and ``Gateway``
the simulator, the replays and ``rtlm gateway`` drive; here the backends are Ray Serve replicas
that come and go (``add_replica`` / ``remove_replica``), requests are named by Ray's internal request
id, and times are wall-clock seconds (``time.time()``), so a request keeps its arrival time when the
queue is restarted and it asks again.

``RtlmCapacityQueue`` (``actor.py``) wraps it in a Ray actor; this class only decides, so that the
rules are tested without Ray.
"""

from __future__ import annotations

import dataclasses
import itertools

from rtlm_cli.gateway.admit import Classed
from rtlm_cli.serve.costmodel import CostModel
from rtlm_cli.serve.decide.backend import Backend
from rtlm_cli.serve.decide.core import DecisionCore
from rtlm_cli.serve.decide.gateway import Gateway
from rtlm_cli.serve.decide.policies import make_policy
from rtlm_cli.serve.decide.request import Request

Sends = list[tuple[str, str]]  # (token, replica id): who runs where, decided now
FIELDS = {f.name for f in dataclasses.fields(Request)} - {"rid", "prompt_id", "prompt"}


class TokenQueue:
    def __init__(self, policy: str, cost: CostModel, placement: str = "least-loaded", gather_s: float = 0.0,
                 shed: bool = False):
        """``cost``: the replicas' timing table (replicas of one deployment are alike), which prices
        predicted service and, with ``shed``, deadlines."""
        self.cost = cost
        self.core = DecisionCore(Classed(make_policy(policy)), [], shed=shed)
        self.gateway = Gateway(self.core, placement=placement, gather_s=gather_s)
        self.rids = itertools.count()
        self.bids = itertools.count()
        self.replicas: dict[str, int] = {}  # replica id -> backend id
        self.names: dict[int, str] = {}  # backend id -> replica id
        self.waiting: dict[str, Request] = {}  # token -> its request, not yet placed
        self.placed: dict[str, tuple[Request, int]] = {}  # token -> (request, backend id), until released
        self.handed = 0  # tokens handed out, ever
        self.reclaimed = 0  # tokens taken back because their replica went away

    # -- replicas --------------------------------------------------------------------------------
    def add_replica(self, replica: str, capacity: int, now: float) -> Sends:
        """A replica that takes at most ``capacity`` requests at once joins; its slots take what waits."""
        if replica in self.replicas:
            return []
        bid = next(self.bids)
        self.replicas[replica], self.names[bid] = bid, replica
        return self._named(self.gateway.add_backend(Backend(bid, replica, self.cost, inflight=capacity), now))

    def remove_replica(self, replica: str) -> list[str]:
        """A replica is gone (stopped, or died and replaced): its tokens are reclaimed (their
        requests ended with it: Ray retries or fails them). The tokens reclaimed."""
        bid = self.replicas.pop(replica, None)
        if bid is None:
            return []
        del self.names[bid]
        self.gateway.remove_backend(bid)
        gone = [t for t, (_, b) in self.placed.items() if b == bid]
        for token in gone:
            del self.placed[token]
        self.reclaimed += len(gone)
        return gone

    # -- requests --------------------------------------------------------------------------------
    def arrive(self, token: str, fields: dict, now: float) -> Sends:
        """A request named ``token`` asks for a replica. ``fields``: what rtlm knows of it (see
        ``describe``; unknown keys are ignored, missing ones default: no prediction, arrival now).
        The tokens handed out now; ``gateway.holding_until`` set means a gathering window opened
        (the caller calls ``release_window`` at its end)."""
        known = {k: v for k, v in fields.items() if k in FIELDS}
        known.setdefault("arrival_s", now)
        rid = next(self.rids)
        r = Request(rid=rid, prompt_id=token, **known)  # a request's token is its prompt_id
        self.waiting[token] = r
        return self._named(self.gateway.arrive(r, now))

    def release_window(self, now: float) -> Sends:
        return self._named(self.gateway.release(now))

    def release(self, token: str, now: float, output_tokens: int | None = None) -> Sends:
        """The request named ``token`` ended (answered, failed or cancelled after it was placed): its
        slot takes the next request. An unknown token (already released, reclaimed, or handed out
        by a queue that has since restarted) changes nothing."""
        entry = self.placed.pop(token, None)
        if entry is None:
            return []
        r, bid = entry
        return self._named(self.gateway.left(bid, now, r, output_tokens))

    def withdraw(self, token: str) -> bool:
        """A waiting request leaves unserved (its caller went away); False if it was not waiting."""
        r = self.waiting.pop(token, None)
        if r is None:
            return False
        return self.core.withdraw(r.rid)

    def take_shed(self) -> list[str]:
        """Tokens of requests shed since the last call (their deadline could no longer be met)."""
        out = []
        for r in self.core.take_shed():
            self.waiting.pop(r.prompt_id, None)
            out.append(r.prompt_id)
        return out

    def in_flight(self) -> dict[str, tuple[int, int]]:
        """Each replica's (tokens out, capacity)."""
        return {name: (self.gateway.backends[bid].outstanding, self.gateway.backends[bid].inflight)
                for bid, name in self.names.items()}

    def _named(self, sends) -> Sends:
        out = []
        for r, b in sends:
            token = r.prompt_id
            del self.waiting[token]
            self.placed[token] = (r, b.bid)
            self.handed += 1
            out.append((token, self.names[b.bid]))
        return out


def describe(request: Request) -> dict:
    """What the queue needs of an admitted request (``gateway.admit.Admission``), as plain values
    that cross Ray's process boundaries: its prediction, size, class and deadline, not its text."""
    return {k: v for k, v in dataclasses.asdict(request).items() if k in FIELDS}
