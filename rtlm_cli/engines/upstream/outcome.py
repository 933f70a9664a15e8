"""What one request to a backend came to (``Outcome``), the words for its failures, and the one
record built from it (``served_row``); the request's body as the backend gets it. See the package."""

from __future__ import annotations

import asyncio
import json
import math
import re
from dataclasses import dataclass, field

BACKEND_DOWN, BACKEND_ERROR, MALFORMED, CLIENT_GONE, TIMEOUT = (
    "backend_down", "backend_error", "malformed", "client_gone", "timeout")
FAILURES = (BACKEND_DOWN, BACKEND_ERROR, MALFORMED, CLIENT_GONE, TIMEOUT)
RETRYABLE_STATUS = (502, 503, 504)
KEEPALIVE_S = 3.0  # below the servers' own idle timeout (vLLM, uvicorn: 5 s)
ERROR_CHARS = 200  # a backend's error message is kept this long, scrubbed of what it echoes
NAN = float("nan")
TIMEOUTS = (TimeoutError, asyncio.TimeoutError)  # one class from Python 3.11 on


@dataclass
class Outcome:
    """One request's answer as the backend gave it, timed on the client (seconds from its send)."""

    status: str = "finished"  # finished | failed | cancelled
    failure: str = ""  # one of FAILURES, "" when it finished
    error: str = ""
    http_status: int = 0
    first_chunk_s: float = NAN
    first_text_s: float = NAN
    e2e_s: float = NAN
    itl_s: list[float] = field(default_factory=list)
    prompt_tokens: int = 0
    output_tokens: int = 0
    finish_reason: str | None = None
    text: str = ""
    retries: int = 0
    server: dict = field(default_factory=dict)  # the server's per-request metrics, in seconds
    usage: dict | None = None  # the backend's usage object, as it sent it

    @property
    def ttft_s(self) -> float:
        """rtlm's TTFT: the first chunk with ``choices`` (see the module)."""
        return self.first_chunk_s

    @property
    def retryable(self) -> bool:
        """Failed before its first chunk because the backend is down or overloaded (the one rule)."""
        return (self.status == "failed" and math.isnan(self.first_chunk_s)
                and (self.failure == BACKEND_DOWN or self.http_status in RETRYABLE_STATUS))

    def fail(self, failure: str, error: str) -> "Outcome":
        self.status = "cancelled" if failure == CLIENT_GONE else "failed"
        self.failure, self.error = failure, error
        return self


def openai_error(status: int, message: str, kind: str = "invalid_request_error") -> dict:
    """The OpenAI-style error body every front door answers with (the gateway service, Ray Serve's
    ingress and forwarder, and a relayed stream's error event): ``{"error": {"message", "type", "code"}}``."""
    return {"error": {"message": message, "type": kind, "code": status}}


def error_event(message: str, status: int = 502) -> bytes:
    """The end of a relayed stream that failed: an OpenAI-style error event, then ``[DONE]``."""
    return f"data: {json.dumps(openai_error(status, message, 'upstream_error'))}\n\ndata: [DONE]\n\n".encode()


def scrub(message: str, body: dict | None = None) -> str:
    """A backend's error message without what it echoes of the request (prompt text, message
    contents), at most ``ERROR_CHARS`` characters: records and logs never hold a request's text."""
    out = message
    for text in _texts(body or {}):
        if len(text) >= 8:
            out = out.replace(text, "<request text>")
    out = re.sub(r"'(?:content|prompt)':\s*'[^']*'", "<request text>", out)
    return out[:ERROR_CHARS]


def _texts(body: dict) -> list[str]:
    texts = [body["prompt"]] if isinstance(body.get("prompt"), str) else []
    for m in body.get("messages") or []:
        content = m.get("content") if isinstance(m, dict) else None
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):
            texts += [p.get("text") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)]
    return sorted(texts, key=len, reverse=True)


def _message(text: str) -> str:
    """The error message of an OpenAI-style error body, or the text itself."""
    try:
        data = json.loads(text)
        err = data.get("error", data)
        return str(err.get("message", err) if isinstance(err, dict) else err)
    except (json.JSONDecodeError, AttributeError):
        return text


def _why(e: BaseException) -> str:
    return f"{type(e).__name__}: {str(e)[:ERROR_CHARS]}" if str(e) else type(e).__name__


def upstream_body(body: dict) -> dict:
    """The client's body as the backend gets it: a stream asks for its usage (rtlm records it)."""
    if not body.get("stream"):
        return body
    return {**body, "stream_options": {**(body.get("stream_options") or {}), "include_usage": True}}


def wants_usage(body: dict) -> bool:
    """Whether the client asked for the usage chunk (else it is left out of its stream)."""
    return not body.get("stream") or bool((body.get("stream_options") or {}).get("include_usage"))


def served_row(r, o: Outcome, *, sent_s: float, finish_s: float, backend: str, in_flight: int,
               retries: int | None = None, **extra) -> dict:
    """The one record of a request that was sent (finished, failed or cancelled), every path alike:
    the run format's columns (``formats.run.record``) plus the stream's. ``sent_s``/``finish_s``:
    seconds from the run's start; ``extra``: the path's own columns (``priority``,
    ``prediction_cost_s``, ``priority_class``)."""
    from rtlm_cli.formats.run import record

    itl = o.itl_s or [NAN]
    done = o.status == "finished"
    row = record(r, start_s=sent_s, first_token_s=sent_s + o.ttft_s, last_token_s=sent_s + o.e2e_s if done else NAN,
                 finish_s=finish_s, backend=backend, in_flight=in_flight, output_tokens=o.output_tokens,
                 status=o.status, ended=o.finish_reason == "stop" if done else None, error=o.error)
    row.update({
        "first_chunk_s": sent_s + o.first_chunk_s, "first_text_s": sent_s + o.first_text_s,
        "retries": o.retries if retries is None else retries, "failure": o.failure,
        "itl_mean_s": sum(itl) / len(itl), "itl_max_s": max(itl), "finish_reason": o.finish_reason,
        "server_queue_s": o.server.get("queue_time_s", NAN), "server_ttft_s": o.server.get("time_to_first_token_s", NAN),
    })
    if o.prompt_tokens:
        row["prompt_tokens"] = o.prompt_tokens
    row.update(extra)
    return row
