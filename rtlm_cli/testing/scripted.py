"""A backend that plays a script, and a clock that ticks, to test how rtlm reads and times a stream.

``ScriptedBackend(lines)``: an OpenAI-compatible endpoint (aiohttp.web on 127.0.0.1, a free port, its
own thread) whose every completion answers with the same server-sent-event lines, written as given
(a malformed line included), then closes the stream; ``status`` other than 200 answers that status
with ``lines`` joined as its body. ``/v1/models`` and ``/health`` answer as a server does.

``Ticks()``: a clock that reads 0, 1, 2, ... one step per call. Injected into ``Upstream``, it makes a
stream's timings a function of the lines read alone (the send is tick 0, each line read one tick
more), so two paths that read the same script through the same code time it identically.
"""

from __future__ import annotations

import asyncio
import json
import threading

from aiohttp import web


class Ticks:
    def __init__(self):
        self.t = -1.0

    def __call__(self) -> float:
        self.t += 1.0
        return self.t


def chat_script(pieces: list[str], finish_reason: str = "stop", prompt_tokens: int = 7,
                model: str = "scripted") -> list[bytes]:
    """A well-formed chat stream as vLLM sends it: the role chunk, one chunk per piece of text, the
    finish chunk, the usage chunk and ``[DONE]``."""
    def event(choices, **extra):
        return f"data: {json.dumps({'id': 'c', 'model': model, 'choices': choices, **extra})}\n\n".encode()

    out = [event([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])]
    out += [event([{"index": 0, "delta": {"content": p}, "finish_reason": None}]) for p in pieces]
    out.append(event([{"index": 0, "delta": {}, "finish_reason": finish_reason}]))
    out.append(event([], usage={"prompt_tokens": prompt_tokens, "completion_tokens": len(pieces),
                                "total_tokens": prompt_tokens + len(pieces)}))
    out.append(b"data: [DONE]\n\n")
    return out


class ScriptedBackend:
    def __init__(self, lines: list[bytes], status: int = 200, model: str = "scripted"):
        self.lines, self.status, self.model = list(lines), status, model
        self.bodies: list[dict] = []
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()
        if not self.ready.wait(10):
            raise RuntimeError("the scripted backend did not start")

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        app = web.Application()
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/health", self._health)
        app.router.add_post("/v1/chat/completions", self._complete)
        app.router.add_post("/v1/completions", self._complete)
        self.runner = web.AppRunner(app)
        self.loop.run_until_complete(self.runner.setup())
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        self.loop.run_until_complete(site.start())
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}"
        self.ready.set()
        self.loop.run_forever()

    async def _health(self, request):
        return web.Response(text="ok")

    async def _models(self, request):
        return web.json_response({"object": "list", "data": [{"id": self.model, "object": "model", "root": None}]})

    async def _complete(self, request):
        self.bodies.append(await request.json())
        if self.status != 200:
            return web.Response(body=b"".join(self.lines), status=self.status, content_type="application/json")
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for line in self.lines:
            await resp.write(line)
        await resp.write_eof()
        return resp

    def close(self) -> None:
        if not self.loop.is_running():
            return
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    def __enter__(self) -> "ScriptedBackend":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
