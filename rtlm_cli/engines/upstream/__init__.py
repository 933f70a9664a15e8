"""The one way rtlm talks to an OpenAI-compatible backend (vLLM, SGLang, llama.cpp's server, TGI, ...).

Every path that reaches a backend goes through here: the profiler, every replay, the gateway
service and the Ray Serve forwarder. No other module opens an HTTP client to a backend or reads
server-sent events. One request is one ``Exchange``: it is sent, its answer is read (and relayed
byte for byte when the caller forwards it to a client), timed on the ``Upstream``'s clock (injected:
a test plays a scripted stream and compares timings exactly), its failure classified once, and
its record built once (``served_row``).

Timing, in seconds from the send, on the client as ``vllm bench serve`` times it:
- ``first_chunk_s``: the first chunk that carries ``choices`` (``vllm bench serve``'s rule: vLLM's
  first chunk holds the assistant's role, sent with the first token). **This is what rtlm reports as
  TTFT** (``ttft_s``, the run column ``first_token_s``).
- ``first_text_s``: the first chunk that carries text (the rule rtlm's replays used before 0.2).
- ``itl_s``: between chunks that carry text; ``e2e_s``: the last chunk. A non-streamed answer's
  chunk is its whole body.

Failures (``Outcome.failure``), one word each:
- ``backend_down``: no connection, or it broke (the backend is gone, not one request);
- ``backend_error``: an HTTP error status, or a stream that ended without saying why it finished;
- ``malformed``: an answer that is not the OpenAI format (a chunk that is not JSON);
- ``client_gone``: the caller stopped reading (its client left): recorded ``cancelled``;
- ``timeout``: no answer within the request timeout.
A relayed stream that fails after it began gets an OpenAI-style error event and ``[DONE]``, so the
client sees the end of the stream. Retrying has one rule (``Outcome.retryable``): a request that
failed *before its first chunk* because the backend is down or overloaded (``backend_down``, or HTTP
502/503/504) may be sent again; nothing else is, and every retry is counted on its request.
"""

from rtlm_cli.engines.upstream.exchange import Exchange, Upstream
from rtlm_cli.engines.upstream.outcome import (
    BACKEND_DOWN,
    BACKEND_ERROR,
    CLIENT_GONE,
    FAILURES,
    MALFORMED,
    RETRYABLE_STATUS,
    TIMEOUT,
    Outcome,
    error_event,
    openai_error,
    scrub,
    served_row,
    upstream_body,
    wants_usage,
)

__all__ = ["BACKEND_DOWN", "BACKEND_ERROR", "CLIENT_GONE", "FAILURES", "MALFORMED", "RETRYABLE_STATUS", "TIMEOUT",
           "Exchange", "Outcome", "Upstream", "error_event", "openai_error", "scrub", "served_row", "upstream_body", "wants_usage"]
