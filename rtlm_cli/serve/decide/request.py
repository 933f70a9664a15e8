"""A request as the decision core sees it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Request:
    """Everything known about a request when it arrives (plus ``true_tokens`` for the oracle and the
    simulator, when the prompt comes from a profile). Times are seconds from the start of the run."""

    rid: int
    arrival_s: float
    prompt_id: str
    prompt: str = ""
    prompt_tokens: int = 0
    predicted_tokens: float = 0.0
    p90_tokens: float = 0.0
    capped_prob: float | None = None  # P(the answer runs to the token cap), from a mixture predictor
    ended_tokens: float | None = None  # its predicted length if it ends before the cap
    uncertainty: float = 0.0  # the prompt's uncertainty_score in [0, 1]
    predicted_service_s: float = 0.0  # at batch 1 on the reference backend
    deadline_s: float | None = None  # absolute, from the start of the run
    true_tokens: int | None = None
    true_service_s: float | None = None  # at batch 1 on the reference backend, from true_tokens (the oracle)
    # A distribution predictor's quantiles of the output length at ``quantile_levels``, sorted, and the
    # cap they are clipped to (the tail-aware policies read them).
    quantiles: tuple[float, ...] | None = None
    quantile_levels: tuple[float, ...] | None = None
    cap_tokens: float | None = None
    # In a sampled world (a profile with several answers per prompt): the mean length of this prompt's
    # *other* answers, what the "mean oracle" knows (the best any prompt-only predictor can know).
    mean_tokens: float | None = None
    # How a serving engine samples this request's answer: a sampled profile's replay sends each request
    # its recorded answer's temperature, top-p and seed (greedy: temperature 0).
    temperature: float = 0.0
    top_p: float = 1.0
    sample_seed: int | None = None
    prediction_cost_s: float = 0.0
    priority_class: int = 0  # the gateway service's x-rtlm-priority: a class before the policy's key
