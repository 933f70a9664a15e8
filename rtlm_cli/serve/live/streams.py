"""Replays through serving engines over HTTP: one stream driver, two ways of sending.

- ``run_direct`` (``--dispatch direct``): every request is sent the moment it arrives, with the
  priority the decision core gives it; the engine orders its own queue. FCFS sends no priority, so
  the baseline is the engine's own FCFS.
- ``run_gateway`` (``--dispatch gateway``): rtlm's slot queue in front of one or more servers,
  driven by ``driver.SlotDriver`` exactly as the gateway service drives it: a request is sent when
  a slot of a live backend is free (at most K per backend), and a stream's end frees its slot for
  the next request; an arrival at an idle queue opens a gathering window (``--gather-ms``). A
  backend that is down (``upstream``: ``backend_down``) is taken out; a request that failed
  retryably (``Outcome.retryable``: before its first chunk) is sent once more to a live backend with
  ``retry_failed`` (counted in ``retries``); the others carry on. Shed requests are recorded
  ``shed``.

Each request is predicted in this process when it arrives (on the clock), then joins the core.
Ctrl-C or SIGTERM cancels the open streams, keeps every finished record and records the rest
cancelled. Rows are ``upstream.served_row``'s, as the gateway service writes them (``start_s`` is the send,
``in_flight`` what its backend held then), plus ``priority`` and ``prediction_cost_s``.
"""

from __future__ import annotations

import asyncio
import signal

from rtlm_cli.engines.upstream import BACKEND_DOWN, served_row
from rtlm_cli.formats.run import not_run
from rtlm_cli.serve.decide.backend import Backend
from rtlm_cli.serve.decide.core import DecisionCore
from rtlm_cli.serve.decide.request import Request
from rtlm_cli.serve.decide.slots import SlotQueue
from rtlm_cli.serve.live.driver import SlotDriver


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
        self.clock = client.upstream.clock  # the client's clock: its streams are timed on it too
        self.t0 = self.clock()

    def now(self) -> float:
        return self.clock() - self.t0

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
            self.keep(r.rid, self.unrun(r, "cancelled", backend=url))
            raise

    def finished(self, r: Request, o, sent: float, backend: Backend, in_flight: int, priority: int | None,
                 retries: int) -> None:
        """The record of a stream that ended (finished or failed), from the server's answer."""
        self.keep(r.rid, served_row(r, o, sent_s=sent, finish_s=self.now(), backend=self.urls[backend.bid],
                                    in_flight=in_flight, retries=retries, priority=priority,
                                    prediction_cost_s=self.costs.get(r.rid, 0.0)))

    def unrun(self, r: Request, status: str, error: str = "", backend: str = "") -> dict:
        return {**not_run(r, status, error=error, backend=backend), "prediction_cost_s": self.costs.get(r.rid, 0.0)}

    async def run(self, on_arrival, stalled=None) -> tuple[list[dict], bool]:
        """Every request at its arrival through ``on_arrival``, then until every record is in, the
        run is stopped, or nothing can go on (``stalled()``; default: no stream is open): the rest
        are recorded failed, every backend being down."""
        stalled = stalled or (lambda: not self.tasks)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stop.set)
        watcher = asyncio.create_task(self._watch())
        try:
            async for r in at_arrivals(self.requests, self.now, self.stop):
                on_arrival(r)
            while len(self.records) < len(self.requests) and not self.stop.is_set():
                if stalled():
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


async def run_gateway(driver: StreamDriver, queue: SlotQueue, retry_failed: bool = False) -> tuple[list[dict], bool]:
    """rtlm's slot queue in front of the servers (see the module)."""
    slots = SlotDriver(queue, driver.now)
    attempts = 2 if retry_failed else 1

    async def serve(r: Request) -> None:
        for attempt in range(attempts):
            b = await slots.acquire(r)
            if b is None:
                driver.keep(r.rid, driver.unrun(r, "shed", f"shed at {driver.now():.3f} s: its deadline could no "
                                                           "longer be met"))
                return
            o, sent, in_flight = await driver.send(r, b)
            if o.failure == BACKEND_DOWN:
                queue.take_down(b.bid)
            if o.retryable and attempt < attempts - 1 and queue.live:
                slots.release(b, r)  # once more, to any live backend
                continue
            driver.finished(r, o, sent, b, in_flight, None, attempt + o.retries)
            slots.release(b, r, _tokens(o))
            return

    def on_arrival(r: Request) -> None:
        driver.arrive(r)
        driver.launch(serve(r))

    def stalled() -> bool:  # requests wait, and no backend can take them or is running any
        return not driver.tasks or (not queue.live and not any(b.outstanding for b in queue.backends.values()))

    try:
        return await driver.run(on_arrival, stalled)
    finally:
        await slots.close()
