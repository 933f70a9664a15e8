"""The session to the backends (``Upstream``) and one request read through it (``Exchange``). See
the package."""

from __future__ import annotations

import asyncio
import json
import math
import ssl
import time
from collections.abc import AsyncIterator, Callable

from rtlm_cli.engines.upstream.outcome import (
    BACKEND_DOWN,
    BACKEND_ERROR,
    CLIENT_GONE,
    KEEPALIVE_S,
    MALFORMED,
    TIMEOUT,
    TIMEOUTS,
    Outcome,
    _message,
    _why,
    error_event,
    scrub,
)


class Exchange:
    """One request to one backend (``Upstream.exchange``); read it once with ``relay()``.

    Use as ``async with``: leaving the block closes the backend's request (its slot frees); leaving it
    by cancellation or a broken client connection records the request ``cancelled`` (``client_gone``).
    """

    def __init__(self, upstream: "Upstream", url: str, body: dict, keep_usage: bool = True):
        self.upstream, self.url, self.body, self.keep_usage = upstream, url, body, keep_usage
        self.outcome = Outcome()
        self.streamed = bool(body.get("stream"))
        self.resp = None
        self.payload: bytes = b""  # an error answer's body, or a whole (non-streamed) answer
        self.t0 = 0.0
        self._last: float | None = None

    def elapsed(self) -> float:
        return self.upstream.clock() - self.t0

    async def __aenter__(self) -> "Exchange":
        import aiohttp

        o = self.outcome
        self.t0 = self.upstream.clock()
        try:
            self.resp = await self.upstream.session.post(self.url, json=self.body)
            o.http_status = self.resp.status
            if self.resp.status != 200:
                self.payload = await self.resp.read()
                text = self.payload[:2000].decode("utf-8", "replace")
                o.fail(BACKEND_ERROR, f"HTTP {self.resp.status}: {scrub(_message(text), self.body)}")
        except TIMEOUTS:
            o.fail(TIMEOUT, "no answer within the request timeout")
        except (aiohttp.ClientError, OSError) as e:
            o.fail(BACKEND_DOWN, _why(e))
        return self

    async def __aexit__(self, kind, exc, tb) -> None:
        if kind is not None and issubclass(kind, (asyncio.CancelledError, ConnectionResetError)):
            self.outcome.fail(CLIENT_GONE, "the client went away")
        if self.resp is not None:
            if kind is None and self.resp.content.at_eof():
                self.resp.release()  # read to its end: the connection goes back to the pool, kept alive
            else:
                self.resp.close()  # a request left unread is aborted: the backend frees its slot

    @property
    def failed(self) -> bool:
        return self.outcome.status != "finished"

    async def relay(self) -> AsyncIterator[bytes]:
        """The answer's bytes, unchanged and as the network delivers them (whole lines; the usage-only
        chunk rtlm asked for is left out unless ``keep_usage``); the outcome is timed and filled on the way. A stream that fails
        once its headers came ends with an error event and ``[DONE]`` (the caller may still answer
        otherwise when that event is the first piece: ``outcome.retryable``); a whole answer that
        fails yields nothing."""
        import aiohttp

        o = self.outcome
        if self.failed:
            return
        try:
            if not self.streamed:
                self.payload = await self.resp.read()
                self._whole(self.payload)
                if not self.failed:
                    self._end()
                    yield self.payload
                return
            rest = b""
            async for data in self.resp.content.iter_any():  # as the network delivers it
                *lines, rest = (rest + data).split(b"\n")
                kept = self._lines(line + b"\n" for line in lines)
                if kept:
                    yield kept
                if self.failed:
                    break
            if rest and not self.failed:  # a last line with no newline
                kept = self._lines([rest])
                if kept:
                    yield kept
        except TIMEOUTS:
            o.fail(TIMEOUT, "no answer within the request timeout")
        except (aiohttp.ClientError, OSError) as e:
            o.fail(BACKEND_DOWN, _why(e))
        if self.failed:
            yield error_event(f"the backend failed: {o.failure} ({o.error})")
            return
        self._end()

    async def read(self) -> Outcome:
        """The whole answer read (nothing relayed); its outcome."""
        async for _ in self.relay():
            pass
        return self.outcome

    # -- reading ---------------------------------------------------------------------------------
    def _lines(self, lines) -> bytes:
        """Complete lines read (each timed on its own), joined as they came, less what is not relayed;
        reading stops at a failure."""
        kept = []
        for raw in lines:
            if self._line(raw):
                kept.append(raw)
            if self.failed:
                break
        return b"".join(kept)

    def _line(self, raw: bytes) -> bool:
        """One line of the stream read; False for a line not to relay (the usage-only chunk)."""
        line = raw.strip()
        if not line.startswith(b"data:"):
            return True
        data = line[5:].strip()
        if data == b"[DONE]":
            return True
        chunk = self._object(data, "a chunk")
        return False if chunk is None else self._chunk(chunk, self.elapsed())

    def _object(self, data: bytes, what: str) -> dict | None:
        """``data`` as a JSON object; None, and the outcome ``malformed``, when it is not one."""
        try:
            chunk = json.loads(data)
        except (ValueError, UnicodeDecodeError) as e:
            self.outcome.fail(MALFORMED, f"{what} that is not JSON: {str(e)[:80]}")
            return None
        if not isinstance(chunk, dict):
            self.outcome.fail(MALFORMED, f"{what} that is not a JSON object")
            return None
        return chunk

    def _chunk(self, chunk: dict, now: float) -> bool:
        o = self.outcome
        choices = chunk.get("choices") or []
        if choices and math.isnan(o.first_chunk_s):
            o.first_chunk_s = now
        for choice in choices:
            piece = ((choice.get("delta") or choice.get("message") or {}).get("content")
                     or choice.get("text") or "") if isinstance(choice, dict) else ""
            if piece:
                if self._last is None:
                    o.first_text_s = now
                else:
                    o.itl_s.append(now - self._last)
                self._last = now
                o.text += piece
            if isinstance(choice, dict) and choice.get("finish_reason"):
                o.finish_reason = choice["finish_reason"]
        if chunk.get("usage"):
            o.usage = chunk["usage"]
            o.prompt_tokens = int(chunk["usage"].get("prompt_tokens") or 0)
            o.output_tokens = int(chunk["usage"].get("completion_tokens") or 0)
        if chunk.get("metrics"):
            o.server = {k.replace("_ms", "_s"): v / 1000.0 for k, v in chunk["metrics"].items()
                        if k.endswith("_ms") and isinstance(v, (int, float))}
        return bool(choices) or self.keep_usage or not chunk.get("usage")

    def _whole(self, payload: bytes) -> None:
        chunk = self._object(payload, "an answer")
        if chunk is not None:
            self._chunk(chunk, self.elapsed())

    def _end(self) -> None:
        o = self.outcome
        o.e2e_s = self._last if self._last is not None else self.elapsed()
        if o.finish_reason is None:
            o.fail(BACKEND_ERROR, "the stream ended before the server said the answer finished")
            return
        if math.isnan(o.first_chunk_s):  # no chunk with choices at all: its end is its first token
            o.first_chunk_s = o.e2e_s
        if math.isnan(o.first_text_s):  # no text (an answer of only special tokens)
            o.first_text_s = o.first_chunk_s


class Upstream:
    """The HTTP session to the backends (aiohttp), its clock and its retry count; ``async with``.

    Limits are explicit: the connection pool is as large as the requests in flight (``max_in_flight``;
    0: no limit; a pool smaller than a burst would silently queue it on the client), timeouts come
    from the caller (no library default), and only ``retries`` retryable failures are sent again."""

    def __init__(self, headers: dict[str, str] | None = None, connect_timeout_s: float = 10.0,
                 request_timeout_s: float | None = 900.0, max_in_flight: int = 0, ca_bundle: str | None = None,
                 retries: int = 0, clock: Callable[[], float] = time.perf_counter):
        self.headers, self.connect_timeout_s, self.request_timeout_s = headers or {}, connect_timeout_s, request_timeout_s
        self.max_in_flight, self.ca_bundle, self.retries, self.clock = max_in_flight, ca_bundle, retries, clock
        self.session = None

    async def __aenter__(self) -> "Upstream":
        import aiohttp

        ctx = ssl.create_default_context(cafile=self.ca_bundle) if self.ca_bundle else None
        # an idle connection is dropped here before the server drops it (vLLM's and uvicorn's
        # keep-alive: 5 s; aiohttp's default, 15 s, let a request go out on a connection the server
        # was closing: "Can not write request body", seen between two replays on one vLLM)
        connector = aiohttp.TCPConnector(limit=self.max_in_flight, limit_per_host=self.max_in_flight,
                                         ssl=ctx if ctx is not None else True, keepalive_timeout=KEEPALIVE_S)
        timeout = aiohttp.ClientTimeout(total=self.request_timeout_s, connect=self.connect_timeout_s)
        self.session = aiohttp.ClientSession(connector=connector, timeout=timeout, headers=self.headers)
        return self

    async def __aexit__(self, *exc) -> None:
        await self.session.close()

    def exchange(self, url: str, body: dict, keep_usage: bool = True) -> Exchange:
        """One request (``url`` is the endpoint's full URL); see ``Exchange``."""
        return Exchange(self, url, body, keep_usage)

    async def send(self, url: str, body: dict) -> Outcome:
        """Send one request to ``url`` and read its answer to the end, sent again up to ``retries``
        times while it fails retryably; failures are recorded, never raised (cancellation is)."""
        for attempt in range(self.retries + 1):
            async with self.exchange(url, body) as ex:
                o = await ex.read()
            o.retries = attempt
            if not o.retryable:
                break
        return o

    # -- what is not a completion --------------------------------------------------------------
    async def get(self, url: str) -> tuple[int, bytes]:
        """``GET url``: (status, body); (0, b"") when the backend cannot be reached."""
        import aiohttp

        try:
            async with self.session.get(url) as resp:
                return resp.status, await resp.read()
        except (aiohttp.ClientError, OSError, *TIMEOUTS):
            return 0, b""

    async def post_json(self, url: str, body: dict) -> tuple[int, bytes]:
        """``POST url`` with a JSON body, read whole (``/tokenize``); (0, b"") when unreachable."""
        import aiohttp

        try:
            async with self.session.post(url, json=body) as resp:
                return resp.status, await resp.read()
        except (aiohttp.ClientError, OSError, *TIMEOUTS):
            return 0, b""

    async def healthy(self, base_url: str) -> bool:
        """The backend answers ``/health`` with 200."""
        return (await self.get(base_url.rstrip("/") + "/health"))[0] == 200
