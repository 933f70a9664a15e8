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
    prediction_cost_s: float = 0.0
    priority_class: int = 0  # the gateway service's x-rtlm-priority: a class before the policy's key
