"""Every private name of Ray that rtlm's Ray Serve integration touches, in this one module, checked
against the Ray it was written for.

rtlm's router is Ray's experimental ``CapacityQueueRouter`` (Ray 2.60) with rtlm's queue behind it,
and its queue actor follows the deployment's replicas through the Serve controller's long poll, as
Ray's own experimental capacity queue does. Neither is a public interface: Ray may change them in
any release. So the version is checked when this module is imported (``PINNED``, the ``rtlm[ray]``
extra's pin; ``RTLM_RAY_UNCHECKED=1`` lets another version try), every private name is used only
here, behind named methods (``RouterBase``, ``follow_replicas``), and ``tests/test_ray_serve.py``
checks the contract (``PRIVATE_IMPORTS``, ``PRIVATE_ATTRIBUTES``) against the installed Ray, so an
upgrade fails loudly in one test instead of quietly in production.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import ray
from ray.serve.experimental.capacity_queue_router import CapacityQueueRouter

PINNED = "2.60.0"  # pyproject's rtlm[ray] extra: ray[serve]==2.60.0
# (module, name) imported from Ray's private modules
PRIVATE_IMPORTS = (("ray._common.utils", "get_or_create_event_loop"),
                   ("ray.serve._private.constants", "SERVE_CONTROLLER_NAME"),
                   ("ray.serve._private.constants", "SERVE_NAMESPACE"),
                   ("ray.serve._private.long_poll", "LongPollClient"),
                   ("ray.serve._private.long_poll", "LongPollNamespace"))
# what RouterBase reads or calls on Ray's capacity-queue router (its own fields and methods)
PRIVATE_ATTRIBUTES = ("_replicas", "_replicas_updated_event", "_uid_to_replica_id", "_capacity_queue",
                      "_try_discover_capacity_queue", "_backoff", "_max_fault_retries", "_pending_tokens",
                      "_event_loop", "_safe_release", "_choose_replica_for_request")


def check_version(version: str = ray.__version__) -> None:
    """Refuse a Ray other than the pinned one (its private names may have moved), unless asked."""
    if version != PINNED and os.environ.get("RTLM_RAY_UNCHECKED") != "1":
        raise ImportError(f"rtlm's Ray Serve router is built on Ray {PINNED}'s experimental capacity-queue router, "
                          f"and this is Ray {version}: install `pip install 'rtlm[ray]'` (ray[serve]=={PINNED}), or set "
                          "RTLM_RAY_UNCHECKED=1 to try this Ray anyway")


check_version()


class RouterBase(CapacityQueueRouter):
    """Ray's capacity-queue router with its private state behind named methods. A subclass
    implements ``choose(pending_request, is_retry)``; Ray calls it for each request to route."""

    async def choose(self, pending_request, is_retry: bool):
        raise NotImplementedError

    async def _choose_replica_for_request(self, pending_request, *, is_retry: bool = False):
        return await self.choose(pending_request, is_retry)

    # -- replicas --------------------------------------------------------------------------------
    def has_replicas(self) -> bool:
        return len(self._replicas) > 0

    async def replicas_changed(self) -> None:
        """Wait until Ray tells this router of a change in the deployment's replicas."""
        self._replicas_updated_event.clear()
        await self._replicas_updated_event.wait()

    def replica(self, unique_id: str):
        """The running replica this router knows by its unique id, or None."""
        rid = self._uid_to_replica_id.get(unique_id)
        return self._replicas.get(rid) if rid is not None else None

    # -- the queue actor -------------------------------------------------------------------------
    def queue_actor(self):
        """The deployment's capacity-queue actor, found by name (None: not reachable now)."""
        if self._capacity_queue is None and not self._try_discover_capacity_queue():
            return None
        return self._capacity_queue

    def lose_queue_actor(self) -> None:
        self._capacity_queue = None

    async def backoff(self, faults: int) -> None:
        await self._backoff(faults)

    @property
    def max_fault_retries(self) -> int:
        return self._max_fault_retries

    # -- tokens ----------------------------------------------------------------------------------
    def hold_token(self, request_id: str, token: str) -> None:
        """``token`` is released when Ray says ``request_id`` ended (Ray's own bookkeeping)."""
        self._pending_tokens[request_id] = token

    def take_token(self, request_id: str) -> str | None:
        return self._pending_tokens.pop(request_id, None)

    def release_token(self, token: str, after_s: float = 0.0) -> None:
        if after_s > 0:
            self._event_loop.call_later(after_s, self._safe_release, token)
        else:
            self._safe_release(token)

    async def power_of_two(self, pending_request, is_retry: bool):
        """Ray's default routing (power-of-two choices), skipping the capacity queue."""
        return await super(CapacityQueueRouter, self)._choose_replica_for_request(pending_request, is_retry=is_retry)


def follow_replicas(on_change: Callable[[dict[str, int]], None], client_id: str):
    """Follow the calling deployment actor's deployment through the Serve controller's long poll:
    ``on_change({replica unique id: its max_ongoing_requests})`` with the running replicas, at once and
    on every change. The long-poll client (keep it alive)."""
    from ray import serve
    from ray._common.utils import get_or_create_event_loop
    from ray.serve._private.constants import SERVE_CONTROLLER_NAME, SERVE_NAMESPACE
    from ray.serve._private.long_poll import LongPollClient, LongPollNamespace

    deployment_id = serve.get_deployment_actor_context().deployment_id
    controller = ray.get_actor(SERVE_CONTROLLER_NAME, namespace=SERVE_NAMESPACE)

    def targets(info) -> None:
        on_change({r.replica_id.unique_id: r.max_ongoing_requests for r in info.running_replicas})

    return LongPollClient(controller, {(LongPollNamespace.DEPLOYMENT_TARGETS, deployment_id): targets},
                          call_in_event_loop=get_or_create_event_loop(), client_id=client_id)
