"""``RtlmCapacityQueue``: the Ray actor that holds rtlm's central capacity queue for one deployment.

Declared as a deployment-scoped actor of the deployment it routes for (``deployment.py`` does it),
so the Serve controller starts it with the deployment, health-checks it, starts a new one when it
dies, and deletes it with the deployment. It learns the deployment's running replicas and their
``max_ongoing_requests`` from the controller (Ray's long poll, as Ray's own experimental
``CapacityQueue`` does), so a replica Ray adds takes requests at once and a replica that dies or is
stopped has its tokens reclaimed.

``acquire(token, fields)`` waits until the policy's order gives the request a replica and returns the
replica's id (``""``: shed, its deadline can no longer be met); ``release(token)`` gives the slot
back. A cancelled ``acquire`` (``ray.cancel``: the client went away) leaves the queue. The waiting is
``TokenQueue``'s, driven by the one async driver of the slot queue (``serve/live/driver.py``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque

import ray

from rtlm_cli.formats.timing import load_timing_table
from rtlm_cli.integrations.ray_serve.queue import SHED, TokenQueue
from rtlm_cli.serve.costmodel import CostModel
from rtlm_cli.serve.decide.slots import GATHER_MS

logger = logging.getLogger("ray.serve")
ORDER_KEPT = 10_000  # the latest hand-outs kept for ``handed_out`` (tests, inspection)


class RtlmCapacityQueue:
    def __init__(self, policy: str = "rtlm", timing: str = "vllm-cpu", placement: str = "least-loaded",
                 gather_ms: float = GATHER_MS, shed: bool = False, token_ttl_s: float | None = None,
                 _enable_long_poll: bool = True):
        """``token_ttl_s``: a token still out after this long is taken back (a safety net for tokens
        the router never returns; None: never). ``_enable_long_poll``: False outside a deployment
        (tests register replicas themselves)."""
        cost = CostModel.from_table(load_timing_table(timing), name=timing)
        self.queue = TokenQueue(policy, cost, placement=placement, gather_s=gather_ms / 1000.0, shed=shed)
        self.policy, self.ttl = policy, token_ttl_s
        self.since: dict[str, float] = {}  # token -> when it was handed out (for the TTL)
        self.order: deque[str] = deque(maxlen=ORDER_KEPT)
        self.acquires = self.releases = self.shed = self.expired = 0
        self.reaper: asyncio.Task | None = None
        self.long_poll = self._subscribe() if _enable_long_poll else None

    # -- what routers call -------------------------------------------------------------------------
    async def acquire(self, token: str, fields: dict) -> str:
        """The replica the request ``token`` runs on, once the policy's order reaches it (SHED: it
        was shed). ``fields``: the request as ``queue.describe`` gives it."""
        self.acquires += 1
        replica = await self.queue.acquire(token, fields)
        if replica == SHED:
            self.shed += 1
            return SHED
        self.since[token] = time.time()
        self.order.append(token)
        if self.ttl and (self.reaper is None or self.reaper.done()):
            self.reaper = asyncio.get_running_loop().create_task(self._reap())
        return replica

    def release(self, token: str, output_tokens: int | None = None) -> None:
        """The request ``token`` ended (or its caller gave up after it was placed)."""
        self.releases += 1
        self.since.pop(token, None)
        self.queue.release(token, output_tokens)

    # -- replicas (the controller's long poll, or a test) --------------------------------------------
    def register_replica(self, replica_id: str, capacity: int) -> None:
        self.queue.add_replica(replica_id, capacity)

    def unregister_replica(self, replica_id: str) -> None:
        for token in self.queue.remove_replica(replica_id):
            self.since.pop(token, None)

    # -- inspection ------------------------------------------------------------------------------
    def stats(self) -> dict:
        return {"policy": self.policy, "waiting": len(self.queue.waiting), "placed": len(self.queue.placed),
                "replicas": self.queue.in_flight(), "acquires": self.acquires, "releases": self.releases,
                "handed_out": self.queue.handed, "cancelled": self.queue.cancelled, "shed": self.shed,
                "reclaimed": self.queue.reclaimed, "expired": self.expired}

    def handed_out(self) -> list[str]:
        """Tokens in the order they were handed out (the latest ``ORDER_KEPT``)."""
        return list(self.order)

    # -- internals -------------------------------------------------------------------------------
    async def _reap(self) -> None:
        while self.since:
            await asyncio.sleep(self.ttl / 2)
            old = [t for t, at in self.since.items() if time.time() - at > self.ttl]
            for token in old:
                logger.warning(f"rtlm capacity queue: token {token} out for over {self.ttl} s, taken back")
                self.expired += 1
                self.release(token)

    def _subscribe(self):
        """Follow the deployment's running replicas (the controller's long poll, ``adapter.py``)."""
        from rtlm_cli.integrations.ray_serve.adapter import follow_replicas

        return follow_replicas(self._targets, client_id=f"RtlmCapacityQueue:{ray.get_runtime_context().get_actor_id()}")

    def _targets(self, running: dict[str, int]) -> None:
        for gone in set(self.queue.replicas) - set(running):
            self.unregister_replica(gone)
        for uid in set(running) - set(self.queue.replicas):
            self.register_replica(uid, running[uid])


# The actor as Ray runs it: no CPU of its own (it only decides), and room for every waiting request's
# acquire at once (an async actor runs at most max_concurrency calls; more would wait in Ray's FIFO,
# outside rtlm's order).
CapacityQueueActor = ray.remote(num_cpus=0, max_concurrency=10_000)(RtlmCapacityQueue)
