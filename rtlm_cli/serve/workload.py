"""Workloads: which prompts arrive when (seeded arrival processes, or a trace) over prompts from a
profile (true lengths known) or a prompt source, and their deadlines.

Every random draw comes from this workload's own ``numpy.random.Generator``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rtlm_cli.errors import RtlmError

ARRIVALS = ("poisson", "gamma", "constant", "burst", "trace")


@dataclass(frozen=True)
class WorkloadConfig:
    profile: str | None = field(default=None, metadata={"help": "Profile to draw prompts from (a directory, or a shipped one by name: reference, reference-64): true lengths known (needed by --simulate and oracle); its timing table prices the workers."})
    prompts: str | None = field(default=None, metadata={"help": "Any prompt source instead of a profile (real runs only)."})
    text_column: str | None = field(default=None, metadata={"help": "Text column of a prompt file."})
    arrivals: str = field(default="poisson", metadata={"help": "poisson, gamma (bursty, see --cv), constant, burst (all at t=0) or trace."})
    rate: float | None = field(default=None, metadata={"help": "Arrival rate in requests/s; comma-separated to sweep."})
    load: float | None = field(default=None, metadata={"help": "Arrival rate as a share of the workers' batch-1 capacity (printed); comma-separated to sweep."})
    cv: float = field(default=2.0, metadata={"help": "Coefficient of variation of gamma inter-arrival times."})
    num_requests: int = field(default=100, metadata={"help": "Requests in the workload."})
    seed: int = field(default=0, metadata={"help": "Seed of arrivals and prompt draws."})
    trace: str | None = field(default=None, metadata={"help": "CSV/JSONL trace: time_s plus prompt_id (from --profile) or prompt."})
    slo_s: float | None = field(default=None, metadata={"help": "Deadline of each request: arrival + SLO seconds."})
    slo_factor: float | None = field(default=None, metadata={"help": "Deadline: arrival + factor x its predicted service time."})

    def validate(self) -> "WorkloadConfig":
        if self.arrivals not in ARRIVALS:
            raise RtlmError(f"unknown arrival process {self.arrivals!r}: use one of {', '.join(ARRIVALS)}")
        if self.arrivals == "trace" and not self.trace:
            raise RtlmError("--arrivals trace needs --trace FILE")
        if self.arrivals not in ("burst", "trace"):
            if self.rate is None and self.load is None:
                raise RtlmError(f"--arrivals {self.arrivals} needs --rate or --load")
            if self.rate is not None and self.rate <= 0:
                raise RtlmError(f"--rate must be > 0 requests/s, got {self.rate}")
            if self.load is not None and self.load <= 0:
                raise RtlmError(f"--load must be > 0, got {self.load}")
        if self.num_requests < 1:
            raise RtlmError(f"--num-requests must be >= 1, got {self.num_requests}")
        if self.cv <= 0:
            raise RtlmError(f"--cv must be > 0, got {self.cv}")
        if (self.slo_s is not None and self.slo_s <= 0) or (self.slo_factor is not None and self.slo_factor <= 0):
            raise RtlmError("--slo and --slo-factor must be > 0")
        return self


def arrival_times(cfg: WorkloadConfig, rate: float | None, rng: np.random.Generator) -> np.ndarray:
    n = cfg.num_requests
    if cfg.arrivals == "burst":
        return np.zeros(n)
    if cfg.arrivals == "constant":
        return np.arange(n) / rate
    if cfg.arrivals == "poisson":
        gaps = rng.exponential(1.0 / rate, n)
    else:  # gamma with mean 1/rate and the given CV: shape k = 1/cv^2, scale = 1/(rate k)
        k = 1.0 / cfg.cv**2
        gaps = rng.gamma(k, 1.0 / (rate * k), n)
    gaps[0] = 0.0
    return np.cumsum(gaps)


def read_trace(path: str):
    """A trace: rows of ``time_s`` and ``prompt_id`` (from the profile) or ``prompt`` (text)."""
    import pandas as pd

    p = Path(path)
    if not p.is_file():
        raise RtlmError(f"trace file {path} does not exist")
    try:
        df = pd.read_json(p, lines=True) if p.suffix == ".jsonl" else pd.read_csv(p)
    except Exception as e:
        raise RtlmError(f"cannot read trace {path}: {type(e).__name__}: use CSV or JSONL") from None
    if "time_s" not in df or not ({"prompt_id", "prompt"} & set(df.columns)):
        raise RtlmError(f"trace {path} needs a time_s column and a prompt_id or prompt column")
    if df.empty:
        raise RtlmError(f"trace {path} is empty")
    if (df["time_s"] < 0).any():
        raise RtlmError(f"trace {path} has negative times")
    return df.sort_values("time_s", kind="stable").reset_index(drop=True)
