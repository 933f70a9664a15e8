"""Open a page in headless Chromium at a given width and evaluate JavaScript in it, over the Chrome
DevTools protocol (a websocket, with aiohttp). Chromium is Debian's package `chromium`, which
`scripts/test.sh` installs; it listens on 127.0.0.1 only, on a free port, and is stopped at the end."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def evaluate(url: str, expression: str, width: int = 1280, height: int = 900, timeout_s: float = 60.0):
    """The value of ``expression`` (a JSON-serialisable JavaScript expression) once ``url`` has loaded."""
    port = _free_port()
    profile = tempfile.mkdtemp(prefix="rtlm-chromium-")
    proc = subprocess.Popen([chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                             "--disable-background-networking", "--disable-component-update", "--disable-sync",
                             f"--remote-debugging-port={port}", "--remote-debugging-address=127.0.0.1",
                             f"--user-data-dir={profile}", f"--window-size={width},{height}", "about:blank"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        return asyncio.run(asyncio.wait_for(_evaluate(port, url, expression, width, height), timeout_s))
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(10)
        shutil.rmtree(profile, ignore_errors=True)


async def _evaluate(port: int, url: str, expression: str, width: int, height: int):
    import aiohttp

    async with aiohttp.ClientSession() as session:
        deadline = time.monotonic() + 30
        while True:
            try:
                async with session.get(f"http://127.0.0.1:{port}/json/list") as resp:
                    pages = [p for p in await resp.json() if p.get("type") == "page"]
                    if pages:
                        break
            except aiohttp.ClientError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("chromium did not open its debugging port")
            await asyncio.sleep(0.2)
        async with session.ws_connect(pages[0]["webSocketDebuggerUrl"], max_msg_size=0) as ws:
            ids = iter(range(1, 1_000_000))

            async def call(method: str, **params):
                mid = next(ids)
                await ws.send_str(json.dumps({"id": mid, "method": method, "params": params}))
                while True:
                    msg = json.loads((await ws.receive()).data)
                    if msg.get("id") == mid:
                        if "error" in msg:
                            raise RuntimeError(f"{method}: {msg['error']}")
                        return msg.get("result", {})
                    if msg.get("method") == "Page.loadEventFired":
                        loaded.set()

            loaded = asyncio.Event()
            await call("Page.enable")
            await call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)
            await call("Page.navigate", url=url)
            while not loaded.is_set():
                msg = json.loads((await ws.receive()).data)
                if msg.get("method") == "Page.loadEventFired":
                    loaded.set()
            result = await call("Runtime.evaluate", expression=f"JSON.stringify({expression})", returnByValue=True)
            return json.loads(result["result"]["value"])
