"""Where a request enters Ray: it is predicted once, here, and its prediction travels with it to the
router as the ``rtlm`` keyword argument (``router.FIELD``) of the deployment call.

The text predicted, the headers honoured (``x-rtlm-deadline-ms``, ``x-rtlm-priority``) and the cap
(``max_tokens``) are the gateway service's (``serve/admit.py``). No Ray in this module.
"""

from __future__ import annotations

import time

from rtlm_cli.formats.timing import load_timing_table
from rtlm_cli.serve.admit import Admission, BadRequest, load_predictor, request_text, true_lengths
from rtlm_cli.integrations.ray_serve.queue import describe
from rtlm_cli.serve.costmodel import CostModel


class Predicting:
    """``Predicting(predictor, timing)(path, body, headers) -> dict``: the ``rtlm`` argument of a
    request (BadRequest for a body or header the gateway would refuse)."""

    def __init__(self, predictor: str | None = "reference", timing: str = "vllm-cpu", profile: str | None = None):
        """``predictor``: a directory or a shipped name (``reference``), or None (no prediction:
        FCFS and sjf-input need none); ``profile``: for benchmarks, the profile whose true answer
        lengths the oracle looks up by prompt text (as ``rtlm gateway --profile``)."""
        self.admission = Admission(load_predictor(predictor),
                                   CostModel.from_table(load_timing_table(timing), name=timing), true_lengths(profile))

    def __call__(self, path: str, body: dict, headers=None) -> dict:
        text = request_text(path, body)
        return describe(self.admission(0, time.time(), text, body, headers or {}))

    def from_args(self, args) -> dict:
        """The ``rtlm`` argument of a call made without one, from the first of its arguments that is
        (or dumps to, like Ray Serve LLM's request objects) an OpenAI body with ``messages`` or
        ``prompt``; {} when there is none or it cannot be used."""
        for arg in args:
            body = arg.model_dump() if hasattr(arg, "model_dump") else arg
            if isinstance(body, dict) and ("messages" in body or "prompt" in body):
                path = "/v1/chat/completions" if "messages" in body else "/v1/completions"
                try:
                    return self(path, {k: v for k, v in body.items() if v is not None})
                except BadRequest:
                    return {}
        return {}
