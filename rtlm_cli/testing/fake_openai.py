"""A small OpenAI-compatible server for tests, benchmarks and examples (aiohttp.web, 127.0.0.1, a free
port, its own thread; ``python -m rtlm_cli.testing.fake_openai --port P`` runs one in a process of its own).

It streams a deterministic answer per prompt (``tokens_for``) at a fixed time per token, runs at
most ``max_running`` requests at once (the rest wait in a queue ordered by priority: lower first
when ``priorities == "lower-first"``, vLLM's order; higher first when "higher-first", SGLang's
default; in arrival order when "ignore"; a priority is a 400 when "refuse"), reports its queue on
/metrics as vLLM does, counts the streams it holds open and their peak, and injects faults on
request: a prompt containing FAIL500 gets a 500, FAIL503ONCE a 503 the first time, CUT a stream cut
after two tokens. ``timing``: a timing table (a shipped name such as ``vllm-cpu``, or a file) prices
each streamed token instead of ``ms_per_token``: a decode step at the number of requests running now
and the request's context (the first one: its prefill), so fake backends slow down as they fill as
vLLM-CPU does, where two real servers do not fit on two cores. ``lengths``: answer lengths by prompt
text (a profile's true ones) instead of ``tokens_for``. ``gate`` N: nothing starts until N requests have
arrived (a burst is then ordered whole, whatever order its connections were made in).
``die_after`` N: the first request to arrive once N answers have finished kills it, as a killed server
dies (that request and every open stream dropped, nothing answers after), so a fault comes at a
point the test chose, not at a wall-clock time. ``die_at_answer`` N: it dies the same way once its
N-th answer has been sent whole. ``on_answer`` (N, fn): fn() is called (on the server's thread)
once the N-th answer has been sent, e.g. to interrupt the client at a chosen point. ``pause()`` /
``resume()``: requests that arrive in between wait (their streams open) until it resumes.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import heapq
import itertools
import json
import threading

from aiohttp import web


def tokens_for(prompt: str, max_tokens: int) -> tuple[int, str]:
    """(answer tokens, finish reason): 3-40 tokens from the prompt's hash, capped at max_tokens."""
    n = 3 + int(hashlib.sha256(prompt.encode()).hexdigest()[:4], 16) % 38
    return (n, "stop") if n < max_tokens else (max_tokens, "length")


class FakeOpenAI:
    def __init__(self, model: str = "smollm2", ms_per_token: float = 5.0, max_running: int = 1_000_000,
                 priorities: str = "lower-first", api_key: str | None = None, gate: int = 0,
                 die_after: int | None = None, die_at_answer: int | None = None,
                 on_answer: tuple | None = None, port: int = 0, timing: str | None = None,
                 lengths: dict[str, int] | None = None):
        self.model, self.step_s, self.max_running = model, ms_per_token / 1000.0, max_running
        self.priorities, self.api_key, self.gate, self.die_after = priorities, api_key, gate, die_after
        self.die_at_answer, self.on_answer, self.port = die_at_answer, on_answer, port
        self.lengths = lengths or {}
        self.cost = None
        if timing is not None:
            from rtlm_cli.formats.timing import load_timing_table
            from rtlm_cli.serve.costmodel import CostModel, bucket

            self.cost, self.bucket = CostModel.from_table(load_timing_table(timing)), bucket
        self.arrived = self.answered = 0
        self.paused = False
        self.open_streams = self.peak_streams = self.running = 0
        self.started: list[str] = []  # prompts in the order they started running
        self.seen_headers: list[dict] = []
        self.bodies: list[dict] = []
        self.transports: set = set()
        self._waiting: list = []
        self._seq = itertools.count()
        self._once: set[str] = set()
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()
        self.ready.wait(10)

    # -- lifecycle --------------------------------------------------------------------------------
    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        app = web.Application()
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/health", self.health)
        app.router.add_get("/metrics", self.metrics)
        app.router.add_post("/tokenize", self.tokenize)
        app.router.add_post("/v1/chat/completions", self.complete)
        app.router.add_post("/v1/completions", self.complete)
        self.runner = web.AppRunner(app, handler_cancellation=True)  # a client that leaves ends its request, as vLLM aborts it
        self.loop.run_until_complete(self.runner.setup())
        self.site = web.TCPSite(self.runner, "127.0.0.1", self.port)
        self.loop.run_until_complete(self.site.start())
        self.port = self.runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.ready.set()
        self.loop.run_forever()

    def close(self) -> None:
        """Stop serving at once, as a server that dies: open connections are dropped, none answers."""
        if not self.loop.is_running():
            return
        asyncio.run_coroutine_threadsafe(self._die(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    async def _die(self) -> None:
        for transport in list(self.transports):
            transport.abort()
        await self.runner.shutdown()
        await self.runner.cleanup()

    async def _die_now(self) -> None:
        """Die without waiting for handlers (the runner's shutdown would wait for the one asleep here):
        stop listening, drop every connection, stop the loop."""
        await self.site.stop()
        for transport in list(self.transports):
            transport.abort()
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for t in others:
            t.cancel()
        if others:  # sockets close, handlers end, on later turns of the loop
            await asyncio.wait(others, timeout=1)
        self.loop.stop()

    # -- endpoints --------------------------------------------------------------------------------
    async def models(self, request):
        if self.api_key and request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return web.json_response({"error": {"message": "bad api key"}}, status=401)
        return web.json_response({"object": "list", "data": [{"id": self.model, "object": "model", "root": None}]})

    async def health(self, request):
        return web.Response(text="ok")

    async def metrics(self, request):
        return web.Response(text=f'vllm:num_requests_waiting{{model_name="{self.model}"}} {len(self._waiting)}.0\n'
                                 f'vllm:num_requests_running{{model_name="{self.model}"}} {self.running}.0\n')

    async def tokenize(self, request):
        body = await request.json()
        text = body["messages"][0]["content"] if "messages" in body else body["prompt"]
        return web.json_response({"count": 30 + len(text.split())})

    async def _slot(self, priority: int) -> None:
        """Wait for a running slot: the queue is a heap on (the priority's place, arrival)."""
        self.arrived += 1
        ready = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiting, (self._order(priority), next(self._seq), ready))
        self._admit()
        await ready

    def _order(self, priority: int) -> int:
        return {"lower-first": priority, "higher-first": -priority}.get(self.priorities, 0)

    def pause(self) -> None:
        """Hold every request that arrives from now on (its stream open, nothing sent) until ``resume``."""
        self.loop.call_soon_threadsafe(setattr, self, "paused", True)

    def resume(self) -> None:
        def go():
            self.paused = False
            self._admit()

        self.loop.call_soon_threadsafe(go)

    def _admit(self) -> None:
        while not self.paused and self.arrived >= self.gate and self._waiting and self.running < self.max_running:
            _, _, ready = heapq.heappop(self._waiting)
            if not ready.done():  # a client that went away while waiting
                self.running += 1
                ready.set_result(None)

    def _release(self) -> None:
        self.running -= 1
        self._admit()

    @contextlib.asynccontextmanager
    async def _running(self, body: dict, prompt: str):
        """An open stream that holds a running slot for the block (after waiting for one)."""
        self.open_streams += 1
        self.peak_streams = max(self.peak_streams, self.open_streams)
        try:
            await self._slot(int(body.get("priority", 0)))
            self.started.append(prompt)
            try:
                yield
            finally:
                self._release()
        finally:
            self.open_streams -= 1

    async def _whole(self, request, body: dict, prompt: str, n: int, reason: str):
        """A non-streamed answer: the whole text and its usage at once, after its tokens' time."""
        async with self._running(body, prompt):
            await asyncio.sleep(self.step_s * n)
        usage = {"prompt_tokens": 30 + len(prompt.split()), "completion_tokens": n,
                 "total_tokens": 30 + len(prompt.split()) + n}
        resp = web.json_response({"id": "cmpl-fake", "created": 0, "model": self.model, "usage": usage,
                                  "object": "chat.completion" if "messages" in body else "text_completion",
                                  "choices": [_answer(body, "".join(f"t{i} " for i in range(n)), reason)]})
        await resp.prepare(request)
        await resp.write_eof()
        self._answered()
        return resp

    def _step_s(self, prompt: str, i: int) -> float:
        """Seconds before token ``i``: fixed, or priced by the timing table at the running count."""
        if self.cost is None:
            return self.step_s
        context = self.bucket(30 + len(prompt.split()) + i)
        return self.cost.prefill(1, context) if i == 0 else self.cost.step(max(self.running, 1), context)

    def _answered(self) -> None:
        """An answer was sent whole: count it, and act on ``on_answer`` and ``die_at_answer``."""
        self.answered += 1
        if self.on_answer and self.answered == self.on_answer[0]:
            self.on_answer[1]()
        if self.answered == self.die_at_answer:
            asyncio.get_running_loop().create_task(self._die_now())

    async def complete(self, request):
        self.transports.add(request.transport)
        if self.die_after is not None and self.answered >= self.die_after:
            asyncio.get_running_loop().create_task(self._die_now())
            await asyncio.sleep(3600)  # dropped with the rest
        self.seen_headers.append(dict(request.headers))
        if self.api_key and request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return web.json_response({"error": {"message": "bad api key"}}, status=401)
        body = await request.json()
        self.bodies.append(body)
        prompt = body["messages"][0]["content"] if "messages" in body else json.dumps(body["prompt"])
        if "priority" in body and self.priorities == "refuse":
            return web.json_response({"error": {"message": "priority is not enabled on this server"}}, status=400)
        if "FAIL500" in prompt:
            return web.json_response({"error": {"message": "internal failure"}}, status=500)
        if "FAIL503ONCE" in prompt and prompt not in self._once:
            self._once.add(prompt)
            return web.json_response({"error": {"message": "overloaded"}}, status=503)
        n, reason = tokens_for(prompt, int(body.get("max_tokens", 16)))
        if prompt in self.lengths:  # a profile's true answer length for this prompt
            cap = int(body.get("max_tokens", 16))
            n, reason = (self.lengths[prompt], "stop") if self.lengths[prompt] < cap else (cap, "length")
        if body.get("ignore_eos"):
            n, reason = int(body["max_tokens"]), "length"
        if not body.get("stream"):
            return await self._whole(request, body, prompt, n, reason)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        async with self._running(body, prompt):
            await resp.prepare(request)
            for i in range(n):
                await asyncio.sleep(self._step_s(prompt, i))
                if "CUT" in prompt and i == 2:
                    request.transport.close()  # the connection drops mid-answer
                    return resp
                await resp.write(_event({"choices": [{"index": 0, "delta": {"content": f"t{i} "}, "finish_reason": None}]}))
            await resp.write(_event({"choices": [{"index": 0, "delta": {}, "finish_reason": reason}]}))
            await resp.write(_event({"choices": [], "usage": {"prompt_tokens": 30 + len(prompt.split()),
                                                              "completion_tokens": n}}))
            await resp.write(b"data: [DONE]\n\n")
            await resp.write_eof()
        self._answered()
        return resp


def _answer(body: dict, text: str, reason: str) -> dict:
    if "messages" in body:
        return {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": reason}
    return {"index": 0, "text": text, "finish_reason": reason}


def _event(obj) -> bytes:
    return f"data: {json.dumps(obj)}\n\n".encode()


if __name__ == "__main__":  # a fake server in a process of its own (benchmarks pin it to a core)
    import argparse
    import time

    ap = argparse.ArgumentParser(description="the tests' fake OpenAI server, on 127.0.0.1:PORT until killed")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--ms-per-token", type=float, default=0.0)
    ap.add_argument("--max-running", type=int, default=1_000_000)
    ap.add_argument("--timing", help="price each token by this timing table (e.g. vllm-cpu)")
    a = ap.parse_args()
    FakeOpenAI(ms_per_token=a.ms_per_token, max_running=a.max_running, port=a.port, timing=a.timing)
    while True:
        time.sleep(3600)
