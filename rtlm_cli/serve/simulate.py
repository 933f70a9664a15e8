"""Discrete-event simulation of a replay: the scheduler of the real executor, a clock that jumps.

A batch lasts as its worker's timing table says for its members' true output lengths. As with the
real executor (transformers' ``generate`` returns a batch at once), every member's response is
complete when the batch is: a batch lasts as long as its longest member, which is why alike
requests are consolidated. Each member's own last token is kept as ``last_token_s``. Events at the same
instant are taken together (batch completions before arrivals, then by sequence number) before
any worker is given work, so the outcome does not depend on heap internals. No torch here.
"""

from __future__ import annotations

import heapq

from rtlm_cli.formats.run import record
from rtlm_cli.serve.scheduling.request import Request
from rtlm_cli.serve.scheduling.scheduler import Scheduler

FINISH, ARRIVAL = 0, 1  # the tie-break at equal times: completions first


def simulate(requests: list[Request], scheduler: Scheduler) -> list[dict]:
    """Run every request to completion; one record per request, in request order."""
    events: list[tuple[float, int, int, object]] = []
    seq = 0
    for r in requests:
        events.append((r.arrival_s, ARRIVAL, seq, r))
        seq += 1
    heapq.heapify(events)
    idle = sorted(w.wid for w in scheduler.workers)
    workers = {w.wid: w for w in scheduler.workers}
    records: dict[int, dict] = {}
    batch_id = 0
    while events:
        now = events[0][0]
        while events and events[0][0] == now:
            _, kind, _, payload = heapq.heappop(events)
            if kind == ARRIVAL:
                scheduler.arrive(payload, now)
            else:
                scheduler.finished(workers[payload], now)
                idle.append(payload)
        idle.sort()
        still_idle = []
        for wid in idle:
            w = workers[wid]
            batch = scheduler.next_batch(w, now)
            if not batch:
                still_idle.append(wid)
                continue
            true = [r.true_tokens if r.true_tokens is not None else max(round(r.predicted_tokens), 1) for r in batch]
            ttft, finishes, end = w.cost.batch_times([r.prompt_tokens for r in batch], true)
            for r, n, fin in zip(batch, true, finishes):
                records[r.rid] = record(r, start_s=now, first_token_s=now + ttft, last_token_s=now + fin, finish_s=now + end,
                                        worker=w.name, batch_id=batch_id, batch_size=len(batch), output_tokens=n)
            heapq.heappush(events, (now + end, FINISH, seq, wid))
            seq += 1
            batch_id += 1
        idle = still_idle
    return [records[r.rid] for r in requests]

