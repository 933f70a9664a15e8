"""Scheduling policies: one small class each, registered by name, owning every decision it makes.

A policy says what it needs (``needs``: a predictor, a profile's true lengths), its priority key
(lower runs first), its size estimate of a request (what consolidation groups and prices by), the
expected longest answer of a batch, whether it groups alike requests, and its help. The CLI's
help and validation and the benchmarks' policy lists are derived from the registry, so adding a
policy is one class (and its test).

Keys never depend on the current time: aging is folded in by adding the arrival time (a request's
key is fixed; later arrivals' keys are larger), so a heap orders the queue and every decision is
O(log n). A policy never knows whether time is real or simulated, nor which engine serves.
"""

from __future__ import annotations

import math
from typing import ClassVar

from rtlm_cli.errors import RtlmError
from rtlm_cli.registry import Registry
from rtlm_cli.serve.decide.request import Request

POLICIES: Registry[type["Policy"]] = Registry("policy")
NEEDS = {  # what a policy may need, and how the user provides it
    "predictor": "--predictor DIR: train one with `rtlm train-predictor`",
    "profile": "--profile: it reads the true output lengths recorded there",
}


class Policy:
    name: ClassVar[str]
    help: ClassVar[str]
    needs: ClassVar[frozenset[str]] = frozenset()
    groups_alike: ClassVar[bool] = False  # consolidation groups requests of alike size (else: next in order)
    reorders: ClassVar[bool] = True  # False: serves in arrival order, so an engine needs no priorities for it

    def __init__(self, **params):
        """Policies take the parameters they know and ignore the rest (the CLI passes every one)."""

    def key(self, r: Request) -> float:
        raise NotImplementedError

    def size(self, r: Request) -> float:
        """The tokens a request is expected to generate."""
        return r.predicted_tokens

    def longest(self, members: list[Request], cap: float | None) -> float:
        """A batch's expected longest answer. With a mixture predictor (P(capped) and the length if it
        ends) it is the cap unless no member runs to it, then the longest of the ended answers; else
        the longest size."""
        if cap is None or not all(r.capped_prob is not None and r.ended_tokens is not None for r in members):
            return max(self.size(r) for r in members)
        none = math.prod(1.0 - r.capped_prob for r in members)
        return cap * (1.0 - none) + none * max(r.ended_tokens for r in members)


def register(cls: type[Policy]) -> type[Policy]:
    return POLICIES.register(cls.name)(cls)


@register
class FCFS(Policy):
    name = "fcfs"
    help = "first come, first served"
    reorders = False

    def key(self, r: Request) -> float:
        return r.arrival_s


@register
class ShortestPrompt(Policy):
    name = "sjf-input"
    help = "shortest prompt first (no predictor)"

    def key(self, r: Request) -> float:
        return r.prompt_tokens


@register
class ShortestPredicted(Policy):
    name = "sjf-pred"
    help = "shortest predicted output first"
    needs = frozenset({"predictor"})
    groups_alike = True

    def key(self, r: Request) -> float:
        return r.predicted_tokens


@register
class Oracle(Policy):
    name = "oracle"
    help = "shortest true output first, shorter prompt on ties (the bound)"
    needs = frozenset({"profile"})
    groups_alike = True

    def key(self, r: Request) -> float:
        # True output tokens, a shorter prompt breaking ties: the lowest mean response of the
        # full-knowledge orders measured (docs/benchmarks.md, "Which full-knowledge order bounds"). A prompt under
        # 10,000 tokens only ever breaks a tie of lengths, and survives the engine priority's
        # resolution of 1/1000 under direct dispatch.
        return self.size(r) + r.prompt_tokens / 1e4

    def size(self, r: Request) -> float:
        return r.true_tokens if r.true_tokens is not None else r.predicted_tokens

    def longest(self, members: list[Request], cap: float | None) -> float:
        return max(self.size(r) for r in members)  # it knows; nothing is expected


@register
class OracleService(Oracle):
    name = "oracle-service"
    help = "oracle by true service (the table's)"

    def key(self, r: Request) -> float:
        # the true service time priced at batch 1 by the timing table: `oracle` until the study named
        # above, which measured it level with today's order (and, unlike it, it moves with the table)
        return r.true_service_s if r.true_service_s is not None else r.predicted_service_s


@register
class OracleTokens(Oracle):
    name = "oracle-length"
    help = "oracle by true output"

    def key(self, r: Request) -> float:
        return self.size(r)


@register
class RTLM(Policy):
    """RT-LM's uncertainty-aware priority as a virtual deadline.

    key = arrival + size_weight * predicted_service * (1 + uncertainty_weight * uncertainty).
    Short, certain requests jump ahead; the arrival term ages every request, so nothing starves
    (a request waits at most for those arriving within size_weight * its inflated service time).
    With a deadline, the latest start time (deadline - predicted service) wins when it is earlier.
    """

    name = "rtlm"
    help = "uncertainty-aware priority with aging and deadline slack (--size-weight, --uncertainty-weight)"
    needs = frozenset({"predictor"})
    groups_alike = True
    SIZE_WEIGHT = 512.0  # chosen by bench_serve.py --aging: mean against tail at load 0.95
    UNCERTAINTY_WEIGHT = 0.5

    def __init__(self, size_weight: float = SIZE_WEIGHT, uncertainty_weight: float = UNCERTAINTY_WEIGHT, **_):
        if size_weight < 0 or uncertainty_weight < 0:
            raise RtlmError("--size-weight and --uncertainty-weight must be >= 0")
        self.size_weight, self.uncertainty_weight = size_weight, uncertainty_weight

    def key(self, r: Request) -> float:
        k = r.arrival_s + self.size_weight * r.predicted_service_s * (1.0 + self.uncertainty_weight * r.uncertainty)
        if r.deadline_s is not None:
            k = min(k, r.deadline_s - r.predicted_service_s)
        return k


def make_policy(name: str, **params) -> Policy:
    return POLICIES.get(name)(**params)


def policy_help() -> str:
    """One line per registered policy, for the CLI."""
    return "; ".join(f"{name}: {POLICIES.get(name).help}" for name in POLICIES.names())


def check_needs(name: str, have: set[str]) -> None:
    """A policy's needs against what the user gave (``{"predictor", "profile"}``): one clear error."""
    missing = sorted(POLICIES.get(name).needs - have)
    if missing:
        raise RtlmError(f"policy {name} needs {NEEDS[missing[0]]}")
