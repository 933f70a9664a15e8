"""Scheduling policies: each is one small function from a request to a static priority key.

Lower keys run first. Keys never depend on the current time: aging is folded in by adding the
arrival time (a request's key is fixed; later arrivals' keys are larger), so a heap orders the
queue and every decision is O(log n). A policy never knows whether time is real or simulated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from rtlm_cli.registry import Registry
from rtlm_cli.scheduling.request import Request


@dataclass(frozen=True)
class Policy:
    name: str
    key: Callable[[Request], float]
    group_alike: bool  # consolidation groups requests of alike predicted length
    help: str


POLICIES: Registry[Callable[..., Policy]] = Registry("policy")


@POLICIES.register("fcfs")
def fcfs(**_) -> Policy:
    return Policy("fcfs", lambda r: r.arrival_s, False, "first come, first served")


@POLICIES.register("sjf-input")
def sjf_input(**_) -> Policy:
    return Policy("sjf-input", lambda r: r.prompt_tokens, False, "shortest prompt first (no predictor)")


@POLICIES.register("sjf-pred")
def sjf_pred(**_) -> Policy:
    return Policy("sjf-pred", lambda r: r.predicted_tokens, True, "shortest predicted output first")


@POLICIES.register("oracle")
def oracle(**_) -> Policy:
    def key(r: Request) -> float:
        # The true service time, not the true length: most answers here run to the same cap, and
        # among those a shorter prompt still finishes sooner (cheaper prefill and decode steps).
        return r.true_service_s if r.true_service_s is not None else r.predicted_service_s

    return Policy("oracle", key, True, "shortest true service time first (needs a profile; the bound)")


@POLICIES.register("rtlm")
def rtlm(size_weight: float = 512.0, uncertainty_weight: float = 0.5, **_) -> Policy:
    """RT-LM's uncertainty-aware priority as a virtual deadline.

    key = arrival + size_weight * predicted_service * (1 + uncertainty_weight * uncertainty).
    Short, certain requests jump ahead; the arrival term ages every request, so nothing starves
    (a request waits at most for those arriving within size_weight * its inflated service time).
    With a deadline, the latest start time (deadline - predicted service) wins when it is earlier.
    """

    def key(r: Request) -> float:
        k = r.arrival_s + size_weight * r.predicted_service_s * (1.0 + uncertainty_weight * r.uncertainty)
        if r.deadline_s is not None:
            k = min(k, r.deadline_s - r.predicted_service_s)
        return k

    return Policy("rtlm", key, True, "uncertainty-aware priority with aging and deadline slack")


def make_policy(name: str, **params) -> Policy:
    return POLICIES.get(name)(**params)
