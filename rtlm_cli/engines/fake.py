"""A deterministic stand-in for a model, for tests and demos: no weights, no torch.

``fake`` or ``fake:ms_per_token=2,ms_prefill=5`` as a ``--model``. Output length is a function of
the prompt (its uncertainty score plus a hash-derived jitter), so predictors have something real to
learn; when sampling (temperature > 0) it is that length times a log-normal factor drawn from the
seed (sigma 0.5 x temperature), so a sampled profile has a spread within each prompt; the times follow a simple linear cost model, and with ``ms_per_token`` > 0 the engine
really sleeps that long per decode step, so wall-clock paths (progress, interrupts) are exercised.
"""

from __future__ import annotations

import hashlib
import time

import numpy as np

from rtlm_cli.defaults import TEMPLATE_TOKENS
from rtlm_cli.engines.base import BatchResult, Generation, GenerationSettings, ModelInfo
from rtlm_cli.errors import RtlmError
from rtlm_cli.prompts.uncertainty import extract


def output_length(prompt: str, max_new_tokens: int, temperature: float = 0.0, seed: int = 0) -> tuple[int, bool]:
    """(output tokens, ended) for a prompt: longer for uncertain prompts, capped at max_new_tokens;
    sampled, a seeded log-normal factor of that length."""
    jitter = int(hashlib.sha256(prompt.encode()).hexdigest()[:4], 16) / 0xFFFF
    n = 4 + int(600 * extract(prompt)["uncertainty_score"] ** 2 + 60 * jitter)
    if temperature > 0:
        z = np.random.default_rng([seed, int(hashlib.sha256(prompt.encode()).hexdigest()[:8], 16)]).standard_normal()
        n = max(1, int(n * np.exp(0.5 * temperature * z)))
    return (n, True) if n < max_new_tokens else (max_new_tokens, False)


class FakeEngine:
    def __init__(self, spec: str = "fake"):
        params = {"ms_per_token": 0.0, "ms_prefill": 0.0}
        _, _, rest = spec.partition(":")
        for item in filter(None, rest.split(",")):
            key, _, value = item.partition("=")
            if key not in params:
                raise RtlmError(f"unknown fake-model option {key!r}: use {', '.join(params)}")
            try:
                params[key] = float(value)
            except ValueError:
                raise RtlmError(f"fake-model option {key} needs a number, got {value!r}") from None
        self.step_s = params["ms_per_token"] / 1000.0
        self.prefill_s = params["ms_prefill"] / 1000.0
        self.info = ModelInfo(
            model_id=spec, resolved="fake", model_hash=f"fake:{rest}", dtype="none",
            device="cpu", device_name="fake", stop_tokens=["<eot>"],
        )

    def prompt_tokens(self, prompts: list[str]) -> list[int]:
        return [TEMPLATE_TOKENS + len(p.split()) for p in prompts]

    def _costs(self, batch: int, context: int) -> tuple[float, float]:
        step = (self.step_s or 0.001) * (1 + 0.1 * (batch - 1))
        prefill = (self.prefill_s or 0.002) * (1 + batch * context / 512)
        return prefill, step

    def generate(self, prompts: list[str], settings: GenerationSettings) -> BatchResult:
        plens = self.prompt_tokens(prompts)
        lens = [output_length(p, settings.max_new_tokens, settings.temperature, settings.seed) for p in prompts]
        prefill, step = self._costs(len(prompts), max(plens))
        longest = max(n for n, _ in lens)
        if self.step_s or self.prefill_s:
            time.sleep(self.prefill_s + longest * self.step_s * (1 + 0.1 * (len(prompts) - 1)))
        gens = [
            Generation(prompt_tokens=pl, output_tokens=n, ended=ended, ttft_s=prefill,
                       e2e_s=prefill + (n - 1) * step, text=" ".join(["tok"] * n))
            for pl, (n, ended) in zip(plens, lens)
        ]
        return BatchResult(gens, wall_s=prefill + (longest - 1) * step, prefill_s=prefill)

    def timing_point(self, batch: int, context: int, decode_steps: int) -> tuple[float, float]:
        return self._costs(batch, context)
