"""The one async driver of the slot queue (``decide.slots.SlotQueue``) on a real clock.

The gateway service, the gateway replay (``serve-local --dispatch gateway``) and Ray Serve's capacity
actor all drive the queue through it, so they cannot differ in a step: a request ``acquire``s a
backend (it waits in the policy's order, and gets None when it is shed), and ``release``s it when its
answer ended; every ``Output`` the queue gives is acted on whole (sends handed to their waiting
callers, shed requests told, a gathering window released when it ends). A caller that leaves while
waiting leaves the queue; one that leaves between the decision and its send gives the slot back.

The clock is injected (seconds, any origin): a test drives the driver on a clock of its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from rtlm_cli.serve.decide.backend import Backend
from rtlm_cli.serve.decide.request import Request
from rtlm_cli.serve.decide.slots import Output, SlotQueue


class SlotDriver:
    def __init__(self, queue: SlotQueue, clock: Callable[[], float], on_withdrawn: Callable[[Request], None] | None = None):
        """``on_withdrawn(request)``: a waiting request left the queue unserved (its caller went away)."""
        self.queue, self.clock, self.on_withdrawn = queue, clock, on_withdrawn
        self.waiting: dict[int, asyncio.Future] = {}
        self.chores: set[asyncio.Task] = set()

    @property
    def core(self):
        return self.queue.core

    # -- what callers do -------------------------------------------------------------------------
    async def acquire(self, r: Request) -> Backend | None:
        """The backend that takes ``r`` once the policy's order reaches it; None if it was shed. A
        cancelled caller leaves the queue (or gives back a slot it was just given)."""
        fut = asyncio.get_running_loop().create_future()
        self.waiting[r.rid] = fut
        self.apply(self.queue.arrive(r, self.clock()))
        try:
            return await fut
        except asyncio.CancelledError:
            self.waiting.pop(r.rid, None)
            if self.core.withdraw(r.rid):
                if self.on_withdrawn is not None:
                    self.on_withdrawn(r)
            elif fut.done() and not fut.cancelled() and fut.result() is not None:
                self.release(fut.result(), r)  # placed, never sent
            raise

    def release(self, backend: Backend, r: Request, output_tokens: int | None = None) -> None:
        """``r`` left ``backend`` (answered with ``output_tokens``, or failed or cancelled: None)."""
        self.apply(self.queue.left(backend.bid, self.clock(), r, output_tokens))

    def fill(self) -> None:
        """Free slots take what waits (a backend came back)."""
        self.apply(self.queue.fill(self.clock()))

    def add_backend(self, backend: Backend) -> None:
        self.apply(self.queue.add_backend(backend, self.clock()))

    # -- acting on an output ---------------------------------------------------------------------
    def apply(self, out: Output) -> None:
        """Every step of one output: sends to their callers, shed requests told, a window's end set."""
        for r, b in out.sends:
            fut = self.waiting.pop(r.rid, None)
            if fut is not None and not fut.done():
                fut.set_result(b)
            else:  # its caller left between the decision and now: the slot goes to the next one
                self.release(b, r)
        for r in out.shed:
            fut = self.waiting.pop(r.rid, None)
            if fut is not None and not fut.done():
                fut.set_result(None)
        if out.hold_until is not None:
            self.spawn(self._release_at(out.hold_until))

    async def _release_at(self, at: float) -> None:
        await asyncio.sleep(max(at - self.clock(), 0.0))
        self.apply(self.queue.release(self.clock()))

    def spawn(self, coro) -> None:
        """A background task of the driver, kept until it is done."""
        task = asyncio.get_running_loop().create_task(coro)
        self.chores.add(task)
        task.add_done_callback(self.chores.discard)

    async def close(self) -> None:
        for t in list(self.chores):
            t.cancel()
        await asyncio.gather(*self.chores, return_exceptions=True)
