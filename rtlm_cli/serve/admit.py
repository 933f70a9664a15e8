"""A request as it enters rtlm's queue from an OpenAI body (the gateway service and Ray Serve's ingress both
admit requests here), as the decision core sees it: predicted when it arrives (never
from a stored prediction), its deadline and priority class from headers, capped by its own
``max_tokens``.

Headers: ``x-rtlm-deadline-ms`` (the deadline, milliseconds after its arrival; ``--shed`` honours
it) and ``x-rtlm-priority`` (a class that comes before the policy's key: ``interactive`` (0),
``default`` (1), ``batch`` (2), or an integer, lower first).
"""

from __future__ import annotations

import hmac
import time

from rtlm_cli.defaults import MAX_NEW_TOKENS, TOKENS_PER_WORD
from rtlm_cli.errors import RtlmError
from rtlm_cli.serve.costmodel import CostModel
from rtlm_cli.serve.decide.policies import Policy
from rtlm_cli.serve.decide.request import Request

CLASSES = {"interactive": 0, "default": 1, "batch": 2}


def load_predictor(path: str | None):
    if not path:
        return None
    from rtlm_cli.predict.model import Predictor

    predictor = Predictor.load(path)
    if "prefill" in predictor.families:
        raise RtlmError(f"predictor {path} uses the prefill family, which needs the model's hidden states: the gateway "
                        "predicts from text alone; use a predictor trained with --features text,prompt")
    predictor.predict(["warm-up"])  # boosters and tokenizer loaded before the first request
    return predictor


def true_lengths(profile: str | None) -> dict | None:
    """True answer lengths from a profile (the oracle's knowledge in benchmarks): by prompt text; for a
    sampled profile by (prompt text, seed), each with the mean length of its prompt's *other* answers
    (what ``oracle-mean`` knows), so a request sent with an answer's recorded seed (which vLLM
    reproduces) is known, and any other is not."""
    if not profile:
        return None
    from rtlm_cli.formats.profile import load_nonempty, samples

    meta, df = load_nonempty(profile, samples_ok=True)
    tokens = df["output_tokens"].astype(int)
    if samples(meta) > 1:
        by_prompt = tokens.groupby(df["prompt"])
        others = (by_prompt.transform("sum") - tokens) / (by_prompt.transform("count") - 1).clip(lower=1)
        return {(p, int(seed)): (int(t), float(m))
                for p, seed, t, m in zip(df["prompt"], df["sample_seed"], tokens, others)}
    return dict(zip(df["prompt"], tokens))


class BadRequest(ValueError):
    """A header or field the gateway cannot use: answered 400 with this message."""


def prompt_text(path: str, body: dict) -> str | None:
    """The text a request is predicted from: for chat, its last user message (profiles are single
    user turns); for completions, its prompt. None when the body has none."""
    if path.endswith("/chat/completions"):
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return None
        users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
        content = (users or messages)[-1].get("content") if isinstance((users or messages)[-1], dict) else None
        if isinstance(content, list):  # content parts: the text ones
            content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
        return content if isinstance(content, str) else None
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1:
        prompt = prompt[0]
    return prompt if isinstance(prompt, str) else None


def request_text(path: str, body) -> str:
    """The text a request body is predicted from, once the body is one the gateway serves (a JSON
    object with a prompt or a user message, n = 1); BadRequest saying what is wrong otherwise. The
    gateway service and the Ray Serve ingress check bodies here."""
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    text = prompt_text(path, body)
    if text is None:
        what = "messages (a non-empty list with a user message)" if "chat" in path else "prompt (a string)"
        raise BadRequest(f"the request has no {what}")
    if body.get("n", 1) != 1 or body.get("best_of", 1) != 1:
        raise BadRequest("n > 1 (and best_of) are not served by rtlm: send n requests of n = 1")
    return text


def authorized(header: str | None, api_key: str | None) -> bool:
    """The client's ``Authorization`` header carries ``api_key`` (compared in constant time), or no
    key is set. The gateway service and the Ray Serve ingress check clients here."""
    if not api_key:
        return True
    return hmac.compare_digest((header or "").encode(), f"Bearer {api_key}".encode())


# what a front door answers when it refuses a request: (status, message, OpenAI error type)
UNAUTHORIZED = (401, "missing or wrong API key: send Authorization: Bearer KEY", "authentication_error")


def too_large(max_body_kib: int) -> tuple[int, str, str]:
    return 413, f"the request body is over --max-body-kib {max_body_kib} KiB", "invalid_request_error"


def queue_full(max_queue: int) -> tuple[int, str, str]:
    return 429, f"rtlm's queue is full (--max-queue {max_queue}); retry later", "rate_limit_error"


class Classed(Policy):
    """A policy with priority classes before its key: requests of a lower class go first, and within
    a class the policy's own order holds."""

    def __init__(self, inner: Policy):
        self.inner = inner
        self.name, self.help, self.needs = inner.name, inner.help, inner.needs
        self.groups_alike, self.reorders = inner.groups_alike, True

    def key(self, r: Request):
        return (r.priority_class, self.inner.key(r))

    def size(self, r: Request) -> float:
        return self.inner.size(r)

    def longest(self, members, cap):
        return self.inner.longest(members, cap)


class Admission:
    """``admission(rid, now, text, body, headers) -> Request``."""

    def __init__(self, predictor, cost: CostModel, truth: dict[str, int] | None = None):
        """``predictor``: a loaded ``Predictor`` or None (requests carry no prediction: FCFS and
        sjf-input need none); ``cost``: the fastest backend's table, pricing predicted service;
        ``truth``: true answer lengths by prompt text, or by (text, seed) (``--profile``, for the oracle)."""
        self.predictor, self.cost, self.truth = predictor, cost, truth or {}

    def __call__(self, rid: int, now: float, text: str, body: dict, headers) -> Request:
        cap = _int(body.get("max_tokens", body.get("max_completion_tokens", MAX_NEW_TOKENS)), "max_tokens", minimum=1)
        deadline = headers.get("x-rtlm-deadline-ms")
        deadline_s = None if deadline is None else now + _float(deadline, "x-rtlm-deadline-ms") / 1000.0
        klass = headers.get("x-rtlm-priority", "default")
        priority_class = CLASSES[klass] if klass in CLASSES else _int(klass, "x-rtlm-priority")
        t0 = time.perf_counter()
        predicted, p90, unc, prompt_tokens, capped, ended = 0.0, 0.0, 0.0, None, None, None
        quantiles = levels = None
        if self.predictor is not None:
            names, X = self.predictor.features([text])
            out = self.predictor.predict_features(names, X, [text])
            predicted, p90 = float(out["predicted"][0]), float(out.get("p90", out["predicted"])[0])
            if "uncertainty_score" in names:
                unc = float(X[0, names.index("uncertainty_score")])
            if "prompt_tokens" in names:
                prompt_tokens = int(X[0, names.index("prompt_tokens")])
            if "capped_prob" in out:
                capped, ended = float(out["capped_prob"][0]), float(out["ended_tokens"][0])
            if "quantiles" in out:  # a distribution predictor's, capped by this request's max_tokens
                quantiles, levels = tuple(min(float(q), cap) for q in out["quantiles"][0]), self.predictor.levels
        cost_s = time.perf_counter() - t0
        prompt_tokens = prompt_tokens if prompt_tokens is not None else round(TOKENS_PER_WORD * len(text.split()))
        predicted, p90 = min(predicted, cap), min(p90, cap)
        seed = body.get("seed")
        true = self.truth.get(text, self.truth.get((text, seed)) if isinstance(seed, int) else None)
        true, mean = true if isinstance(true, tuple) else (true, None)  # a sampled profile's: (length, others' mean)
        true = None if true is None else min(true, cap)
        return Request(true_tokens=true, true_service_s=None if true is None else self.cost.service_s(prompt_tokens, true),
                       rid=rid, arrival_s=now, prompt_id=f"r{rid}", prompt=text, prompt_tokens=prompt_tokens,
                       predicted_tokens=predicted, p90_tokens=p90, capped_prob=capped, ended_tokens=ended,
                       uncertainty=unc, predicted_service_s=self.cost.service_s(prompt_tokens, predicted),
                       deadline_s=deadline_s, prediction_cost_s=cost_s, priority_class=priority_class,
                       quantiles=quantiles, quantile_levels=levels, cap_tokens=float(cap),
                       mean_tokens=None if mean is None else min(mean, cap))


def _int(value, what: str, minimum: int | None = None) -> int:
    try:
        out = int(value)
    except (TypeError, ValueError):
        raise BadRequest(f"{what} must be an integer, got {value!r}") from None
    if minimum is not None and out < minimum:
        raise BadRequest(f"{what} must be >= {minimum}, got {out}")
    return out


def _float(value, what: str) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise BadRequest(f"{what} must be a number, got {value!r}") from None
    if not out > 0:
        raise BadRequest(f"{what} must be > 0, got {out}")
    return out
