"""``--dispatch direct``: every request goes to the serving engine the moment it arrives, carrying its
policy key as the request's integer ``priority``; the engine orders its own queue (vLLM: a heap on
(priority, arrival), lower first; a waiting request never evicts a running one).

The predictor runs here, in rtlm's process, when the request arrives, and its time counts in the
request's latency: the request is sent once its prediction is made. FCFS sends no priority at all,
so the baseline is the engine's own FCFS. A priority policy is checked first (``check_priorities``):
a server that refuses or ignores priorities is an error, never a run whose order means nothing.

Run rows carry the run format's columns (``start_s`` is the send; ``batch_id`` -1; ``batch_size``
the requests in flight at the send, itself included) plus the stream's: ``priority``, ``retries``,
``itl_mean_s``, ``itl_max_s``, ``finish_reason`` and the server's own ``server_queue_s``,
``server_ttft_s`` when it reports them.
"""

from __future__ import annotations

import asyncio
import signal
import time

from rtlm_cli.errors import RtlmError
from rtlm_cli.formats.run import cancelled, record
from rtlm_cli.serve.scheduling.request import Request

PRIORITY_FLAGS = "start vLLM with --scheduling-policy priority (SGLang: --enable-priority-scheduling)"


async def check_priorities(client, url: str, sign: int, probe: bool = True) -> None:
    """A request with a non-zero priority must be accepted, and (``probe``) honoured: with the server
    full, a later request of a more urgent priority must start before an earlier, less urgent one."""
    ok = await client.stream(*client.chat_body("Say OK.", 1, priority=sign), url)
    if ok.status != "finished" and not ok.error.startswith("HTTP 4"):
        raise RtlmError(f"the preflight request to {url} failed ({ok.error}): is the server still up?")
    if ok.status != "finished":
        raise RtlmError(f"{url} refused a request with a priority ({ok.error}): {PRIORITY_FLAGS}")
    if probe and await _order_probe(client, url, sign) is False:
        raise RtlmError(f"{url} accepts request priorities but serves in arrival order: {PRIORITY_FLAGS}")


async def _order_probe(client, url: str, sign: int) -> bool | None:
    """Fill the server until its /metrics shows a waiting request, then send a less urgent request
    and, 0.1 s later, a more urgent one: True when the urgent one starts first, False when the
    earlier one does, None when the server shows no queue (no /metrics): nothing to tell."""
    blockers: list[asyncio.Task] = []
    probes: list[asyncio.Task] = []
    try:
        for _ in range(1024):
            blockers.append(asyncio.create_task(client.stream(*client.tokens_body(list(range(100, 116)), 24), url)))
            await asyncio.sleep(0.05)
            gauges = await client.gauges(url)
            if not gauges:
                return None
            if gauges.get("num_requests_waiting", 0) >= 1:
                break
        late = asyncio.create_task(client.stream(*client.chat_body("Say A.", 2, priority=sign * 5), url))
        await asyncio.sleep(0.1)
        urgent = asyncio.create_task(client.stream(*client.chat_body("Say B.", 2, priority=sign * -5), url))
        probes = [late, urgent]
        done, _ = await asyncio.wait(probes, return_when=asyncio.FIRST_COMPLETED)
        if len(done) == 2:  # both within one tick: compare when each started to answer
            return urgent.result().ttft_s + 0.1 < late.result().ttft_s
        return urgent in done
    finally:
        for t in blockers + probes:
            t.cancel()
        await asyncio.gather(*blockers, *probes, return_exceptions=True)


async def at_arrivals(requests: list[Request], now, stop: asyncio.Event):
    """Each request at its arrival (seconds from the run's start, as ``now()`` counts them), in
    arrival order, until ``stop`` is set: (the request, the one arriving after it or None)."""
    order = sorted(requests, key=lambda r: (r.arrival_s, r.rid))
    for r, following in zip(order, order[1:] + [None]):
        wait = r.arrival_s - now()
        if wait > 0:
            try:
                await asyncio.wait_for(stop.wait(), wait)
            except TimeoutError:
                pass
        if stop.is_set():
            return
        yield r, following


async def run_direct(requests: list[Request], policy, client, url: str, max_new_tokens: int, sign: int,
                     predict=None, board=None) -> tuple[list[dict], bool]:
    """Send each request at its arrival (seconds from the run's start); (records in request order,
    interrupted). ``predict(request) -> seconds`` makes its prediction, on the clock."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    records: dict[int, dict] = {}
    state = {"in_flight": 0, "arrived": 0}
    t0 = time.perf_counter()

    def now() -> float:
        return time.perf_counter() - t0

    async def one(r: Request) -> None:
        cost = predict(r) if predict is not None else 0.0
        priority = policy.priority(r, sign)
        state["in_flight"] += 1
        in_flight, sent = state["in_flight"], now()
        try:
            o = await client.stream(*client.chat_body(r.prompt, max_new_tokens, priority=priority), url)
        except asyncio.CancelledError:
            records[r.rid] = {**cancelled(r, worker=url), "priority": priority}
            raise
        finally:
            state["in_flight"] -= 1
        itl = o.itl_s or [float("nan")]
        records[r.rid] = {
            **record(r, start_s=sent, first_token_s=sent + o.ttft_s, last_token_s=sent + o.e2e_s, finish_s=now(),
                     worker=url, batch_id=-1, batch_size=in_flight, output_tokens=o.output_tokens, status=o.status,
                     ended=o.finish_reason == "stop" if o.status == "finished" else None, error=o.error),
            "prediction_cost_s": cost, "priority": priority, "retries": o.retries,
            "itl_mean_s": sum(itl) / len(itl), "itl_max_s": max(itl), "finish_reason": o.finish_reason,
            "server_queue_s": o.server.get("queue_time_s", float("nan")),
            "server_ttft_s": o.server.get("time_to_first_token_s", float("nan")),
        }

    async def watch() -> None:
        while True:
            if board is not None:
                gauges = await client.gauges(url)
                board.update(now(), state["arrived"], int(gauges.get("num_requests_waiting", 0)),
                             {url: state["in_flight"]}, list(records.values()), server=gauges)
            await asyncio.sleep(1.0)

    watcher = asyncio.create_task(watch())
    tasks = []
    try:
        async for r, _ in at_arrivals(requests, now, stop):
            state["arrived"] += 1
            tasks.append(asyncio.create_task(one(r)))
        stopper = asyncio.create_task(stop.wait())
        pending = set(tasks) | {stopper}
        while pending - {stopper} and not stop.is_set():
            _, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    interrupted = stop.is_set()
    for r in requests:
        if r.rid not in records:
            records[r.rid] = cancelled(r, worker=url)
    return [records[r.rid] for r in requests], interrupted
