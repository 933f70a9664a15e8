"""An OpenAI-compatible Ray Serve application ordered by rtlm: ``Ingress`` (the HTTP front: it
predicts each request once) in front of N ``Forwarder`` replicas, each forwarding to its own
OpenAI-compatible server (vLLM, or any other), routed by rtlm (``rtlm_routed``).

``build(urls, ...)`` makes the application; ``examples/ray_serve/`` runs it.
"""

from __future__ import annotations

import json

from ray import serve
from starlette.requests import Request as HttpRequest
from starlette.responses import JSONResponse, StreamingResponse

from rtlm_cli.engines.upstream import Upstream, openai_error, upstream_body, wants_usage
from rtlm_cli.serve.admit import UNAUTHORIZED, BadRequest, authorized, queue_full, too_large
from rtlm_cli.integrations.ray_serve.deployment import rtlm_routed
from rtlm_cli.integrations.ray_serve.ingress import Predicting
from rtlm_cli.integrations.ray_serve.router import RequestShed
from rtlm_cli.serve.decide.slots import GATHER_MS

PATHS = ("/v1/chat/completions", "/v1/completions")


def _error(status: int, message: str, kind: str = "invalid_request_error", headers=None) -> JSONResponse:
    return JSONResponse(openai_error(status, message, kind), status_code=status, headers=headers)


@serve.deployment
class Forwarder:
    """One replica per backend server: replica of rank i forwards to ``urls[i % len(urls)]`` through
    ``engines/upstream.py`` (as ``rtlm gateway`` does): the body goes unchanged but for the usage a
    stream asks for, the answer streams back byte for byte as the server sends it, and a stream that
    fails ends with an error event and ``[DONE]``."""

    def __init__(self, urls: list[str]):
        rank = serve.get_replica_context().rank
        self.url = urls[rank.rank % len(urls)].rstrip("/")
        self.upstream: Upstream | None = None

    async def _session(self) -> Upstream:
        if self.upstream is None:  # made in the replica's own event loop, on its first call
            self.upstream = await Upstream(request_timeout_s=None).__aenter__()
        return self.upstream

    async def __call__(self, path: str, body: dict, rtlm: dict | None = None):
        upstream = await self._session()
        async with upstream.exchange(self.url + path, upstream_body(body), keep_usage=wants_usage(body)) as ex:
            if ex.failed:
                o = ex.outcome
                payload = ex.payload.decode("utf-8", "replace") if o.http_status else json.dumps(
                    openai_error(502, f"the backend failed: {o.failure} ({o.error})", "upstream_error"))
                yield {"status": o.http_status or 502, "body": payload}
                return
            yield {"status": 200}
            async for piece in ex.relay():
                yield piece

    async def models(self) -> dict:
        status, data = await (await self._session()).get(self.url + "/v1/models")
        if status != 200:
            return {"object": "list", "data": [], "error": f"{self.url} answered HTTP {status or 'nothing'}"}
        return json.loads(data)


@serve.deployment
class Ingress:
    """The HTTP front: ``POST /v1/chat/completions`` and ``/v1/completions`` (streamed or not),
    ``GET /v1/models``. Each request is predicted here, once. The gateway service's limits, answered
    the same way: ``api_key`` (401 without it), ``max_body_kib`` (413 above it), ``max_queue``
    requests waiting for a replica (429 with Retry-After beyond it), bad bodies 400."""

    def __init__(self, forwarder, predictor: str | None = "reference", timing: str = "vllm-cpu",
                 profile: str | None = None, api_key: str | None = None, max_body_kib: int = 1024,
                 max_queue: int = 1024):
        self.predict = Predicting(predictor, timing, profile)
        self.forwarder = forwarder
        self.api_key, self.max_body_kib, self.max_queue = api_key, max_body_kib, max_queue
        self.waiting = 0  # requests of this ingress replica not yet given a replica

    async def __call__(self, request: HttpRequest):
        path = request.url.path
        if not authorized(request.headers.get("authorization"), self.api_key):
            return _error(*UNAUTHORIZED)
        if request.method == "GET" and path == "/v1/models":
            return JSONResponse(await self.forwarder.models.remote())
        if request.method != "POST" or path not in PATHS:
            return _error(404, f"no route {request.method} {path}: POST {' or '.join(PATHS)}, GET /v1/models")
        limit = self.max_body_kib * 1024
        if int(request.headers.get("content-length") or 0) > limit:
            return _error(*too_large(self.max_body_kib))
        raw = await request.body()
        if len(raw) > limit:
            return _error(*too_large(self.max_body_kib))
        try:
            body = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return _error(400, "the request body is not valid JSON")
        try:
            fields = self.predict(path, body, request.headers)
        except BadRequest as e:
            return _error(400, str(e))
        if self.waiting >= self.max_queue:
            return _error(*queue_full(self.max_queue), headers={"Retry-After": "1"})
        self.waiting += 1
        try:
            stream = self.forwarder.options(stream=True).remote(path, body, rtlm=fields)
            head = await stream.__anext__()
        except RequestShed as e:
            return _error(429, str(e), "rate_limit_error", headers={"Retry-After": "1"})
        finally:
            self.waiting -= 1
        if head["status"] != 200:
            return JSONResponse(json.loads(head["body"]) if head["body"].startswith("{") else {"error": head["body"]},
                                status_code=head["status"])
        media = "text/event-stream" if body.get("stream") else "application/json"
        return StreamingResponse(stream, media_type=media)


def build(urls: list[str], policy: str = "rtlm", predictor: str | None = "reference", timing: str = "vllm-cpu",
          max_ongoing_requests: int = 8, num_replicas: int | None = None, gather_ms: float = GATHER_MS,
          shed: bool = False, router: str = "rtlm", replica_options: dict | None = None,
          ingress_max_ongoing: int = 4096, profile: str | None = None, api_key: str | None = None,
          max_body_kib: int = 1024, max_queue: int = 1024):
    """The application: ``num_replicas`` (default: one per URL) forwarders routed by rtlm's
    ``policy`` at most ``max_ongoing_requests`` each (K: the server's batch), behind the ingress.
    ``router``: ``rtlm`` (rtlm's capacity queue), or ``ray`` (Ray's default power-of-two choices:
    the baseline, the prediction is made and ignored). ``profile``: benchmarks only, the true
    answer lengths the ``oracle`` policy orders by. ``api_key``, ``max_body_kib``, ``max_queue``: the
    ingress's limits, as ``rtlm gateway``'s options of the same names."""
    forwarder = Forwarder.options(num_replicas=num_replicas or len(urls), max_ongoing_requests=max_ongoing_requests,
                                  **(replica_options or {}))
    if router == "rtlm":
        forwarder = rtlm_routed(forwarder, policy=policy, timing=timing, gather_ms=gather_ms, shed=shed)
    elif router != "ray":
        raise ValueError(f"router is rtlm or ray, got {router!r}")
    # The ingress holds every request until its answer ends: Ray's default of 5 at once would make the
    # proxy queue the rest FIFO, before rtlm's queue sees them.
    return Ingress.options(max_ongoing_requests=ingress_max_ongoing).bind(
        forwarder.bind(list(urls)), predictor=predictor, timing=timing, profile=profile, api_key=api_key,
        max_body_kib=max_body_kib, max_queue=max_queue)
