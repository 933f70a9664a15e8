"""The gateway service: an OpenAI-compatible HTTP front door (aiohttp) to rtlm's queue.

A request is parsed, predicted (when a predictor is given) and joins the decision core through
``Gateway`` (the same object the replays and the simulator drive); it waits until a slot of a
live backend takes it (at most K in flight per backend), then its body goes to that backend
unchanged but for ``stream_options.include_usage`` (rtlm needs the usage; it is stripped from the
client's stream when the client did not ask for it), and the answer streams back as the backend
sends it. A client that disconnects while waiting leaves the queue; while streaming, its upstream
request is closed, which frees the backend's slot. Errors are OpenAI-style JSON bodies.
"""

from __future__ import annotations

import asyncio
import hmac
import itertools
import json
import time
from collections import deque

from aiohttp import ClientError, ClientSession, web

from rtlm_cli.formats.run import record
from rtlm_cli.gateway.admit import BadRequest, request_text
from rtlm_cli.gateway.config import ServiceConfig
from rtlm_cli.gateway.metrics import ServiceMetrics
from rtlm_cli.serve.decide.gateway import Gateway
from rtlm_cli.serve.decide.request import Request
from rtlm_cli.serve.live.streams import arrive_gathering

RECENT = 2000  # records the live view's percentiles are taken over
PATHS = ("/v1/chat/completions", "/v1/completions")


def error(status: int, message: str, kind: str = "invalid_request_error", headers=None) -> web.Response:
    """An OpenAI-style error body."""
    return web.json_response({"error": {"message": message, "type": kind, "code": status}}, status=status,
                             headers=headers)


class GatewayService:
    def __init__(self, cfg: ServiceConfig, gateway: Gateway, urls: dict[int, str], models: dict, admit, records=None):
        """``admit(rid, now, text, body, headers) -> Request``: a request as the core sees it
        (prediction included); ``records``: where each request's record goes (or None)."""
        self.cfg, self.gateway, self.urls, self.models = cfg, gateway, urls, models
        self.admit, self.records = admit, records
        self.metrics = ServiceMetrics(urls.values())
        self.pending: dict[int, asyncio.Future] = {}
        self.rids = itertools.count()
        self.arrived = 0  # requests admitted to the queue
        self.accepting = True
        self.active: set[asyncio.Task] = set()  # handlers of requests admitted and not yet answered
        self.held: dict[int, int] = {}  # what a request's backend held when it was sent
        self.chores: set[asyncio.Task] = set()
        self.realised: dict[int, int] = {}  # tokens of an answer, for offloading's length scale
        self.session: ClientSession | None = None
        self.recent: deque[dict] = deque(maxlen=RECENT)  # the latest records, for the live view
        self.t0 = time.perf_counter()

    def now(self) -> float:
        return time.perf_counter() - self.t0

    def spawn(self, coro) -> None:
        """A background task of the service (a gathering window's end), kept until it is done."""
        task = asyncio.get_running_loop().create_task(coro)
        self.chores.add(task)
        task.add_done_callback(self.chores.discard)

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
        live = self.gateway.live
        return web.json_response({"status": "ok" if live else "no live backend", "live_backends": live},
                                 status=200 if live else 503)

    async def prometheus(self, request: web.Request) -> web.Response:
        core = self.gateway.core
        self.metrics.observe_state(self.now(), len(core.queue), self.backend_states(),
                                   {self.urls[b.bid]: core.pace(b) for b in core.backends})
        return web.Response(body=self.metrics.exposition(), headers={"Content-Type": self.metrics.content_type})

    def backend_states(self) -> dict[str, tuple[int, bool]]:
        """Each backend's (in flight, down), by URL."""
        return {self.urls[b.bid]: (b.outstanding, b.down) for b in self.gateway.core.backends}

    def denied(self, request: web.Request) -> web.Response | None:
        if not self.cfg.api_key:
            return None
        given = request.headers.get("Authorization", "")
        if hmac.compare_digest(given.encode(), f"Bearer {self.cfg.api_key}".encode()):
            return None
        return error(401, "missing or wrong API key: send Authorization: Bearer KEY", "authentication_error")

    # -- the queue -------------------------------------------------------------------------------
    def apply(self, sends) -> None:
        """Hand each decided send to its waiting handler; shed requests get None."""
        for r, b in sends:
            fut = self.pending.pop(r.rid, None)
            if fut is not None and not fut.done():
                fut.set_result(b)
            else:  # its client left between the decision and now: the slot goes to the next one
                self.apply(self.gateway.left(b.bid, self.now(), r))
        for r in self.gateway.core.take_shed():
            fut = self.pending.pop(r.rid, None)
            if fut is not None and not fut.done():
                fut.set_result(None)

    async def wait_for_slot(self, r: Request):
        """The backend that takes ``r``, None if it was shed; leaves the queue if the client goes."""
        fut = asyncio.get_running_loop().create_future()
        self.pending[r.rid] = fut
        self.apply(arrive_gathering(self.gateway, r, self.now(), self.now, self.apply, self.spawn))
        try:
            return await fut
        except asyncio.CancelledError:
            self.pending.pop(r.rid, None)
            if self.gateway.core.withdraw(r.rid):
                self.metrics.count("cancelled")
            elif fut.done() and not fut.cancelled() and fut.result() is not None:
                self.apply(self.gateway.left(fut.result().bid, self.now(), r))  # sent, never started
            raise

    # -- a completion ----------------------------------------------------------------------------
    async def complete(self, request: web.Request) -> web.StreamResponse:
        if (denied := self.denied(request)) is not None:
            return denied
        if not self.accepting:
            return error(503, "the gateway is shutting down", "unavailable")
        try:
            body = await request.json()
        except web.HTTPRequestEntityTooLarge:
            return error(413, f"the request body is over --max-body-kib {self.cfg.max_body_kib} KiB")
        except (json.JSONDecodeError, UnicodeDecodeError, ValueError):
            return error(400, "the request body is not valid JSON")
        try:
            text = request_text(request.path, body)
        except BadRequest as e:
            return error(400, str(e))
        if len(self.gateway.core.queue) >= self.cfg.max_queue:
            self.metrics.count("rejected")
            return error(429, f"rtlm's queue is full (--max-queue {self.cfg.max_queue}); retry later",
                         "rate_limit_error", headers={"Retry-After": "1"})
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
            backend = await self.wait_for_slot(r)
            if backend is None:
                self.metrics.count("shed")
                self.record(r, "shed", arrived, error="its deadline could no longer be met")
                return error(429, "shed: its deadline can no longer be met (x-rtlm-deadline-ms)", "rate_limit_error",
                             headers={"Retry-After": "1"})
            if attempt == 0:
                self.metrics.waited(self.now() - arrived)
            self.held[r.rid] = backend.outstanding
            try:
                answer = await self.forward(request, body, r, backend, arrived, last=attempt == attempts - 1)
            finally:
                self.apply(self.gateway.left(backend.bid, self.now(), r, self.realised.pop(r.rid, None)))
            if answer is not None:
                return answer
            self.metrics.count("retried")  # its backend failed before answering: once more, to a live one
        raise AssertionError("unreachable: the last attempt always answers")

    async def forward(self, request: web.Request, body: dict, r: Request, backend, arrived: float, last: bool = True):
        """``body`` to ``backend``; its answer back to the client as it comes. None when the backend
        could not be reached and this is not the ``last`` attempt (the caller retries elsewhere)."""
        url = self.urls[backend.bid]
        stream = bool(body.get("stream"))
        wants_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        upstream = dict(body)
        if stream:
            upstream["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
        sent = self.now()
        try:  # the session carries rtlm's own key for the backends (--backend-api-key), never the client's
            async with self.session.post(url.rstrip("/") + request.path, json=upstream) as resp:
                if resp.status != 200 or not stream:
                    payload = await resp.read()
                    usage = _usage(payload) if resp.status == 200 else None
                    self.finished(r, url, arrived, sent, resp.status, usage, first=None)
                    return web.Response(body=payload, status=resp.status,
                                        content_type=resp.content_type or "application/json")
                return await self.relay(request, resp, r, url, arrived, sent, wants_usage)
        except (ClientError, TimeoutError, OSError) as e:
            self.gateway.take_down(backend.bid)
            self.metrics.live.labels(url).set(0)
            if not last and self.gateway.live:
                return None
            self.metrics.count("failed")
            self.record(r, "failed", arrived, error=f"{type(e).__name__}: {e}"[:200], worker=url, start=sent)
            return error(502, f"the backend {url} failed: {type(e).__name__}", "upstream_error")

    async def relay(self, request, resp, r: Request, url: str, arrived: float, sent: float, wants_usage: bool):
        out = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await out.prepare(request)
        first, usage = None, None
        try:
            async for raw in resp.content:
                line = raw.strip()
                if line.startswith(b"data:") and line[5:].strip() != b"[DONE]":
                    chunk = json.loads(line[5:])
                    if chunk.get("usage"):
                        usage = chunk["usage"]
                        if not wants_usage and not chunk.get("choices"):
                            continue  # the usage-only chunk the client did not ask for
                    if first is None and chunk.get("choices"):
                        first = self.now()
                await out.write(raw)
        except (ConnectionResetError, asyncio.CancelledError):
            resp.close()  # the client left mid-stream: close the upstream request, freeing its slot
            self.metrics.count("cancelled")
            self.record(r, "cancelled", arrived, worker=url, start=sent)
            raise
        except (ClientError, TimeoutError, OSError) as e:  # the backend died mid-stream
            self.metrics.count("failed")
            self.record(r, "failed", arrived, error=f"{type(e).__name__}", worker=url, start=sent)
            await out.write(b'data: {"error": {"message": "the backend failed mid-stream", "type": "upstream_error"}}\n\n')
            return out
        self.finished(r, url, arrived, sent, 200, usage, first)
        await out.write_eof()
        return out

    # -- records ---------------------------------------------------------------------------------
    def finished(self, r: Request, url: str, arrived: float, sent: float, status: int, usage: dict | None, first):
        end = self.now()
        tokens = int((usage or {}).get("completion_tokens") or 0)
        ok = status == 200
        if ok and usage:
            self.realised[r.rid] = tokens
        self.metrics.served(url, ok, tokens, r.predicted_tokens, arrived, sent, first, end)
        self.record(r, "finished" if ok else "failed", arrived, worker=url, start=sent, first=first, end=end,
                    tokens=tokens, prompt_tokens=int((usage or {}).get("prompt_tokens") or r.prompt_tokens),
                    error="" if ok else f"HTTP {status}")

    def record(self, r: Request, status: str, arrived: float, error: str = "", worker: str = "", start=None,
               first=None, end=None, tokens: int = 0, prompt_tokens: int | None = None) -> None:
        """The request's row in the run (times from the service's start; NaN where it never got there)."""
        nan, end = float("nan"), self.now() if end is None else end
        done = status == "finished"
        row = record(r, start_s=nan if start is None else start, first_token_s=nan if first is None else first,
                     last_token_s=end if done else nan, finish_s=end if done else nan, worker=worker,
                     in_flight=self.held.pop(r.rid, 0), output_tokens=tokens, status=status, error=error)
        row.update(priority_class=r.priority_class, prompt_tokens=prompt_tokens or r.prompt_tokens)
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


def _usage(payload: bytes) -> dict | None:
    try:
        return json.loads(payload).get("usage")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return None
