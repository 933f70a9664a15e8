"""A client of OpenAI-compatible servers (vLLM, SGLang, llama.cpp's server, TGI, ...), built on aiohttp.

Every request streams, with usage included, and is timed on the client as ``vllm bench serve``
times it: TTFT from the send to the first chunk that carries text, inter-token latencies between
text chunks, end-to-end to the last chunk. The server's own per-request metrics are kept when it
sends them (vLLM with ``--enable-per-request-metrics``: queue time, its TTFT, mean ITL).

Limits are explicit: the connection pool is as large as the requests in flight (a pool smaller
than a burst would silently queue it on the client), timeouts come from settings (no library
default), nothing is retried unless asked, and every retry is counted on its request. A stream
that ends without the server saying why it finished is a failure, never a finished answer.
"""

from __future__ import annotations

import json
import os
import ssl
import time
from dataclasses import dataclass, field

from rtlm_cli.errors import RtlmError

API_KEY_ENV = ("RTLM_API_KEY", "OPENAI_API_KEY")
RETRYABLE = (502, 503, 504)


KEEPALIVE_S = 3.0  # below the servers' own idle timeout (vLLM, uvicorn: 5 s)


@dataclass(frozen=True)
class ClientSettings:
    urls: tuple[str, ...] = field(default=(), metadata={"help": "Base URL of an OpenAI-compatible server (e.g. http://127.0.0.1:8000), repeatable; every URL must serve the same model."})
    served_model: str | None = field(default=None, metadata={"help": "The model name the server serves (default: the one it lists; needed when it lists several)."})
    api_key: str | None = field(default=None, metadata={"help": f"API key sent as a bearer token (default: ${API_KEY_ENV[0]}, then ${API_KEY_ENV[1]})."})
    headers: tuple[str, ...] = field(default=(), metadata={"help": "An extra HTTP header 'Name: value', repeatable."})
    ca_bundle: str | None = field(default=None, metadata={"help": "CA bundle (PEM) to verify the server's TLS certificate."})
    connect_timeout_s: float = field(default=10.0, metadata={"help": "Seconds to wait for a connection to a server."})
    request_timeout_s: float = field(default=900.0, metadata={"help": "Seconds a request may take from send to its last token (queueing included) before it is recorded failed."})
    retries: int = field(default=0, metadata={"help": "Times a request that failed before its first token (connection error, 502/503/504) is sent again; each retry is recorded."})

    def key(self) -> str | None:
        return self.api_key or next((os.environ[k] for k in API_KEY_ENV if os.environ.get(k)), None)

    def header_dict(self) -> dict[str, str]:
        out = {}
        for h in self.headers:
            name, sep, value = h.partition(":")
            if not sep or not name.strip():
                raise RtlmError(f"--header {h!r} is not 'Name: value'")
            out[name.strip()] = value.strip()
        if self.key():
            out["Authorization"] = f"Bearer {self.key()}"
        return out

    def validate(self) -> "ClientSettings":
        if self.connect_timeout_s <= 0 or self.request_timeout_s <= 0:
            raise RtlmError("--connect-timeout and --request-timeout must be > 0 seconds")
        if self.retries < 0:
            raise RtlmError(f"--retries must be >= 0, got {self.retries}")
        if self.ca_bundle and not os.path.isfile(self.ca_bundle):
            raise RtlmError(f"CA bundle {self.ca_bundle} does not exist")
        for url in self.urls:
            if not url.startswith(("http://", "https://")):
                raise RtlmError(f"--url {url!r} is not an http:// or https:// URL")
        self.header_dict()
        return self


@dataclass
class Streamed:
    """One request's outcome, timed on the client. Times are seconds from its send."""

    status: str = "finished"  # finished | failed | cancelled
    error: str = ""
    ttft_s: float = float("nan")
    e2e_s: float = float("nan")
    itl_s: list[float] = field(default_factory=list)
    prompt_tokens: int = 0
    output_tokens: int = 0
    finish_reason: str | None = None
    text: str = ""
    retries: int = 0
    server: dict = field(default_factory=dict)  # the server's per-request metrics, in seconds


class Client:
    """An aiohttp session to one or more servers; use inside ``async with``."""

    def __init__(self, settings: ClientSettings, max_in_flight: int = 0):
        self.settings = settings.validate()
        self.max_in_flight = max_in_flight  # 0: no limit
        self.model: str | None = settings.served_model
        self.session = None

    async def __aenter__(self) -> "Client":
        import aiohttp

        ctx = ssl.create_default_context(cafile=self.settings.ca_bundle) if self.settings.ca_bundle else None
        # an idle connection is dropped here before the server drops it (vLLM's and uvicorn's
        # keep-alive: 5 s; aiohttp's default, 15 s, let a request go out on a connection the server
        # was closing: "Can not write request body", seen between two replays on one vLLM)
        connector = aiohttp.TCPConnector(limit=self.max_in_flight, limit_per_host=self.max_in_flight,
                                         ssl=ctx if ctx is not None else True, keepalive_timeout=KEEPALIVE_S)
        timeout = aiohttp.ClientTimeout(total=self.settings.request_timeout_s, connect=self.settings.connect_timeout_s)
        self.session = aiohttp.ClientSession(connector=connector, timeout=timeout,
                                             headers=self.settings.header_dict())
        return self

    async def __aexit__(self, *exc) -> None:
        await self.session.close()

    # -- the servers -----------------------------------------------------------------------------
    async def _get_json(self, url: str, path: str):
        import aiohttp

        try:
            async with self.session.get(url.rstrip("/") + path) as resp:
                if resp.status != 200:
                    raise RtlmError(f"{url}{path} answered HTTP {resp.status}: {(await resp.text())[:200]}")
                return await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            raise RtlmError(f"cannot reach {url} ({type(e).__name__}: {str(e)[:160] or 'no answer'}): "
                            "is the server running, and is the URL right?") from None

    async def check(self) -> dict:
        """Every URL answers ``/v1/models`` and serves the same model; that model's entry."""
        found = None
        for url in self.settings.urls:
            data = await self._get_json(url, "/v1/models")
            models = {m["id"]: m for m in data.get("data", [])}
            if self.model is None:
                if len(models) != 1:
                    raise RtlmError(f"{url} serves {len(models)} models ({', '.join(sorted(models)) or 'none'}): "
                                    "name one with --served-model")
                self.model = next(iter(models))
            if self.model not in models:
                raise RtlmError(f"{url} does not serve model {self.model!r} (it serves {', '.join(sorted(models))}): "
                                "every URL must serve the same model")
            found = found or models[self.model]
        return found

    async def version(self, url: str) -> str | None:
        try:
            return (await self._get_json(url, "/version")).get("version")
        except RtlmError:
            return None

    async def gauges(self, url: str) -> dict[str, float]:
        """The server's queue from its Prometheus ``/metrics`` (vLLM: requests waiting and running);
        empty when it has none."""
        import aiohttp

        out = {}
        try:
            async with self.session.get(url.rstrip("/") + "/metrics") as resp:
                if resp.status != 200:
                    return {}
                for line in (await resp.text()).splitlines():
                    for name in ("num_requests_waiting", "num_requests_running"):
                        if line.startswith(f"vllm:{name}{{") or line.startswith(f"vllm:{name} "):
                            out[name] = out.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError):
            return {}
        return out

    async def cache_config(self, url: str) -> dict:
        """vLLM's KV cache geometry from ``/metrics`` (``vllm:cache_config_info``): block size and KV
        tokens; empty where the server does not say."""
        import re

        import aiohttp

        try:
            async with self.session.get(url.rstrip("/") + "/metrics") as resp:
                text = await resp.text() if resp.status == 200 else ""
        except (aiohttp.ClientError, TimeoutError, OSError):
            return {}
        line = next((x for x in text.splitlines() if x.startswith("vllm:cache_config_info{")), "")
        labels = dict(re.findall(r'(\w+)="([^"]*)"', line))
        out = {}
        for key, name in (("block_size", "block_size"), ("kv_cache_size_tokens", "kv_cache_tokens")):
            if labels.get(key, "").isdigit():
                out[name] = int(labels[key])
        return out

    async def tokenize(self, url: str, prompt: str) -> int | None:
        """Templated prompt tokens by the server's ``/tokenize`` (vLLM, SGLang); None where it has none."""
        import aiohttp

        body = {"model": self.model, "messages": [{"role": "user", "content": prompt}], "add_generation_prompt": True}
        try:
            async with self.session.post(url.rstrip("/") + "/tokenize", json=body) as resp:
                return int((await resp.json(content_type=None))["count"]) if resp.status == 200 else None
        except (aiohttp.ClientError, TimeoutError, OSError, KeyError, ValueError):
            return None

    # -- requests --------------------------------------------------------------------------------
    def chat_body(self, prompt: str, max_tokens: int, temperature: float = 0.0, top_p: float = 1.0,
                  seed: int | None = None, priority: int | None = None) -> tuple[str, dict]:
        body = {"model": self.model, "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
                "temperature": temperature, "stream": True, "stream_options": {"include_usage": True}}
        if temperature > 0:
            body.update(top_p=top_p, seed=seed)
        if priority is not None:
            body["priority"] = priority
        return "/v1/chat/completions", body

    def tokens_body(self, token_ids: list[int], tokens: int) -> tuple[str, dict]:
        """A synthetic request of fixed length (calibration): exactly ``tokens`` new tokens, no early end."""
        return "/v1/completions", {"model": self.model, "prompt": token_ids, "max_tokens": tokens, "min_tokens": tokens,
                                   "ignore_eos": True, "temperature": 0.0, "stream": True,
                                   "stream_options": {"include_usage": True}}

    async def stream(self, path: str, body: dict, url: str | None = None) -> Streamed:
        """Send one request and read its stream to the end; failures are recorded, never raised
        (cancellation is: the caller records it)."""
        url = (url or self.settings.urls[0]).rstrip("/")
        out = Streamed()
        for attempt in range(self.settings.retries + 1):
            out = await self._once(url + path, body)
            out.retries = attempt
            if out.status == "finished" or not out.error.startswith("retryable") or out.ttft_s == out.ttft_s:
                break
        if out.error.startswith("retryable: "):
            out.error = out.error.removeprefix("retryable: ")
        return out

    async def _once(self, url: str, body: dict) -> Streamed:
        import aiohttp

        out = Streamed()
        t0 = time.perf_counter()
        last = None
        try:
            async with self.session.post(url, json=body) as resp:
                if resp.status != 200:
                    text = (await resp.text())[:300]
                    prefix = "retryable: " if resp.status in RETRYABLE else ""
                    return _failed(out, f"{prefix}HTTP {resp.status}: {_message(text)}")
                async for raw in resp.content:
                    line = raw.decode("utf-8", "replace").strip()
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        break
                    chunk = json.loads(data)
                    now = time.perf_counter() - t0
                    for choice in chunk.get("choices") or []:
                        piece = (choice.get("delta") or {}).get("content") or choice.get("text") or ""
                        if piece:
                            if last is None:
                                out.ttft_s = now
                            else:
                                out.itl_s.append(now - last)
                            last = now
                            out.text += piece
                        if choice.get("finish_reason"):
                            out.finish_reason = choice["finish_reason"]
                    if chunk.get("usage"):
                        out.prompt_tokens = int(chunk["usage"].get("prompt_tokens") or 0)
                        out.output_tokens = int(chunk["usage"].get("completion_tokens") or 0)
                    if chunk.get("metrics"):
                        out.server = {k.replace("_ms", "_s"): v / 1000.0 for k, v in chunk["metrics"].items()
                                      if k.endswith("_ms") and isinstance(v, (int, float))}
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            why = f"{type(e).__name__}: {str(e)[:200]}" if str(e) else type(e).__name__
            return _failed(out, ("retryable: " if last is None else "") + why)
        except (json.JSONDecodeError, ValueError) as e:
            return _failed(out, f"unreadable stream: {e}")
        out.e2e_s = (last if last is not None else time.perf_counter() - t0)
        if out.finish_reason is None:
            return _failed(out, "the stream ended before the server said the answer finished")
        if out.ttft_s != out.ttft_s:  # no text at all (an answer of only special tokens): its end is its first token
            out.ttft_s = out.e2e_s
        return out


def _failed(out: Streamed, error: str) -> Streamed:
    out.status, out.error = "failed", error
    return out


def _message(text: str) -> str:
    """The error message of an OpenAI-style error body, or the text itself."""
    try:
        data = json.loads(text)
        err = data.get("error", data)
        return str(err.get("message", err) if isinstance(err, dict) else err)[:200]
    except (json.JSONDecodeError, AttributeError):
        return text[:200]
