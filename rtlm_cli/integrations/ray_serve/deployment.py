"""``rtlm_routed(deployment, ...)``: a Ray Serve deployment with rtlm's router and capacity queue."""

from __future__ import annotations

from ray.serve.config import DeploymentActorConfig, RequestRouterConfig

from rtlm_cli.integrations.ray_serve.actor import CapacityQueueActor
from rtlm_cli.integrations.ray_serve.router import RtlmRouter
from rtlm_cli.serve.decide.slots import GATHER_MS
from rtlm_cli.serve.decide.policies import make_policy

QUEUE_ACTOR = "rtlm_queue"


def rtlm_routed(deployment, policy: str = "rtlm", timing: str = "vllm-cpu", max_ongoing_requests: int | None = None,
                gather_ms: float = GATHER_MS, shed: bool = False, token_ttl_s: float | None = None,
                max_fault_retries: int = 3, router_predictor: str | None = None):
    """``deployment`` routed by rtlm: its replicas take requests in ``policy``'s order, at most
    ``max_ongoing_requests`` (K: set it to the engine's batch, e.g. vLLM's max_num_seqs) each, the
    least loaded free replica first. ``timing``: the replicas' timing table (a shipped name or a
    file: prices predicted service and deadlines); ``gather_ms``: the gathering window of ``rtlm
    gateway``; ``shed``: requests whose deadline can no longer be met fail with ``RequestShed``;
    ``token_ttl_s``: tokens out longer than this are taken back (None: never).

    Callers pass each request's prediction as the keyword argument ``rtlm``
    (``ingress.Predicting``); a call without it waits as a request with no prediction, unless
    ``router_predictor`` (a predictor directory or shipped name) lets the router predict it from
    its own first argument (an OpenAI body, or an object with ``model_dump()``: Ray Serve LLM's)."""
    make_policy(policy)  # an unknown name fails here, not in the actor
    options = dict(
        request_router_config=RequestRouterConfig(
            request_router_class=RtlmRouter,
            request_router_kwargs={"capacity_queue_actor_name": QUEUE_ACTOR, "max_fault_retries": max_fault_retries,
                                   "predictor": router_predictor, "timing": timing}),
        deployment_actors=[DeploymentActorConfig(
            name=QUEUE_ACTOR, actor_class=CapacityQueueActor,
            init_kwargs={"policy": policy, "timing": timing, "gather_ms": gather_ms, "shed": shed,
                         "token_ttl_s": token_ttl_s})],
    )
    if max_ongoing_requests is not None:
        options["max_ongoing_requests"] = max_ongoing_requests
    return deployment.options(**options)
