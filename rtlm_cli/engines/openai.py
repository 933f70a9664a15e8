"""A client of OpenAI-compatible servers (vLLM, SGLang, llama.cpp's server, TGI, ...): its settings,
the request bodies rtlm sends, and what it asks a server besides completions (its models, version,
queue gauges, KV-cache geometry, token counts). Every byte goes through ``engines/upstream.py``, the
one module that opens a session to a backend, reads its streams and times them (TTFT = the first
chunk with ``choices``, as ``vllm bench serve`` times it; see there).

Limits are explicit: the connection pool is as large as the requests in flight, timeouts come from
settings (no library default), nothing is retried unless asked (``--retries``: the one rule of
``Outcome.retryable``), and every retry is counted on its request.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field

from rtlm_cli.engines.upstream import Outcome, Upstream
from rtlm_cli.errors import RtlmError

API_KEY_ENV = ("RTLM_API_KEY", "OPENAI_API_KEY")
Streamed = Outcome  # the name before 0.2 (one request's outcome)

@dataclass(frozen=True)
class ClientSettings:
    urls: tuple[str, ...] = field(default=(), metadata={"help": "Base URL of an OpenAI-compatible server (e.g. http://127.0.0.1:8000), repeatable; every URL must serve the same model."})
    served_model: str | None = field(default=None, metadata={"help": "The model name the server serves (default: the one it lists; needed when it lists several)."})
    api_key: str | None = field(default=None, metadata={"help": f"API key sent as a bearer token (default: ${API_KEY_ENV[0]}, then ${API_KEY_ENV[1]})."})
    headers: tuple[str, ...] = field(default=(), metadata={"help": "An extra HTTP header 'Name: value', repeatable."})
    ca_bundle: str | None = field(default=None, metadata={"help": "CA bundle (PEM) to verify the server's TLS certificate."})
    connect_timeout_s: float = field(default=10.0, metadata={"help": "Seconds to wait for a connection to a server."})
    request_timeout_s: float = field(default=900.0, metadata={"help": "Seconds a request may take from send to its last token (queueing included) before it is recorded failed."})
    retries: int = field(default=0, metadata={"help": "Times a request that failed before its first chunk because its server is down or overloaded (no connection, HTTP 502/503/504) is sent again; each retry is recorded."})

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


class Client:
    """A session to one or more servers (``Upstream``); use inside ``async with``."""

    def __init__(self, settings: ClientSettings, max_in_flight: int = 0):
        self.settings = settings.validate()
        self.max_in_flight = max_in_flight  # 0: no limit
        self.model: str | None = settings.served_model
        self.upstream = Upstream(headers=settings.header_dict(), connect_timeout_s=settings.connect_timeout_s,
                                 request_timeout_s=settings.request_timeout_s, max_in_flight=max_in_flight,
                                 ca_bundle=settings.ca_bundle, retries=settings.retries)

    @property
    def open(self) -> bool:
        return self.upstream.session is not None

    async def __aenter__(self) -> "Client":
        await self.upstream.__aenter__()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.upstream.__aexit__(*exc)

    # -- the servers -----------------------------------------------------------------------------
    async def _get_json(self, url: str, path: str):
        status, body = await self.upstream.get(url.rstrip("/") + path)
        if status == 0:
            raise RtlmError(f"cannot reach {url}: is the server running, and is the URL right?")
        if status != 200:
            raise RtlmError(f"{url}{path} answered HTTP {status}: {body[:200].decode('utf-8', 'replace')}")
        try:
            return json.loads(body)
        except ValueError:
            raise RtlmError(f"{url}{path} answered something that is not JSON: is it an OpenAI-compatible server?") from None

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
        except (RtlmError, AttributeError):
            return None

    async def _metrics_text(self, url: str) -> str:
        status, body = await self.upstream.get(url.rstrip("/") + "/metrics")
        return body.decode("utf-8", "replace") if status == 200 else ""

    async def gauges(self, url: str) -> dict[str, float]:
        """The server's queue from its Prometheus ``/metrics`` (vLLM: requests waiting and running);
        empty when it has none."""
        out = {}
        try:
            for line in (await self._metrics_text(url)).splitlines():
                for name in ("num_requests_waiting", "num_requests_running"):
                    if line.startswith(f"vllm:{name}{{") or line.startswith(f"vllm:{name} "):
                        out[name] = out.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
        except ValueError:
            return {}
        return out

    async def cache_config(self, url: str) -> dict:
        """vLLM's KV cache geometry from ``/metrics`` (``vllm:cache_config_info``): block size and KV
        tokens; empty where the server does not say."""
        text = await self._metrics_text(url)
        line = next((x for x in text.splitlines() if x.startswith("vllm:cache_config_info{")), "")
        labels = dict(re.findall(r'(\w+)="([^"]*)"', line))
        out = {}
        for key, name in (("block_size", "block_size"), ("kv_cache_size_tokens", "kv_cache_tokens")):
            if labels.get(key, "").isdigit():
                out[name] = int(labels[key])
        return out

    async def tokenize(self, url: str, prompt: str) -> int | None:
        """Templated prompt tokens by the server's ``/tokenize`` (vLLM, SGLang); None where it has none."""
        body = {"model": self.model, "messages": [{"role": "user", "content": prompt}], "add_generation_prompt": True}
        status, data = await self.upstream.post_json(url.rstrip("/") + "/tokenize", body)
        try:
            return int(json.loads(data)["count"]) if status == 200 else None
        except (KeyError, ValueError, TypeError):
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

    async def stream(self, path: str, body: dict, url: str | None = None) -> Outcome:
        """Send one request and read its answer to the end (``Upstream.send``: retried by the one
        rule, failures recorded, never raised; cancellation is: the caller records it)."""
        return await self.upstream.send((url or self.settings.urls[0]).rstrip("/") + path, body)
