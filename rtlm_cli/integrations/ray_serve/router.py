"""``RtlmRouter``: Ray Serve's request router for a deployment whose replicas are ordered by rtlm.

It is Ray's experimental ``CapacityQueueRouter`` (Ray 2.60) with rtlm's queue behind it: before a
request is routed, the router asks the deployment's ``RtlmCapacityQueue`` actor for a token with the
request's prediction (the ``rtlm`` keyword argument the caller passed: ``ingress.describe_request``
makes it where the request enters Ray) and waits until the policy's order hands it a replica; the
request goes to that replica. Ray calls ``on_request_completed`` when the request ends (answered,
failed, or its stream closed) and ``on_request_cancelled`` when its caller cancels: the token goes
back. Waiting happens in the caller's own coroutine, not in Ray's routing tasks, so a burst larger
than Ray's cap on routing tasks (``min(50, 2 x replicas)``) waits in rtlm's order all the same.

What Ray keeps: replica placement on nodes, restarts, autoscaling, its own limit
``max_ongoing_requests`` on each replica (a replica still rejects work beyond it: after the queue
actor restarts it knows nothing of requests already running; a token its replica rejected stays
counted for ``REJECTED_HOLD_S`` before it is given back, so the queue does not hand the same full
replica out again at once; Ray's own router keeps it until a TTL), retries after a replica died. When the queue actor
cannot be reached after ``max_fault_retries`` tries, a request is routed by Ray's power-of-two
choices instead, so nothing waits forever.
"""

from __future__ import annotations

import asyncio
import itertools
import logging

import ray
from ray.exceptions import RayActorError
from ray.serve.experimental.capacity_queue_router import CapacityQueueRouter

from rtlm_cli.integrations.ray_serve.actor import SHED

logger = logging.getLogger("ray.serve")
FIELD = "rtlm"  # the keyword argument that carries a request's prediction to the router
REJECTED_HOLD_S = 1.0  # a token its replica rejected stays counted this long (the replica is full)


class RequestShed(Exception):
    """rtlm shed the request: its deadline (``x-rtlm-deadline-ms``) can no longer be met."""


class RtlmRouter(CapacityQueueRouter):
    def initialize_state(self, **kwargs):
        """``request_router_kwargs``: ``capacity_queue_actor_name`` (the deployment actor's name),
        ``max_fault_retries`` (tries to reach the queue before power-of-two choices, default 3),
        ``predictor`` and ``timing`` (optional: predict a request that arrives without an ``rtlm``
        argument from its own body, e.g. the request object Ray Serve LLM's ingress passes)."""
        super().initialize_state(**kwargs)
        self._attempts = itertools.count()
        self._predict = None
        if kwargs.get("predictor"):
            from rtlm_cli.integrations.ray_serve.ingress import Predicting

            self._predict = Predicting(kwargs["predictor"], kwargs.get("timing", "vllm-cpu"))

    def _fields(self, pending_request) -> dict:
        """The request's prediction: its ``rtlm`` argument, else (with a predictor) one made from the
        first argument that looks like an OpenAI request body, else none."""
        fields = pending_request.kwargs.get(FIELD)
        if fields is not None or self._predict is None:
            return fields or {}
        return self._predict.from_args(pending_request.args)

    async def _choose_replica_for_request(self, pending_request, *, is_retry: bool = False):
        request_id = pending_request.metadata.internal_request_id
        if is_retry:  # the replica rejected it: it is full, whatever the queue counted (see the module)
            rejected = self._pending_tokens.pop(request_id, None)
            if rejected is not None:
                self._event_loop.call_later(REJECTED_HOLD_S, self._safe_release, rejected)
        fields = self._fields(pending_request)
        token = f"{request_id}#{next(self._attempts)}"
        while len(self._replicas) == 0:
            self._replicas_updated_event.clear()
            await self._replicas_updated_event.wait()

        faults = 0
        while True:
            if faults >= self._max_fault_retries:
                logger.warning("rtlm capacity queue unreachable: routing by power-of-two choices")
                return await super(CapacityQueueRouter, self)._choose_replica_for_request(
                    pending_request, is_retry=is_retry)
            if self._capacity_queue is None and not self._try_discover_capacity_queue():
                await self._backoff(faults)
                faults += 1
                continue
            ref = self._capacity_queue.acquire.remote(token, fields)
            try:
                replica_uid = await ref
            except asyncio.CancelledError:
                ray.cancel(ref)  # the queue withdraws it, or gives its slot back if it was placed
                raise
            except RayActorError:
                logger.warning("lost the rtlm capacity queue; asking its replacement")
                self._capacity_queue = None
                await self._backoff(faults)
                faults += 1
                continue
            if replica_uid == SHED:
                raise RequestShed("shed by rtlm: its deadline can no longer be met (x-rtlm-deadline-ms)")
            rid = self._uid_to_replica_id.get(replica_uid)
            replica = self._replicas.get(rid) if rid is not None else None
            if replica is not None:
                self._pending_tokens[request_id] = token
                return replica
            # the queue knows a replica this router does not yet: give the token back, wait for news
            self._safe_release(token)
            self._replicas_updated_event.clear()
            await self._replicas_updated_event.wait()

