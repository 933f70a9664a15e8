"""What every engine offers the profiler and the executor: generate a batch, report timings.

A engine knows nothing about features, scheduling or storage: it turns prompts into generations
and says how long each took.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from rtlm_cli.defaults import MAX_NEW_TOKENS


@dataclass(frozen=True)
class GenerationSettings:
    max_new_tokens: int = field(default=MAX_NEW_TOKENS, metadata={"help": "Token cap per answer; answers that reach it are recorded as capped."})
    temperature: float = field(default=0.0, metadata={"help": "0 = greedy decoding (default, reproducible across devices); > 0 samples."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling mass when sampling."})
    repetition_penalty: float = field(default=1.0, metadata={"help": "transformers' repetition penalty (1 = off)."})
    seed: int = 0

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0

    def describe(self) -> dict:
        d = {"decoding": "greedy" if self.greedy else "sampling", "max_new_tokens": self.max_new_tokens,
             "repetition_penalty": self.repetition_penalty}
        if not self.greedy:
            d.update(temperature=self.temperature, top_p=self.top_p, seed=self.seed)
        return d


@dataclass(frozen=True)
class Generation:
    """One request's result. Times are seconds from the start of its batch's generate call."""

    prompt_tokens: int
    output_tokens: int  # generated tokens, the end-of-turn token included when the output ended
    ended: bool  # True: stopped at an end-of-turn token; False: hit max_new_tokens
    ttft_s: float
    e2e_s: float
    text: str = ""


@dataclass(frozen=True)
class BatchResult:
    generations: list[Generation]
    wall_s: float  # the whole batch, from the call to the last token of its longest member
    prefill_s: float = float("nan")


@dataclass
class ModelInfo:
    model_id: str  # what the user asked for (e.g. "smollm2", a path or a hub name)
    resolved: str  # what was loaded (a directory, file or hub name)
    model_hash: str
    dtype: str
    device: str
    device_name: str
    stop_tokens: list[str] = field(default_factory=list)
    load_s: float = 0.0


class Engine(Protocol):
    info: ModelInfo

    def generate(self, prompts: list[str], settings: GenerationSettings) -> BatchResult: ...

    def prompt_tokens(self, prompts: list[str]) -> list[int]: ...

    def timing_point(self, batch: int, context: int, decode_steps: int) -> tuple[float, float]:
        """(prefill seconds, seconds per decode step) for a synthetic batch at a context length."""
        ...
