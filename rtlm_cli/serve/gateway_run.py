"""``--dispatch gateway`` for real: rtlm's queue (``Gateway``) in front of one or more servers over HTTP.

Each request is predicted in this process when it arrives (on the clock) and joins rtlm's queue;
the gateway sends it when a slot of a live backend is free (at most ``--inflight`` per backend), and
a stream's end frees its slot for the next request. A backend whose connection breaks is taken
down: its in-flight requests are recorded failed, or sent once more to a live backend with
``--retry-failed`` (counted in ``retries``); the others carry on. With ``--shed``, a request that can
no longer meet its deadline is recorded ``shed`` instead of being served late. Ctrl-C cancels the
open streams, keeps every finished record, and records the rest cancelled.
"""

from __future__ import annotations

import asyncio
import signal
import time

from rtlm_cli.formats.run import cancelled, record
from rtlm_cli.serve.direct import at_arrivals
from rtlm_cli.serve.gateway import Gateway, shed_record
from rtlm_cli.serve.scheduling.request import Request

COALESCE_S = 0.05  # the longest a burst's first requests wait for its rest to join the queue
BROKEN = ("ClientConnectorError", "ServerDisconnectedError", "ClientOSError", "ClientPayloadError",
          "ConnectionResetError", "ConnectionRefusedError")  # the backend is gone, not one request


async def run_gateway(requests: list[Request], gateway: Gateway, client, urls: dict[int, str], policy,
                      max_new_tokens: int, sign: int, predict=None, board=None,
                      retry_failed: bool = False) -> tuple[list[dict], bool]:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    records: dict[int, dict] = {}
    tasks: set[asyncio.Task] = set()
    retried: dict[int, int] = {}
    costs: dict[int, float] = {}
    t0 = time.perf_counter()
    state = {"arrived": 0}

    def now() -> float:
        return time.perf_counter() - t0

    def launch(dispatched) -> None:
        for r, w in dispatched:
            task = asyncio.create_task(one(r, w.wid))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        for r in gateway.take_shed():
            records[r.rid] = {**shed_record(r, now()), "prediction_cost_s": costs.get(r.rid, 0.0)}

    async def one(r: Request, wid: int) -> None:
        url = urls[wid]
        sent, in_flight = now(), gateway.by_id[wid].in_flight
        try:
            # no priority: rtlm's queue orders; the engine holds at most K and needs no priority scheduling
            o = await client.stream(*client.chat_body(r.prompt, max_new_tokens), url)
        except asyncio.CancelledError:
            records[r.rid] = cancelled(r, worker=url)
            raise
        if o.status == "failed" and o.error.split(":")[0] in BROKEN:
            gateway.take_down(wid)
        retries = retried.get(r.rid, 0) + o.retries
        if o.status == "failed" and retry_failed and r.rid not in retried and len(gateway.down) < len(urls):
            retried[r.rid] = 1
            launch(gateway.finished(wid, now()))
            launch(gateway.arrive(r, now()))
            return
        itl = o.itl_s or [float("nan")]
        records[r.rid] = {
            **record(r, start_s=sent, first_token_s=sent + o.ttft_s, last_token_s=sent + o.e2e_s, finish_s=now(),
                     worker=url, batch_id=-1, batch_size=in_flight, output_tokens=o.output_tokens, status=o.status,
                     ended=o.finish_reason == "stop" if o.status == "finished" else None, error=o.error),
            "prediction_cost_s": costs.get(r.rid, 0.0), "priority": None, "retries": retries,
            "itl_mean_s": sum(itl) / len(itl), "itl_max_s": max(itl), "finish_reason": o.finish_reason,
            "server_queue_s": o.server.get("queue_time_s", float("nan")),
            "server_ttft_s": o.server.get("time_to_first_token_s", float("nan")),
        }
        launch(gateway.finished(wid, now(), r, o.output_tokens if o.status == "finished" else None))

    async def watch() -> None:
        while board is not None:
            waiting = 0
            for url in set(urls.values()):
                waiting += int((await client.gauges(url)).get("num_requests_waiting", 0))
            board.update(now(), state["arrived"], gateway.scheduler.queue_len,
                         {urls[w]: n for w, n in gateway.in_flight.items()}, list(records.values()),
                         server={"num_requests_waiting": waiting})
            await asyncio.sleep(1.0)

    watcher = asyncio.create_task(watch())
    try:
        held = None  # when the requests held back for a burst's rest began to wait
        async for r, following in at_arrivals(requests, now, stop):
            state["arrived"] += 1
            if predict is not None:
                costs[r.rid] = predict(r)
            # a burst joins the queue whole before any of it is sent (for at most COALESCE_S)
            t = now()
            if held is None:
                held = t
            more = following is not None and following.arrival_s <= t and t - held < COALESCE_S
            launch(gateway.arrive(r, t, fill=not more))
            if not more:
                held = None
        while len(records) < len(requests) and not stop.is_set():
            if not tasks:  # nothing in flight and nothing can be sent: every backend is down
                for r in requests:
                    records.setdefault(r.rid, {**record(r, start_s=float("nan"), first_token_s=float("nan"),
                                                        last_token_s=float("nan"), finish_s=float("nan"), worker="",
                                                        batch_id=-1, batch_size=0, output_tokens=0, status="failed",
                                                        error="every backend is down"), "retries": retried.get(r.rid, 0)})
                break
            stopper = asyncio.create_task(stop.wait())
            await asyncio.wait(set(tasks) | {stopper}, return_when=asyncio.FIRST_COMPLETED)
            stopper.cancel()
    finally:
        for t in list(tasks):
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    for r in requests:
        if r.rid not in records:
            records[r.rid] = cancelled(r)
    return [records[r.rid] for r in requests], stop.is_set()
