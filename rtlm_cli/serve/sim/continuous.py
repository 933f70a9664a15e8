"""Serving engines with continuous batching in simulated time, and the two ways requests reach them.

- ``simulate_direct``: every request is sent to one engine the moment it arrives (after its
  prediction), with the priority the decision core gives it; the engine orders its own queue.
- ``simulate_gateway``: rtlm's slot queue (the gateway's decisions) holds the queue in front of one or more engines and sends a
  request when a slot is free (after its gathering window, when one opens: an arrival at the
  window's end still joins it). The engine whose next event comes first advances (a run of alike
  steps ends at a request's end, which frees a gateway slot; an ordinary step is at most one step
  long), never past the next arrival; a request reaches its engine when the gateway sends it.

Ties follow ``sim.Event``: at equal times, requests leaving an engine are taken before arrivals.
"""

from __future__ import annotations

import math

from rtlm_cli.formats.run import not_run
from rtlm_cli.serve.costmodel import CostModel
from rtlm_cli.serve.decide.backend import Backend
from rtlm_cli.serve.decide.core import DecisionCore
from rtlm_cli.serve.decide.slots import Output, SlotQueue
from rtlm_cli.serve.decide.policies import Policy
from rtlm_cli.serve.decide.request import Request
from rtlm_cli.serve.sim.server import ServerLimits, SimulatedServer, StepCost


def _reached(r: Request) -> float:
    """When a request can be sent: its arrival plus its prediction, made on arrival."""
    return r.arrival_s + r.prediction_cost_s


def _outputs(server: SimulatedServer, rids: list[int]) -> list[int | None]:
    return [server.records[rid]["output_tokens"] if server.records[rid]["status"] == "finished" else None
            for rid in rids]


def simulate_direct(requests: list[Request], core: DecisionCore, backend: Backend, server: SimulatedServer) -> list[dict]:
    """Every request sent to ``server`` at its arrival with ``core.priority``; run to the end."""
    arrivals = sorted(requests, key=lambda r: (_reached(r), r.rid))
    by_rid = {r.rid: r for r in requests}
    i = 0
    while i < len(arrivals) or server.busy():
        while i < len(arrivals) and _reached(arrivals[i]) <= server.now:
            at = _reached(arrivals[i])
            core.add_request(arrivals[i], at)
            for r in core.schedule(backend, at):
                server.arrive(r, at, core.priority(r))
            i += 1
        next_arrival = _reached(arrivals[i]) if i < len(arrivals) else math.inf
        if not server.busy():
            server.now = next_arrival
            continue
        left = server.advance(next_arrival)
        if left:
            core.update(backend, server.now, [by_rid[rid] for rid in left], _outputs(server, left))
    return [server.records[r.rid] for r in requests]


def serve_directly(requests: list[Request], policy: Policy, cost: CostModel, limits: ServerLimits | None = None,
                   priority_order: str = "lower-first") -> tuple[list[dict], SimulatedServer]:
    """``simulate_direct`` on one engine priced by ``cost``: (records in request order, the engine)."""
    backend = Backend(0, "engine", cost, inflight=None)
    core = DecisionCore(policy, [backend], priority_order=priority_order)
    server = SimulatedServer(limits or ServerLimits(), StepCost(cost), priority_order=priority_order)
    return simulate_direct(requests, core, backend, server), server


def simulate_gateway(requests: list[Request], gateway: SlotQueue, servers: dict[int, SimulatedServer]) -> list[dict]:
    """The slot queue in front of simulated engines (``servers``: backend id -> engine); one record per
    request, in request order. Every request available at one instant joins the queue before any
    is sent (a burst is ordered whole)."""
    arrivals = sorted(requests, key=lambda r: (_reached(r), r.rid))
    by_rid = {r.rid: r for r in requests}
    records: dict[int, dict] = {}
    i = 0

    def left(server: SimulatedServer, rids: list[int]) -> None:
        for rid, tokens in zip(rids, _outputs(server, rids)):
            send(gateway.left(server.bid, server.now, by_rid[rid], tokens), server.now)

    def send(out: Output, now: float) -> None:
        for r, b in out.sends:
            server = servers[b.bid]
            ended = []
            while server.busy() and server.now < now:  # mid-run: it takes the request at a step boundary
                ended += server.advance(now)            # at or after ``now``, never before it was sent
            if not server.busy():
                server.now = max(server.now, now)
            server.arrive(r, now)  # no priority: rtlm orders, the engine holds at most K
            left(server, ended)  # requests that ended on the way there free their slots then
        for r in out.shed:
            records[r.rid] = not_run(r, "shed", error=f"shed at {now:.3f} s: its deadline could no longer be met")

    while True:
        t_next = _reached(arrivals[i]) if i < len(arrivals) else math.inf
        if gateway.holding_until is not None and gateway.holding_until < t_next:  # nothing runs meanwhile
            now = gateway.holding_until
            send(gateway.release(now), now)
            continue
        events = [(s.next_event(t_next), bid) for bid, s in servers.items() if s.busy()]
        at, bid = min(events) if events else (math.inf, None)
        server = servers[bid] if bid is not None else None
        # an arrival goes first if it comes before the engine's next event ends, or at the instant
        # an ordinary step would start; at a run of steps' end, the requests leaving go first
        if server is None or t_next < at or (t_next == at == server.now):
            if t_next == math.inf:
                break
            i += 1
            more = i < len(arrivals) and _reached(arrivals[i]) <= t_next
            send(gateway.arrive(arrivals[i - 1], t_next, fill=not more), t_next)
            continue
        left(server, server.advance(t_next))
    for s in servers.values():
        records.update(s.records)
    return [records[r.rid] for r in requests]
