"""Static batches in simulated time: the decision core of rtlm's hf executor, a clock that jumps.

A batch lasts as its worker's timing table says for its members' true output lengths. As with the
real executor (transformers' ``generate`` returns a batch at once), every member's response is
complete when the batch is: a batch lasts as long as its longest member, which is why alike
requests are consolidated. Each member's own last token is kept as ``last_token_s``. Events at the
same instant are taken together (``Event`` order, then by sequence number) before any worker is
given work, so the outcome does not depend on heap internals.
"""

from __future__ import annotations

import heapq

from rtlm_cli.formats.run import record
from rtlm_cli.serve.decide.core import DecisionCore
from rtlm_cli.serve.decide.request import Request
from rtlm_cli.serve.sim import Event


def simulate_batches(requests: list[Request], core: DecisionCore) -> list[dict]:
    """Run every request to its end on the core's static workers; one record per request, in order."""
    events: list[tuple[float, int, int, object]] = []
    seq = 0
    for r in requests:
        events.append((r.arrival_s, Event.ARRIVED, seq, r))
        seq += 1
    heapq.heapify(events)
    backends = {b.bid: b for b in core.backends}
    idle = sorted(backends)
    records: dict[int, dict] = {}
    batch_id = 0
    while events:
        now = events[0][0]
        while events and events[0][0] == now:
            _, kind, _, payload = heapq.heappop(events)
            if kind == Event.ARRIVED:
                core.add_request(payload, now)
            else:
                bid, batch = payload
                core.update(backends[bid], now, batch)
                idle.append(bid)
        idle.sort()
        still_idle = []
        for bid in idle:
            b = backends[bid]
            batch = core.schedule(b, now)
            if not batch:
                still_idle.append(bid)
                continue
            true = [r.true_tokens if r.true_tokens is not None else max(round(r.predicted_tokens), 1) for r in batch]
            ttft, finishes, end = b.cost.batch_times([r.prompt_tokens for r in batch], true)
            for r, n, fin in zip(batch, true, finishes):
                records[r.rid] = record(r, start_s=now, first_token_s=now + ttft, last_token_s=now + fin,
                                        finish_s=now + end, backend=b.name, batch_id=batch_id, batch_size=len(batch),
                                        in_flight=len(batch), output_tokens=n)
            heapq.heappush(events, (now + end, Event.LEFT, seq, (bid, batch)))
            seq += 1
            batch_id += 1
        idle = still_idle
    return [records[r.rid] for r in requests]
