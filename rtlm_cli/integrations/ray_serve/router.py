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

A call that reaches the router with no prediction (no ``rtlm`` argument, and none the router could
make: e.g. Ray Serve LLM's own handle calls without ``router_predictor``) waits as a request of
unknown length: it is counted (``stats()``, the Ray Serve metric ``rtlm_unpredicted_requests``) and
logged once. Ray's private names are all in ``adapter.py``.
"""

from __future__ import annotations

import asyncio
import itertools
import logging

import ray
from ray.exceptions import RayActorError

from rtlm_cli.integrations.ray_serve.adapter import RouterBase
from rtlm_cli.integrations.ray_serve.queue import SHED

logger = logging.getLogger("ray.serve")
FIELD = "rtlm"  # the keyword argument that carries a request's prediction to the router
REJECTED_HOLD_S = 1.0  # a token its replica rejected stays counted this long (the replica is full)


class RequestShed(Exception):
    """rtlm shed the request: its deadline (``x-rtlm-deadline-ms``) can no longer be met."""


class RtlmRouter(RouterBase):
    def initialize_state(self, **kwargs):
        """``request_router_kwargs``: ``capacity_queue_actor_name`` (the deployment actor's name),
        ``max_fault_retries`` (tries to reach the queue before power-of-two choices, default 3),
        ``predictor`` and ``timing`` (optional: predict a request that arrives without an ``rtlm``
        argument from its own body, e.g. the request object Ray Serve LLM's ingress passes)."""
        from ray.serve import metrics

        super().initialize_state(**kwargs)
        self.rtlm_attempts = itertools.count()
        self.rtlm_predict = None
        self.rtlm_unpredicted = 0
        self.rtlm_unpredicted_metric = metrics.Counter(
            "rtlm_unpredicted_requests", description="Calls routed by rtlm with no prediction (no rtlm argument, "
            "and none the router could make): they wait as requests of unknown length.")
        if kwargs.get("predictor"):
            from rtlm_cli.integrations.ray_serve.ingress import Predicting

            self.rtlm_predict = Predicting(kwargs["predictor"], kwargs.get("timing", "vllm-cpu"))

    def fields(self, pending_request) -> dict:
        """The request's prediction: its ``rtlm`` argument, else (with a predictor) one made from the
        first argument that looks like an OpenAI request body, else none (counted, logged once)."""
        fields = pending_request.kwargs.get(FIELD)
        if fields is None and self.rtlm_predict is not None:
            fields = self.rtlm_predict.from_args(pending_request.args)
        if not fields:
            self.rtlm_unpredicted += 1
            self.rtlm_unpredicted_metric.inc()
            if self.rtlm_unpredicted == 1:
                logger.warning("rtlm router: a call came with no prediction (no rtlm= argument, and no "
                               "router_predictor to make one): it waits as a request of unknown length; counted "
                               "in the metric rtlm_unpredicted_requests")
        return fields or {}

    def stats(self) -> dict:
        return {"unpredicted": self.rtlm_unpredicted}

    async def choose(self, pending_request, is_retry: bool):
        request_id = pending_request.metadata.internal_request_id
        if is_retry:  # the replica rejected it: it is full, whatever the queue counted (see the module)
            rejected = self.take_token(request_id)
            if rejected is not None:
                self.release_token(rejected, after_s=REJECTED_HOLD_S)
        fields = self.fields(pending_request)
        token = f"{request_id}#{next(self.rtlm_attempts)}"
        while not self.has_replicas():
            await self.replicas_changed()
        faults = 0
        while True:
            if faults >= self.max_fault_retries:
                logger.warning("rtlm capacity queue unreachable: routing by power-of-two choices")
                return await self.power_of_two(pending_request, is_retry)
            queue = self.queue_actor()
            if queue is None:
                await self.backoff(faults)
                faults += 1
                continue
            ref = queue.acquire.remote(token, fields)
            try:
                replica_uid = await ref
            except asyncio.CancelledError:
                ray.cancel(ref)  # the queue withdraws it, or gives its slot back if it was placed
                raise
            except RayActorError:
                logger.warning("lost the rtlm capacity queue; asking its replacement")
                self.lose_queue_actor()
                await self.backoff(faults)
                faults += 1
                continue
            if replica_uid == SHED:
                raise RequestShed("shed by rtlm: its deadline can no longer be met (x-rtlm-deadline-ms)")
            replica = self.replica(replica_uid)
            if replica is not None:
                self.hold_token(request_id, token)
                return replica
            # the queue knows a replica this router does not yet: give the token back, wait for news
            self.release_token(token)
            await self.replicas_changed()
