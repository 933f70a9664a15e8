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
from rtlm_cli.predict import distribution
from rtlm_cli.registry import Registry
from rtlm_cli.serve.decide.request import Request

POLICIES: Registry[type["Policy"]] = Registry("policy")
NEEDS = {  # what a policy may need, and how the user provides it
    "predictor": "--predictor DIR: train one with `rtlm train-predictor`",
    "profile": "--profile: it reads the true output lengths recorded there",
    "quantiles": "--predictor DIR that predicts quantiles: train one on a sampled profile "
                 "(`rtlm train-predictor reference-sampled --out DIR`, --quantiles)",
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
class MeanOracle(Oracle):
    name = "oracle-mean"
    help = "shortest mean output of the prompt's other sampled answers first (the prompt-only bound, sampled profiles)"

    def size(self, r: Request) -> float:
        # a greedy profile has one answer per prompt: its true length is its prompt's mean
        return r.mean_tokens if r.mean_tokens is not None else super().size(r)


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
    SIZE_WEIGHT = 512.0  # chosen by bench/serve.py --aging: mean against tail at load 0.95
    UNCERTAINTY_WEIGHT = 0.5

    def __init__(self, size_weight: float = SIZE_WEIGHT, uncertainty_weight: float = UNCERTAINTY_WEIGHT, **_):
        if size_weight < 0 or uncertainty_weight < 0:
            raise RtlmError("--size-weight and --uncertainty-weight must be >= 0")
        self.size_weight, self.uncertainty_weight = size_weight, uncertainty_weight

    def key(self, r: Request) -> float:
        k = r.arrival_s + self.size_weight * r.predicted_service_s * self.inflation(r)
        if r.deadline_s is not None:
            k = min(k, r.deadline_s - r.predicted_service_s)
        return k

    def inflation(self, r: Request) -> float:
        """How much a request's predicted service time counts: 1 + weight x its lexical uncertainty."""
        return 1.0 + self.uncertainty_weight * r.uncertainty


@register
class RTLMDistribution(RTLM):
    """``rtlm`` reading the predicted spread of the length (top quantile - bottom quantile, over the
    top quantile, in [0, 1]) instead of the lexical uncertainty score."""

    name = "rtlm-dist"
    help = "rtlm with the predicted length spread as its uncertainty (needs a quantile predictor)"
    needs = frozenset({"predictor", "quantiles"})

    def inflation(self, r: Request) -> float:
        u = distribution.spread(r.quantiles) if r.quantiles else r.uncertainty
        return 1.0 + self.uncertainty_weight * u


@register
class TailAware(RTLM):
    """After TIE (ICML 2026): a request's size is its expected length plus a weight on its upper tail,
    CVaR at a level (the mean of its longest 1 - level share of answers), both read from the predicted
    length distribution, aged and deadline-bounded as ``rtlm``'s key is:

    key = arrival + size_weight x predicted_service x (E[L] + w CVaR_a[L]) / ((1 + w) predicted_tokens)

    (dividing by 1 + w keeps size_weight on rtlm's scale; size_weight -> infinity is TIE's order.)
    """

    name = "tail"
    help = "expected length + a weight on the upper tail (CVaR) of the predicted distribution, after TIE (--tail-weight, --tail-level)"
    needs = frozenset({"predictor", "quantiles"})
    TAIL_WEIGHT = 1.0
    TAIL_LEVEL = 0.9

    def __init__(self, size_weight: float = RTLM.SIZE_WEIGHT, tail_weight: float = TAIL_WEIGHT,
                 tail_level: float = TAIL_LEVEL, **_):
        super().__init__(size_weight=size_weight)
        if tail_weight < 0 or not 0 < tail_level < 1:
            raise RtlmError("--tail-weight must be >= 0 and --tail-level within (0, 1)")
        self.tail_weight, self.tail_level = tail_weight, tail_level

    def score(self, r: Request) -> float:
        """E[L] + w CVaR_a[L] in tokens (the point prediction where no quantiles were predicted)."""
        if not r.quantiles:
            return (1.0 + self.tail_weight) * r.predicted_tokens
        q, lv = r.quantiles, r.quantile_levels
        return distribution.mean(lv, q, r.cap_tokens) + self.tail_weight * distribution.cvar(lv, q, self.tail_level, r.cap_tokens)

    def inflation(self, r: Request) -> float:
        return self.score(r) / ((1.0 + self.tail_weight) * max(r.predicted_tokens, 1.0))


def make_policy(name: str, **params) -> Policy:
    return POLICIES.get(name)(**params)


def policy_help() -> str:
    """One line per registered policy, for the CLI."""
    return "; ".join(f"{name}: {POLICIES.get(name).help}" for name in POLICIES.names())


def check_needs(name: str, predictor: str | None = None, profile: str | None = None) -> None:
    """A policy's needs against what the user gave (a predictor, a profile): one clear error."""
    have = {k for k, v in (("predictor", predictor), ("profile", profile)) if v}
    if predictor and "quantiles" in POLICIES.get(name).needs:
        from rtlm_cli.formats.predictor import predicts_quantiles

        if predicts_quantiles(predictor):
            have.add("quantiles")
    missing = sorted(POLICIES.get(name).needs - have)
    if missing:
        raise RtlmError(f"policy {name} needs {NEEDS[missing[0]]}")
