"""A serving engine reached over HTTP (a vLLM server rtlm started, or any OpenAI-compatible URL)
behind the engine interface the profiler uses: ``info``, ``prompt_tokens``, ``generate`` (here: the
prompts sent together, each timed on its own stream) and ``timing_point`` (synthetic requests of
fixed lengths at a fixed concurrency). Serving executors use its asyncio ``client`` directly.

It owns one event loop; every call runs there, so its aiohttp session is made once.
"""

from __future__ import annotations

import asyncio
import json
import statistics
from pathlib import Path

from rtlm_cli.engines.base import BatchResult, Generation, GenerationSettings, ModelInfo
from rtlm_cli.engines.openai import Client, ClientSettings
from rtlm_cli.engines.upstream import Outcome
from rtlm_cli.errors import RtlmError


class ServerEngine:
    def __init__(self, name: str, settings: ClientSettings, max_in_flight: int = 0, model_hash: str | None = None,
                 server: dict | None = None):
        self.name = name  # "vllm" | "openai"
        self.loop = asyncio.new_event_loop()
        self.client = Client(settings, max_in_flight)
        self.run(self.client.__aenter__())
        try:
            entry = self.run(self.client.check())
            url = settings.urls[0]
            self.version = self.run(self.client.version(url))
            kv = self.run(self.client.cache_config(url))
        except BaseException:
            self.close()
            raise
        self.server = {"urls": list(settings.urls), "version": self.version, **kv, **(server or {})}
        self.info = ModelInfo(model_id=self.client.model, resolved=str(entry.get("root") or url),
                              model_hash=model_hash or served_hash(entry), dtype="server", device=name,
                              device_name=f"{name} {self.version or '(version unknown)'}")

    def run(self, coro):
        """Run a coroutine on the engine's loop; when it is interrupted (Ctrl-C), every task of the
        loop is cancelled and finished off before the interruption goes on."""
        task = self.loop.create_task(coro)
        try:
            return self.loop.run_until_complete(task)
        except BaseException:
            pending = [t for t in asyncio.all_tasks(self.loop) if not t.done()]
            for t in pending:
                t.cancel()
            if pending:
                self.loop.run_until_complete(_drain(pending))
            raise

    def close(self) -> None:
        if self.client.open:
            self.run(self.client.__aexit__(None, None, None))
        self.loop.close()

    # -- the engine interface --------------------------------------------------------------------
    def prompt_tokens(self, prompts: list[str]) -> list[int]:
        """Templated prompt tokens by the server's /tokenize (vLLM, SGLang)."""
        async def count():
            sem = asyncio.Semaphore(32)

            async def one(p):
                async with sem:
                    return await self.client.tokenize(self.client.settings.urls[0], p)

            return await asyncio.gather(*(one(p) for p in prompts))

        counts = self.run(count())
        if any(c is None for c in counts):
            raise RtlmError(f"{self.client.settings.urls[0]} has no /tokenize endpoint: rtlm cannot count prompt "
                            "tokens there (raise --max-prompt-tokens past your longest prompt to skip the count)")
        return counts

    def generate(self, prompts: list[str], settings: GenerationSettings) -> BatchResult:
        """The prompts sent at once, each timed on its own stream (no padded batch: the server
        batches continuously); ``wall_s`` spans the first send to the last answer."""
        async def burst():
            t0 = asyncio.get_running_loop().time()
            outs = await asyncio.gather(*(self.client.stream(*self.client.chat_body(
                p, settings.max_new_tokens, settings.temperature, settings.top_p, settings.seed)) for p in prompts))
            return outs, asyncio.get_running_loop().time() - t0

        outs, wall = self.run(burst())
        failed = [o for o in outs if o.status != "finished"]
        if failed:
            raise RtlmError(f"{len(failed)} of {len(outs)} requests failed: {failed[0].error}")
        return BatchResult([generation(o) for o in outs], wall_s=wall)

    def timing_point(self, batch: int, context: int, decode_steps: int) -> tuple[float, float]:
        """``batch`` synthetic requests of ``context`` random prompt tokens sent together, each asked
        for exactly ``decode_steps + 1`` tokens: (median TTFT, median inter-token latency). Random
        tokens per request and per call keep prefix caching out of it."""
        outs = self.timing_streams(batch, context, decode_steps)
        itl = [x for o in outs for x in o.itl_s]
        return statistics.median(o.ttft_s for o in outs), statistics.median(itl) if itl else float("nan")

    def timing_streams(self, batch: int, context: int, decode_steps: int) -> list:
        """The streams of one timing point (see ``timing_point``), each timed on the client."""
        import numpy as np

        rng = np.random.default_rng(batch * 100_003 + context)  # this point's own generator

        async def point():
            bodies = [self.client.tokens_body(rng.integers(100, 30_000, context).tolist(), decode_steps + 1)
                      for _ in range(batch)]
            return await asyncio.gather(*(self.client.stream(*b) for b in bodies))

        outs = self.run(point())
        bad = [o for o in outs if o.status != "finished"]
        if bad:
            raise RtlmError(f"calibration request failed at batch {batch}, context {context}: {bad[0].error}")
        return outs


async def _drain(tasks) -> None:
    await asyncio.gather(*tasks, return_exceptions=True)


def generation(o: Outcome) -> Generation:
    return Generation(prompt_tokens=o.prompt_tokens, output_tokens=o.output_tokens, ended=o.finish_reason == "stop",
                      ttft_s=o.ttft_s, e2e_s=o.e2e_s, text=o.text)


def served_hash(entry: dict) -> str:
    """A served model's identity: rtlm's own hash when the server loads a model rtlm converted on this
    machine (so its profiles compare with the hf engine's), else the server's name and root."""
    root = entry.get("root")
    marker = Path(root) / "rtlm-converted.json" if root else None
    if marker is not None and marker.is_file():
        return json.loads(marker.read_text())["sha256"]
    return f"served:{entry.get('id')}@{root}"
