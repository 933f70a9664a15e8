"""The priority preflight of direct dispatch: before a run whose order travels as request
priorities, the server must accept them *and honour them* (vLLM: a heap on (priority, arrival),
lower first, only with ``--scheduling-policy priority``; 0.32 started without it accepts the field
silently and serves in arrival order). A server that refuses or ignores priorities is an error,
never a run whose order means nothing.
"""

from __future__ import annotations

import asyncio

from rtlm_cli.errors import RtlmError

PRIORITY_FLAGS = "start vLLM with --scheduling-policy priority (SGLang: --enable-priority-scheduling)"


async def check_priorities(client, url: str, sign: int, probe: bool = True) -> None:
    """A request with a non-zero priority must be accepted, and (``probe``) honoured: with the server
    full, a later request of a more urgent priority must start before an earlier, less urgent one."""
    ok = await client.stream(*client.chat_body("Say OK.", 1, priority=sign), url)
    if ok.status != "finished" and not ok.error.startswith("HTTP 4"):
        raise RtlmError(f"the preflight request to {url} failed ({ok.error}): is the server still up?")
    if ok.status != "finished":
        raise RtlmError(f"{url} refused a request with a priority ({ok.error}): {PRIORITY_FLAGS}")
    if probe and await _order_probe(client, url, sign) is False:
        raise RtlmError(f"{url} accepts request priorities but serves in arrival order: {PRIORITY_FLAGS}")


async def _order_probe(client, url: str, sign: int) -> bool | None:
    """Fill the server until its /metrics shows a waiting request, then send a less urgent request
    and, 0.1 s later, a more urgent one: True when the urgent one starts first, False when the
    earlier one does, None when the server shows no queue (no /metrics): nothing to tell."""
    blockers: list[asyncio.Task] = []
    probes: list[asyncio.Task] = []
    try:
        for _ in range(1024):
            blockers.append(asyncio.create_task(client.stream(*client.tokens_body(list(range(100, 116)), 24), url)))
            await asyncio.sleep(0.05)
            gauges = await client.gauges(url)
            if not gauges:
                return None
            if gauges.get("num_requests_waiting", 0) >= 1:
                break
        late = asyncio.create_task(client.stream(*client.chat_body("Say A.", 2, priority=sign * 5), url))
        await asyncio.sleep(0.1)
        urgent = asyncio.create_task(client.stream(*client.chat_body("Say B.", 2, priority=sign * -5), url))
        probes = [late, urgent]
        done, _ = await asyncio.wait(probes, return_when=asyncio.FIRST_COMPLETED)
        if len(done) == 2:  # both within one tick: compare when each started to answer
            return urgent.result().ttft_s + 0.1 < late.result().ttft_s
        return urgent in done
    finally:
        for t in blockers + probes:
            t.cancel()
        await asyncio.gather(*blockers, *probes, return_exceptions=True)
