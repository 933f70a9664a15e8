"""``--dispatch gateway``: rtlm's own queue in front of one or more serving engines.

Requests wait in rtlm's ``Scheduler`` (the policy's order, offloading, shedding) and at most
``slots`` (``--inflight K``) are in flight per backend: a slot that frees — a stream ended — takes
the next request at once, so the backend that frees first gets it; on an arrival, free slots fill
fastest backend first. The engine's own queue stays (nearly) empty, so the order that matters is
rtlm's, and a request still waiting can be placed anywhere or shed. ``Gateway`` only decides: the
simulator (``simulate_gateway``, on continuous-batching engines) and the real executor
(``gateway_run.py``, over HTTP) drive the same object.
"""

from __future__ import annotations

import math

from rtlm_cli.formats.run import record
from rtlm_cli.serve.scheduling.request import Request
from rtlm_cli.serve.scheduling.scheduler import Scheduler, Worker


class Gateway:
    PLACEMENTS = ("first-free", "round-robin")

    def __init__(self, scheduler: Scheduler, workers: list[Worker], placement: str = "first-free"):
        """``placement``: first-free (a freed slot, else the fastest free backend, takes the next
        request) or round-robin (backends in turn, whatever their speed: a baseline)."""
        self.scheduler, self.placement, self.turn = scheduler, placement, 0
        self.by_id = {w.wid: w for w in workers}
        # fast backends first, then by speed, then by id: where an arrival goes when several are free
        self.order = sorted(workers, key=lambda w: (w.wid not in scheduler.fast, w.cost.step(1, 256), w.wid))

    def arrive(self, r: Request, now: float, fill: bool = True) -> list[tuple[Request, Worker]]:
        """``r`` joins rtlm's queue; free slots then take what the scheduler gives them, unless
        ``fill`` is False: more requests arrive at this instant (a burst), and all of them should
        be in the queue before any is sent, or the first K of a burst go out in arrival order."""
        self.scheduler.arrive(r, now)
        return self.fill(now) if fill else []

    def finished(self, wid: int, now: float, req: Request | None = None,
                 output_tokens: int | None = None) -> list[tuple[Request, Worker]]:
        """A stream on ``wid`` ended (finished or failed): its slot takes the next request first.
        A finished request's ``output_tokens`` tell the scheduler how the expected lengths come out."""
        self.by_id[wid].in_flight -= 1
        if req is not None and output_tokens is not None:
            self.scheduler.ended(req, output_tokens)
        return self.fill(now, first=wid)

    @property
    def in_flight(self) -> dict[int, int]:
        return {wid: w.in_flight for wid, w in self.by_id.items()}

    @property
    def down(self) -> set[int]:
        """Backends that died: nothing more is sent there."""
        return {wid for wid, w in self.by_id.items() if w.down}

    def take_down(self, wid: int) -> None:
        self.by_id[wid].down = True

    def fill(self, now: float, first: int | None = None) -> list[tuple[Request, Worker]]:
        """Every free slot of a live backend takes the scheduler's next request for it."""
        out = []
        if self.placement == "round-robin":
            return self._round_robin(now)
        order = ([self.by_id[first]] if first is not None else []) + [w for w in self.order if w.wid != first]
        for w in order:
            while not w.down and w.in_flight < w.slots:
                r = self.scheduler.next_request(w, now)
                if r is None:
                    break
                w.in_flight += 1
                out.append((r, w))
        return out

    def _round_robin(self, now: float) -> list[tuple[Request, Worker]]:
        out, ring = [], sorted(self.by_id.values(), key=lambda w: w.wid)
        while True:
            free = [w for w in ring if not w.down and w.in_flight < w.slots]
            if not free:
                return out
            w = next((x for x in ring[self.turn:] + ring[:self.turn] if x in free))
            r = self.scheduler.next_request(w, now)
            if r is None:
                return out
            self.turn = (ring.index(w) + 1) % len(ring)
            w.in_flight += 1
            out.append((r, w))

    def take_shed(self) -> list[Request]:
        shed, self.scheduler.shed = self.scheduler.shed, []
        return shed


def shed_record(r: Request, now: float) -> dict:
    nan = float("nan")
    return record(r, start_s=nan, first_token_s=nan, last_token_s=nan, finish_s=nan, worker="", batch_id=-1,
                  batch_size=0, output_tokens=0, status="shed",
                  error=f"shed at {now:.3f} s: its deadline could no longer be met")


def simulate_gateway(requests: list[Request], gateway: Gateway, engines: dict) -> list[dict]:
    """The gateway in front of continuous-batching engines (``engines``: wid -> ``ContinuousEngine``),
    simulated: the engine whose next event comes first advances (a run of alike steps ends at a
    request's end, which frees a gateway slot; an ordinary step is at most one step long), never past
    the next arrival; a request reaches its engine when the gateway sends it (after its prediction)."""
    arrivals = sorted(requests, key=lambda r: (r.arrival_s + r.prediction_cost_s, r.rid))
    by_rid = {r.rid: r for r in requests}
    records: dict[int, dict] = {}
    i = 0

    def ended(engine, rid: int):
        rec = engine.records[rid]
        return gateway.finished(engine.wid, engine.now, by_rid[rid], rec["output_tokens"] if rec["status"] == "finished"
                                else None)

    def send(dispatched, now: float) -> None:
        for r, w in dispatched:
            engine = engines[w.wid]
            left = []
            while engine.busy() and engine.now < now:  # mid-run: it takes the request at a step boundary
                left += engine.advance(now)             # at or after ``now``, never before it was sent
            if not engine.busy():
                engine.now = max(engine.now, now)
            engine.arrive(r, at=now)
            for rid in left:  # requests that ended on the way there free their slots then
                send(ended(engine, rid), engine.now)
        for r in gateway.take_shed():
            records[r.rid] = shed_record(r, now)

    while True:
        t_next = arrivals[i].arrival_s + arrivals[i].prediction_cost_s if i < len(arrivals) else math.inf
        events = [(e.next_event(t_next), e.wid) for e in engines.values() if e.busy()]
        at, wid = min(events) if events else (math.inf, None)
        engine = engines[wid] if wid is not None else None
        if engine is None or t_next <= at:
            if t_next == math.inf:
                break
            i += 1  # every request available at this instant joins the queue before any is sent
            more = i < len(arrivals) and arrivals[i].arrival_s + arrivals[i].prediction_cost_s <= t_next
            send(gateway.arrive(arrivals[i - 1], t_next, fill=not more), t_next)
            continue
        for rid in engine.advance(t_next):
            send(ended(engine, rid), engine.now)
    for e in engines.values():
        records.update(e.records)
    return [records[r.rid] for r in requests]
