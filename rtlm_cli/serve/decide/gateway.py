"""rtlm's own queue in front of one or more serving engines: per-slot dispatch.

Requests wait in the decision core (the policy's order, offloading, shedding) and at most
``inflight`` (K) are in flight per backend: a slot that frees — a stream ended — takes the next
request at once, so the backend that frees first gets it; on an arrival, free slots fill fastest
backend first. The engine's own queue stays (nearly) empty, so the order that matters is rtlm's,
and a request still waiting can be placed anywhere or shed. ``Gateway`` only decides: the simulator
(``sim/continuous.py``), the replay over HTTP and the gateway service drive the same object.
"""

from __future__ import annotations

from rtlm_cli.serve.decide.backend import Backend
from rtlm_cli.serve.decide.core import DecisionCore
from rtlm_cli.serve.decide.request import Request

PLACEMENTS = ("first-free", "round-robin")
Sends = list[tuple[Request, Backend]]


class Gateway:
    def __init__(self, core: DecisionCore, placement: str = "first-free"):
        """``placement``: first-free (a freed slot, else the fastest free backend, takes the next
        request) or round-robin (backends in turn, whatever their speed: a baseline)."""
        if placement not in PLACEMENTS:
            raise ValueError(f"placement is one of {PLACEMENTS}, got {placement!r}")
        self.core, self.placement, self.turn = core, placement, 0
        self.backends = {b.bid: b for b in core.backends}
        # fast backends first, then by speed, then by id: where an arrival goes when several are free
        self.order = sorted(core.backends, key=lambda b: (b.bid not in core.fast, b.step_s, b.bid))

    def arrive(self, r: Request, now: float, fill: bool = True) -> Sends:
        """``r`` joins rtlm's queue; free slots then take what the core gives them, unless ``fill``
        is False: more requests arrive with it (a burst), and all of them should be in the queue
        before any is sent, or the first K of a burst go out in arrival order."""
        self.core.add_request(r, now)
        return self.fill(now) if fill else []

    def left(self, bid: int, now: float, req: Request, output_tokens: int | None = None) -> Sends:
        """``req`` left backend ``bid`` (finished with ``output_tokens``, or failed: None): its slot
        takes the next request first."""
        self.core.update(self.backends[bid], now, [req], [output_tokens])
        return self.fill(now, first=bid)

    def take_down(self, bid: int) -> None:
        """Backend ``bid`` died: nothing more is sent there."""
        self.backends[bid].down = True

    def bring_up(self, bid: int) -> None:
        """Backend ``bid`` is healthy again: it takes requests."""
        self.backends[bid].down = False

    @property
    def live(self) -> int:
        return sum(not b.down for b in self.backends.values())

    def fill(self, now: float, first: int | None = None) -> Sends:
        """Every free slot of a live backend takes the core's next request for it."""
        if self.placement == "round-robin":
            return self._round_robin(now)
        order = ([self.backends[first]] if first is not None else []) + [b for b in self.order if b.bid != first]
        return [(r, b) for b in order for r in self.core.schedule(b, now)]

    def _round_robin(self, now: float) -> Sends:
        out, ring = [], sorted(self.backends.values(), key=lambda b: b.bid)
        while True:
            free = [b for b in ring if b.free]
            if not free:
                return out
            b = next(x for x in ring[self.turn:] + ring[:self.turn] if x in free)
            got = self.core.schedule(b, now, limit=1)
            if not got:
                return out
            self.turn = (ring.index(b) + 1) % len(ring)
            out.append((got[0], b))
