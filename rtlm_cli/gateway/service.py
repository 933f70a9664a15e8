"""The gateway service: an OpenAI-compatible HTTP front door (aiohttp) to rtlm's queue.

A request is parsed, predicted (when a predictor is given) and joins the slot queue through
``SlotDriver`` (the one driver the gateway replay and Ray Serve's capacity actor use too); it waits
until a slot of a live backend takes it (at most K in flight per backend), then its body goes to
that backend through ``engines/upstream.py`` unchanged but for ``stream_options.include_usage``
(rtlm needs the usage; it is left out of the client's stream when the client did not ask for it),
and the answer streams back byte for byte as the backend sends it. A backend that fails before its
first chunk may be retried on another (``--retry-failed``); one that fails after it (or sends an
answer that is not the OpenAI format) ends the client's stream with an error event and ``[DONE]``.
A client that disconnects while waiting leaves the queue; while streaming, its upstream request is
closed, which frees the backend's slot. Every request that was sent leaves one record
(``upstream.served_row``, as the replays write it). Errors are OpenAI-style JSON bodies.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections import deque

from aiohttp import web

from rtlm_cli.engines.upstream import (
    BACKEND_DOWN,
    TIMEOUT,
    Exchange,
    Outcome,
    Upstream,
    openai_error,
    served_row,
    upstream_body,
    wants_usage,
)
from rtlm_cli.formats.run import not_run
from rtlm_cli.serve.admit import UNAUTHORIZED, BadRequest, authorized, queue_full, request_text, too_large
from rtlm_cli.gateway.config import ServiceConfig
from rtlm_cli.gateway.metrics import ServiceMetrics
from rtlm_cli.serve.decide.request import Request
from rtlm_cli.serve.decide.slots import SlotQueue
from rtlm_cli.serve.live.driver import SlotDriver

RECENT = 2000  # records the live view's percentiles are taken over
PATHS = ("/v1/chat/completions", "/v1/completions")


def error(status: int, message: str, kind: str = "invalid_request_error", headers=None) -> web.Response:
    """An OpenAI-style error body."""
    return web.json_response(openai_error(status, message, kind), status=status, headers=headers)


class GatewayService:
    def __init__(self, cfg: ServiceConfig, queue: SlotQueue, urls: dict[int, str], models: dict, admit,
                 upstream: Upstream, records=None):
        """``admit(rid, now, text, body, headers) -> Request``: a request as the core sees it
        (prediction included); ``upstream``: the session to the backends (rtlm's own key, never the
        client's); ``records``: where each request's record goes (or None)."""
        self.cfg, self.queue, self.urls, self.models = cfg, queue, urls, models
        self.admit, self.upstream, self.records = admit, upstream, records
        predictor = getattr(admit, "predictor", None)
        self.metrics = ServiceMetrics(urls.values(), predictor.version if predictor is not None else None)
        self.t0 = upstream.clock()
        self.slots = SlotDriver(queue, self.now, on_withdrawn=lambda r: self.metrics.count("cancelled"))
        self.rids = itertools.count()
        self.arrived = 0  # requests admitted to the queue
        self.accepting = True
        self.active: set[asyncio.Task] = set()  # handlers of requests admitted and not yet answered
        self.recent: deque[dict] = deque(maxlen=RECENT)  # the latest records, for the live view

    def now(self) -> float:
        return self.upstream.clock() - self.t0

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.cfg.max_body_kib * 1024)
        for path in PATHS:
            app.router.add_post(path, self.complete)
        app.router.add_get("/v1/models", self.list_models)
        app.router.add_get("/health", self.health)
        app.router.add_get("/metrics", self.prometheus)
        return app

    # -- small endpoints -------------------------------------------------------------------------
    async def list_models(self, request: web.Request) -> web.Response:
        if (denied := self.denied(request)) is not None:
            return denied
        return web.json_response({"object": "list", "data": list(self.models.values())})

    async def health(self, request: web.Request) -> web.Response:
        live = self.queue.live
        return web.json_response({"status": "ok" if live else "no live backend", "live_backends": live},
                                 status=200 if live else 503)

    async def prometheus(self, request: web.Request) -> web.Response:
        core = self.queue.core
        self.metrics.observe_state(self.now(), len(core.queue), self.backend_states(),
                                   {self.urls[b.bid]: core.pace(b) for b in core.backends})
        return web.Response(body=self.metrics.exposition(), headers={"Content-Type": self.metrics.content_type})

    def backend_states(self) -> dict[str, tuple[int, bool]]:
        """Each backend's (in flight, down), by URL."""
        return {self.urls[b.bid]: (b.outstanding, b.down) for b in self.queue.core.backends}

    def denied(self, request: web.Request) -> web.Response | None:
        if authorized(request.headers.get("Authorization"), self.cfg.api_key):
            return None
        return error(*UNAUTHORIZED)

    # -- a completion ----------------------------------------------------------------------------
    async def complete(self, request: web.Request) -> web.StreamResponse:
        if (denied := self.denied(request)) is not None:
            return denied
        if not self.accepting:
            return error(503, "the gateway is shutting down", "unavailable")
        try:
            body = await request.json()
        except web.HTTPRequestEntityTooLarge:
            return error(*too_large(self.cfg.max_body_kib))
        except (json.JSONDecodeError, UnicodeDecodeError, ValueError):
            return error(400, "the request body is not valid JSON")
        try:
            text = request_text(request.path, body)
        except BadRequest as e:
            return error(400, str(e))
        if len(self.queue.core.queue) >= self.cfg.max_queue:
            self.metrics.count("rejected")
            return error(*queue_full(self.cfg.max_queue), headers={"Retry-After": "1"})
        task = asyncio.current_task()
        self.active.add(task)
        try:
            return await self.serve(request, body, text)
        finally:
            self.active.discard(task)

    async def serve(self, request: web.Request, body: dict, text: str) -> web.StreamResponse:
        arrived = self.now()
        try:
            r = self.admit(next(self.rids), arrived, text, body, request.headers)
        except BadRequest as e:
            return error(400, str(e))
        self.arrived += 1
        self.metrics.predicted(r)
        attempts = 2 if self.cfg.retry_failed else 1
        for attempt in range(attempts):
            backend = await self.slots.acquire(r)
            if backend is None:
                self.metrics.count("shed")
                self.keep(not_run(r, "shed", error="its deadline could no longer be met"), r)
                return error(429, "shed: its deadline can no longer be met (x-rtlm-deadline-ms)", "rate_limit_error",
                             headers={"Retry-After": "1"})
            if attempt == 0:
                self.metrics.waited(self.now() - arrived)
            url, in_flight, sent = self.urls[backend.bid], backend.outstanding, self.now()
            ex = self.upstream.exchange(url.rstrip("/") + request.path, upstream_body(body),
                                        keep_usage=wants_usage(body))
            answer = None
            try:
                async with ex:
                    answer = await self.respond(request, ex, retry=attempt < attempts - 1)
            finally:
                o = ex.outcome
                if o.failure == BACKEND_DOWN:
                    self.queue.take_down(backend.bid)
                    self.metrics.live.labels(url).set(0)
                if answer is not None or o.status != "failed" or attempt == attempts - 1:
                    self.finished(r, o, url, arrived, sent, in_flight, retries=attempt + o.retries)
                self.slots.release(backend, r, o.output_tokens if o.status == "finished" and o.usage else None)
            if answer is not None:
                return answer
            self.metrics.count("retried")  # its backend failed before answering: once more, to a live one
        raise AssertionError("unreachable: the last attempt always answers")

    async def respond(self, request: web.Request, ex: Exchange, retry: bool) -> web.StreamResponse | None:
        """The client's answer from the exchange: relayed byte for byte as it comes. None when
        ``retry`` and the backend failed retryably before anything reached the client."""
        o = ex.outcome
        if ex.failed:  # before the answer's headers: no connection, or an HTTP error status
            if retry and o.retryable and self.queue.live:
                return None
            if o.http_status:
                return web.Response(body=ex.payload, status=o.http_status,
                                    content_type=ex.resp.content_type or "application/json")
            return self.failed(ex)
        out = None
        async for piece in ex.relay():
            if out is None:
                if ex.failed and retry and o.retryable and self.queue.live:
                    return None  # failed before its first chunk: nothing reached the client
                if not ex.streamed:
                    return web.Response(body=piece, status=200, content_type=ex.resp.content_type or "application/json")
                out = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
                await out.prepare(request)
            await out.write(piece)
        if out is None:  # a whole answer that could not be read
            return self.failed(ex)
        await out.write_eof()
        return out

    def failed(self, ex: Exchange) -> web.Response:
        o = ex.outcome
        status = 504 if o.failure == TIMEOUT else 502
        return error(status, f"the backend {ex.url.rsplit('/v1/', 1)[0]} failed: {o.failure} ({o.error})", "upstream_error")

    # -- records ---------------------------------------------------------------------------------
    def finished(self, r: Request, o: Outcome, url: str, arrived: float, sent: float, in_flight: int,
                 retries: int) -> None:
        """The record of a request that was sent (finished, failed or cancelled), and its metrics."""
        end = self.now()
        if o.status == "cancelled":
            self.metrics.count("cancelled")
        else:
            first = sent + o.first_chunk_s if o.status == "finished" and not o.first_chunk_s != o.first_chunk_s else None
            self.metrics.served(url, o.status == "finished", o.output_tokens, r.predicted_tokens, arrived, sent, first, end)
        self.keep(served_row(r, o, sent_s=sent, finish_s=end, backend=url, in_flight=in_flight, retries=retries,
                             priority_class=r.priority_class), r)

    def keep(self, row: dict, r: Request) -> None:
        """The request's row in the run (times from the service's start)."""
        row.setdefault("priority_class", r.priority_class)
        self.recent.append(row)
        if self.records is not None:
            self.records.add(row)

    async def drain(self, timeout_s: float) -> None:
        """Stop accepting; let what was admitted finish for ``timeout_s``, then cancel the rest."""
        self.accepting = False
        if self.active:
            _, late = await asyncio.wait(set(self.active), timeout=timeout_s)
            for t in late:
                t.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        await self.slots.close()

