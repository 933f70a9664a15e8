"""Replays through serving engines over HTTP: one stream driver, two ways of sending.

- ``run_direct`` (``--dispatch direct``): every request is sent the moment it arrives, with the
  priority the decision core gives it; the engine orders its own queue. FCFS sends no priority, so
  the baseline is the engine's own FCFS.
- ``run_gateway`` (``--dispatch gateway``): rtlm's queue (``Gateway``) in front of one or more
  servers: a request is sent when a slot of a live backend is free (at most K per backend), and a
  stream's end frees its slot for the next request; an arrival at an idle gateway opens a gathering
  window (``--gather-ms``), as in the gateway service. A backend whose connection breaks is taken
  down: its in-flight requests are recorded failed, or sent once more to a live backend with
  ``retry_failed`` (counted in ``retries``); the others carry on. Shed requests are recorded
  ``shed``.

Each request is predicted in this process when it arrives (on the clock), then joins the core.
Ctrl-C or SIGTERM cancels the open streams, keeps every finished record and records the rest
cancelled. Rows carry the run format's columns (``start_s`` is the send, ``in_flight`` what its
backend held then) plus the stream's: ``priority``, ``retries``, ``itl_mean_s``, ``itl_max_s``,
``finish_reason`` and the server's own ``server_queue_s``, ``server_ttft_s`` when it reports them.
"""

from __future__ import annotations

import asyncio
import signal
import time

from rtlm_cli.formats.run import not_run, record
from rtlm_cli.serve.decide.backend import Backend
from rtlm_cli.serve.decide.core import DecisionCore
from rtlm_cli.serve.decide.gateway import Gateway
from rtlm_cli.serve.decide.request import Request

BROKEN = ("ClientConnectorError", "ServerDisconnectedError", "ClientOSError", "ClientPayloadError",
          "ConnectionResetError", "ConnectionRefusedError")  # the backend is gone, not one request


class StreamDriver:
    """Requests at their arrivals (seconds from the run's start), one asyncio task per stream, the
    dashboard, and the records; ``on_arrival(request)`` decides what is sent."""

    def __init__(self, requests: list[Request], core: DecisionCore, client, urls: dict[int, str], max_new_tokens: int,
                 predict=None, board=None, sink=None):
        """``sink(row)``: hears each record as it is made (the run writer's parts)."""
        self.requests, self.core, self.client, self.urls = requests, core, client, urls
        self.max_new_tokens, self.predict, self.board, self.sink = max_new_tokens, predict, board, sink
        self.records: dict[int, dict] = {}
        self.costs: dict[int, float] = {}
        self.tasks: set[asyncio.Task] = set()
        self.stop = asyncio.Event()
        self.arrived = 0
        self.t0 = time.perf_counter()

    def now(self) -> float:
        return time.perf_counter() - self.t0

    def keep(self, rid: int, row: dict) -> None:
        self.records[rid] = row
        if self.sink is not None:
            self.sink(row)

    def launch(self, coro) -> None:
        task = asyncio.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def arrive(self, r: Request) -> float:
        """A request arrived: its prediction is made now, on the clock; the time after it."""
        self.arrived += 1
        if self.predict is not None:
            self.costs[r.rid] = self.predict(r)
        return self.now()

    async def send(self, r: Request, backend: Backend, priority: int | None = None):
        """One request streamed to ``backend``: (the stream, when it was sent, what the backend held);
        a cancelled stream is recorded cancelled and re-raised."""
        url, sent, in_flight = self.urls[backend.bid], self.now(), backend.outstanding
        try:
            body = self.client.chat_body(r.prompt, self.max_new_tokens, r.temperature, r.top_p, r.sample_seed,
                                         priority=priority)
            return await self.client.stream(*body, url), sent, in_flight
        except asyncio.CancelledError:
            self.keep(r.rid, self.unrun(r, "cancelled", worker=url))
            raise

    def finished(self, r: Request, o, sent: float, backend: Backend, in_flight: int, priority: int | None,
                 retries: int) -> None:
        """The record of a stream that ended (finished or failed), from the server's answer."""
        itl = o.itl_s or [float("nan")]
        self.keep(r.rid, {
            **record(r, start_s=sent, first_token_s=sent + o.ttft_s, last_token_s=sent + o.e2e_s, finish_s=self.now(),
                     worker=self.urls[backend.bid], in_flight=in_flight, output_tokens=o.output_tokens, status=o.status,
                     ended=o.finish_reason == "stop" if o.status == "finished" else None, error=o.error),
            "prediction_cost_s": self.costs.get(r.rid, 0.0), "priority": priority, "retries": retries,
            "itl_mean_s": sum(itl) / len(itl), "itl_max_s": max(itl), "finish_reason": o.finish_reason,
            "server_queue_s": o.server.get("queue_time_s", float("nan")),
            "server_ttft_s": o.server.get("time_to_first_token_s", float("nan")),
        })

    def unrun(self, r: Request, status: str, error: str = "", worker: str = "") -> dict:
        return {**not_run(r, status, error=error, worker=worker), "prediction_cost_s": self.costs.get(r.rid, 0.0)}

    async def run(self, on_arrival) -> tuple[list[dict], bool]:
        """Every request at its arrival through ``on_arrival``, then until every record is in, the
        run is stopped, or nothing is in flight and nothing can be sent (every backend down)."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stop.set)
        watcher = asyncio.create_task(self._watch())
        try:
            async for r in at_arrivals(self.requests, self.now, self.stop):
                on_arrival(r)
            while len(self.records) < len(self.requests) and not self.stop.is_set():
                if not self.tasks:
                    for r in self.requests:
                        if r.rid not in self.records:
                            self.keep(r.rid, self.unrun(r, "failed", "every backend is down"))
                    break
                stopper = asyncio.create_task(self.stop.wait())
                await asyncio.wait(set(self.tasks) | {stopper}, return_when=asyncio.FIRST_COMPLETED)
                stopper.cancel()
        finally:
            for t in list(self.tasks) + [watcher]:
                t.cancel()
            await asyncio.gather(*self.tasks, watcher, return_exceptions=True)
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
        for r in self.requests:
            if r.rid not in self.records:
                self.keep(r.rid, self.unrun(r, "cancelled"))
        return [self.records[r.rid] for r in self.requests], self.stop.is_set()

    async def _watch(self) -> None:
        """The dashboard, once a second: rtlm's queue, each backend's in-flight count, the servers' own
        queues from their /metrics."""
        while self.board is not None:
            waiting = 0.0
            for url in set(self.urls.values()):
                waiting += (await self.client.gauges(url)).get("num_requests_waiting", 0.0)
            self.board.update(self.now(), self.arrived, len(self.core.queue),
                              {self.urls[b.bid]: b.outstanding for b in self.core.backends}, list(self.records.values()),
                              server={"num_requests_waiting": waiting})
            await asyncio.sleep(1.0)


async def at_arrivals(requests: list[Request], now, stop: asyncio.Event):
    """Each request at its arrival (seconds from the run's start, as ``now()`` counts them), in
    arrival order, until ``stop`` is set."""
    for r in sorted(requests, key=lambda r: (r.arrival_s, r.rid)):
        wait = r.arrival_s - now()
        if wait > 0:
            try:
                await asyncio.wait_for(stop.wait(), wait)
            except TimeoutError:
                pass
        if stop.is_set():
            return
        yield r


def _tokens(o) -> int | None:
    return o.output_tokens if o.status == "finished" else None


async def run_direct(driver: StreamDriver, backend: Backend) -> tuple[list[dict], bool]:
    """Direct dispatch: each request sent at its arrival, with ``core.priority`` (see the module)."""
    core = driver.core

    async def send(r: Request) -> None:
        priority = core.priority(r)
        o, sent, in_flight = await driver.send(r, backend, priority)
        driver.finished(r, o, sent, backend, in_flight, priority, o.retries)
        core.update(backend, driver.now(), [r], [_tokens(o)])

    def on_arrival(r: Request) -> None:
        now = driver.arrive(r)
        core.add_request(r, now)
        for q in core.schedule(backend, now):
            driver.launch(send(q))

    return await driver.run(on_arrival)


async def run_gateway(driver: StreamDriver, gateway: Gateway, retry_failed: bool = False) -> tuple[list[dict], bool]:
    """rtlm's queue in front of the servers (see the module)."""
    retried: set[int] = set()

    def launch(sends) -> None:
        for r, b in sends:
            driver.launch(send(r, b))
        for r in gateway.core.take_shed():
            driver.keep(r.rid, driver.unrun(r, "shed", f"shed at {driver.now():.3f} s: its deadline could no longer "
                                                       "be met"))

    async def send(r: Request, b: Backend) -> None:
        o, sent, in_flight = await driver.send(r, b)
        if o.status == "failed" and o.error.split(":")[0] in BROKEN:
            gateway.take_down(b.bid)
        if o.status == "failed" and retry_failed and r.rid not in retried and gateway.live:
            retried.add(r.rid)  # once more, to any live backend
            launch(gateway.left(b.bid, driver.now(), r))
            launch(arrive_gathering(gateway, r, driver.now(), driver.now, launch, driver.launch))
            return
        driver.finished(r, o, sent, b, in_flight, None, int(r.rid in retried) + o.retries)
        launch(gateway.left(b.bid, driver.now(), r, _tokens(o)))

    def on_arrival(r: Request) -> None:
        launch(arrive_gathering(gateway, r, driver.arrive(r), driver.now, launch, driver.launch))

    return await driver.run(on_arrival)


def arrive_gathering(gateway: Gateway, r: Request, now: float, clock, launch, spawn) -> list:
    """``gateway.arrive``; when this arrival opens a gathering window, a task (``spawn``) sleeps
    until its end and then ``launch``es what ``gateway.release`` sends. The sends to make now."""
    was_holding = gateway.holding_until is not None
    sends = gateway.arrive(r, now)
    if gateway.holding_until is not None and not was_holding:
        async def release_later() -> None:
            await asyncio.sleep(gateway.gather_s)
            launch(gateway.release(clock()))

        spawn(release_later())
    return sends
