"""rtlm's own queue in front of one or more serving engines: per-slot dispatch (``SlotQueue``).

Requests wait in the decision core (the policy's order, offloading, shedding) and at most
``inflight`` (K) are in flight per backend: a slot that frees — a stream ended — takes the next
request at once, so the backend that frees first gets it; on an arrival, free slots fill fastest
backend first. The engine's own queue stays (nearly) empty, so the order that matters is rtlm's,
and a request still waiting can be placed anywhere or shed. ``SlotQueue`` only decides: the
simulator (``sim/continuous.py``) drives it in simulated time, and ``serve/live/driver.py`` drives it
for the gateway service, the gateway replay and the Ray Serve capacity actor.

Every call that can change what runs returns one ``Output`` (after vLLM's ``SchedulerOutput``):
what to send where, what was shed, and until when a gathering window that the call opened holds
the queue. A driver acts on all three, so none can forget a step.

Gathering (``gather_s`` W, no knowledge of the future): a request that arrives while the gateway is
idle (nothing in flight, nothing waiting) opens a window of W seconds; what arrives in it joins the
queue, and at its end (``release``) the queue goes out in the policy's order. Without it a burst's
first K requests would go out in arrival order, as they came. Outside a window, free slots fill at
once.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from rtlm_cli.serve.decide.backend import Backend
from rtlm_cli.serve.decide.core import DecisionCore
from rtlm_cli.serve.decide.request import Request

PLACEMENTS = ("first-free", "least-loaded", "round-robin", "power-of-two")
GATHER_MS = 5.0  # the default gathering window (docs/benchmarks.md: how it was chosen)
Sends = list[tuple[Request, Backend]]


@dataclass(frozen=True)
class Output:
    """What one call of the slot queue decided: ``sends`` (request, backend) in order, ``shed``
    (requests taken out: their deadline can no longer be met) and ``hold_until`` (set when this call
    opened a gathering window: call ``release`` then)."""

    sends: tuple[tuple[Request, Backend], ...] = ()
    shed: tuple[Request, ...] = ()
    hold_until: float | None = None

    def __bool__(self) -> bool:
        return bool(self.sends or self.shed or self.hold_until is not None)


class SlotQueue:
    def __init__(self, core: DecisionCore, placement: str = "first-free", gather_s: float = 0.0):
        """``placement``: first-free (a freed slot, else the fastest free backend, takes the next
        request), least-loaded (each request to the free backend with the fewest in flight, the
        fastest among equals: a central capacity queue that spreads the load, so that each engine
        runs the smallest batches it can), round-robin (backends in turn, whatever their speed: a
        baseline) or power-of-two
        (Ray Serve's default router, modelled: two backends drawn at random, the one with fewer in
        flight takes the next request if it has a free slot; when neither has, a retry draws among
        those that have one); ``gather_s``: the gathering window (see the module)."""
        if placement not in PLACEMENTS:
            raise ValueError(f"placement is one of {PLACEMENTS}, got {placement!r}")
        if gather_s < 0:
            raise ValueError(f"gather_s must be >= 0, got {gather_s}")
        self.core, self.placement, self.turn, self.gather_s = core, placement, 0, gather_s
        self.rng = random.Random(0)  # power-of-two's draws: seeded, so a simulation repeats
        self.holding_until: float | None = None  # the end of an open gathering window
        self.backends = {b.bid: b for b in core.backends}
        self.order: list[Backend] = []
        self._rank()

    def _rank(self) -> None:
        # fast backends first, then by speed, then by id: where an arrival goes when several are free
        self.order = sorted(self.core.backends, key=lambda b: (b.bid not in self.core.fast, b.step_s, b.bid))

    def arrive(self, r: Request, now: float, fill: bool = True) -> Output:
        """``r`` joins rtlm's queue; free slots then take what the core gives them, unless a
        gathering window is open or this arrival opens one (``hold_until`` says till when: the
        driver calls ``release`` then), or ``fill`` is False: the simulator has more arrivals at
        this very instant, and takes them all before new work is given out (``sim.Event``)."""
        idle = not len(self.core.queue) and not any(b.outstanding for b in self.backends.values())
        self.core.add_request(r, now)
        if self.holding_until is not None:
            return Output()
        if self.gather_s > 0 and idle:
            self.holding_until = now + self.gather_s
            return Output(hold_until=self.holding_until)
        return self.fill(now) if fill else Output()

    def release(self, now: float) -> Output:
        """The gathering window ends: what was gathered goes out in the policy's order."""
        self.holding_until = None
        return self.fill(now)

    def left(self, bid: int, now: float, req: Request, output_tokens: int | None = None) -> Output:
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

    def add_backend(self, backend: Backend, now: float) -> Output:
        """A backend joins (a replica started): its slots take what waits."""
        self.core.add_backend(backend)
        self.backends[backend.bid] = backend
        self._rank()
        return Output() if self.holding_until is not None else self.fill(now)

    def remove_backend(self, bid: int) -> None:
        """Backend ``bid`` is gone for good (a replica was stopped or died and Ray replaces it):
        what it held is forgotten, nothing more goes there."""
        self.core.remove_backend(bid)
        del self.backends[bid]
        self._rank()

    @property
    def live(self) -> int:
        return sum(not b.down for b in self.backends.values())

    def fill(self, now: float, first: int | None = None) -> Output:
        """Every free slot of a live backend takes the core's next request for it (and what the core
        shed on the way is said)."""
        if self.placement == "round-robin":
            sends = self._round_robin(now)
        elif self.placement == "power-of-two":
            sends = self._power_of_two(now)
        elif self.placement == "least-loaded":
            sends = self._one_at_a_time(now, lambda ring, free: min(free, key=lambda b: (b.outstanding, b.step_s, b.bid)))
        else:
            order = ([self.backends[first]] if first is not None else []) + [b for b in self.order if b.bid != first]
            sends = [(r, b) for b in order for r in self.core.schedule(b, now)]
        return Output(tuple(sends), tuple(self.core.take_shed()))

    def _one_at_a_time(self, now: float, pick, placed=None) -> Sends:
        """Placements that choose a backend per request: ``pick(ring, free)`` names the backend that
        takes the next one (``placed(ring, b)`` once it took it), until no live backend has a free
        slot or nothing waits."""
        out, ring, declined = [], sorted(self.backends.values(), key=lambda b: b.bid), set()
        while free := [b for b in ring if b.free and b.bid not in declined]:
            b = pick(ring, free)
            got = self.core.schedule(b, now, limit=1)
            if not got:  # nothing waits, or nothing worth this (slow) backend's slot: try the others
                declined.add(b.bid)
                continue
            if placed is not None:
                placed(ring, b)
            out.append((got[0], b))
        return out

    def _round_robin(self, now: float) -> Sends:
        def placed(ring, b):
            self.turn = (ring.index(b) + 1) % len(ring)

        return self._one_at_a_time(now, lambda ring, free: next(x for x in ring[self.turn:] + ring[:self.turn] if x in free),
                                   placed)

    def _power_of_two(self, now: float) -> Sends:
        def pick(ring, free):
            b = min(self.rng.sample(ring, min(2, len(ring))), key=lambda x: (x.outstanding, x.bid))
            # both full: Ray's router backs off and draws again; what it lands on is a free one
            return b if b in free else self.rng.choice(free)

        return self._one_at_a_time(now, pick)
