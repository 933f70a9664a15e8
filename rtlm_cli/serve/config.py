"""Settings of ``rtlm serve-local`` (a plain dataclass with help; building one has no side effects),
and the expansion of a sweep (policies x rates or loads) into one config per run."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from rtlm_cli.engines import EngineConfig
from rtlm_cli.errors import RtlmError
from rtlm_cli.formats.store import check_output
from rtlm_cli.serve.continuous import EngineModel
from rtlm_cli.serve.scheduling.policies import RTLM, check_needs, make_policy
from rtlm_cli.serve.workload import WorkloadConfig

DISPATCH = ("direct", "gateway")
BATCHING = ("static", "continuous")
GOODPUT_METRICS = ("ttft", "tpot", "e2el")


def goodput_thresholds(specs: tuple[str, ...]) -> dict[str, float]:
    """``("ttft:2000", "tpot:100")`` -> ``{"ttft_s": 2.0, "tpot_s": 0.1}``."""
    out = {}
    for spec in specs:
        name, _, ms = spec.partition(":")
        try:
            value = float(ms)
        except ValueError:
            value = -1.0
        if name not in GOODPUT_METRICS or value <= 0:
            raise RtlmError(f"--goodput {spec!r} is not METRIC:MILLISECONDS with METRIC one of {', '.join(GOODPUT_METRICS)} "
                            "(e.g. ttft:2000 tpot:100)")
        out[f"{name}_s"] = value / 1000.0
    return out
PRIORITY_ORDERS = ("lower-first", "higher-first")


@dataclass(frozen=True)
class ReplayConfig:
    out: str = field(metadata={"help": "Run directory to write (a parent directory when sweeping several policies/rates/loads)."})
    workload: WorkloadConfig = field(default_factory=WorkloadConfig)
    policy: str = field(default="fcfs", metadata={"help": "Scheduling policy"})
    profile: str | None = field(default=None, metadata={"help": "Profile to draw prompts from (a directory, or a shipped one by name: reference, reference-64): true lengths known (needed by --simulate and oracle); its timing table prices the workers."})
    prompts: str | None = field(default=None, metadata={"help": "Any prompt source instead of a profile (real runs only)."})
    text_column: str | None = field(default=None, metadata={"help": "Text column of a prompt file."})
    predictor: str | None = field(default=None, metadata={"help": "Predictor directory (needed by the policies that say so)."})
    simulate: bool = field(default=False, metadata={"help": "Discrete-event simulation on the timing table instead of the real model."})
    model: str = field(default="smollm2", metadata={"help": "Model for real runs (as in `rtlm profile`)."})
    workers: tuple[str, ...] = field(default=(), metadata={"help": "A worker, repeatable: DEVICE[=TIMING] for real runs (cpu, cuda:0), NAME[=TIMING] in simulation; TIMING is a profile or timing file, or h200 (default: the profile's)."})
    timing: str | None = field(default=None, metadata={"help": "Default timing table (a profile directory, a .jsonl/.parquet file, or h200)."})
    max_batch: int = field(default=1, metadata={"help": "Dynamic consolidation: batches of up to this many alike requests (1 = off). Near capacity a larger limit leaves more room to group; the timing table's largest measured batch is a good choice (16 on the reference table)."})
    offload: bool = field(default=False, metadata={"help": "Strategic offloading, only while the fast workers are congested. Static batches (hf workers): slower workers take the longest, most uncertain request if it finishes sooner there. Serving engines (--dispatch gateway): a slower backend's free slot takes the request whose move saves the most waiting, if it finishes no later there (any, once the fast backends alone are overloaded)."})
    max_new_tokens: int | None = field(default=None, metadata={"help": "Token cap for real runs (default: the profile's)."})
    size_weight: float = field(default=RTLM.SIZE_WEIGHT, metadata={"help": "rtlm policy: weight of predicted service time against arrival order (0 = FCFS; larger = lower mean response time, longer tail at high load)."})
    uncertainty_weight: float = field(default=RTLM.UNCERTAINTY_WEIGHT, metadata={"help": "rtlm policy: how much uncertainty inflates a request's predicted service time."})
    overwrite: bool = field(default=False, metadata={"help": "Replace an existing run directory once the new run is written."})
    engine: EngineConfig = field(default_factory=EngineConfig)
    dispatch: str = field(default="direct", metadata={"help": "With a serving engine (real, or --batching continuous): direct (each request sent when it arrives, its policy key as the request's priority; the engine orders its own queue) or gateway (rtlm's own queue, at most --inflight requests in flight per backend; several backends, --offload, --shed)."})
    inflight: int | None = field(default=None, metadata={"help": "--dispatch gateway: requests in flight per backend (default: --max-num-seqs, the engine's batch)."})
    shed: bool = field(default=False, metadata={"help": "--dispatch gateway with deadlines (--slo, --slo-factor): drop a request that can no longer meet its deadline (recorded shed, counted as missed) instead of serving it late."})
    placement: str = field(default="first-free", metadata={"help": "--dispatch gateway with several backends: first-free (a freed slot, else the fastest free backend, takes the next request) or round-robin (in turn: a baseline)."})
    retry_failed: bool = field(default=False, metadata={"help": "--dispatch gateway: send a request that failed on a backend once more, to any live one (recorded in retries)."})
    priority_order: str = field(default="lower-first", metadata={"help": "Which engine priority runs first: lower-first (vLLM) or higher-first (SGLang's default)."})
    batching: str = field(default="static", metadata={"help": "With --simulate: static (padded run-to-completion batches: the hf engine, RT-LM's setting) or continuous (a vLLM-like engine: a running set of --max-num-seqs, token budget, KV cache, preemption; needs a timing table measured through an engine)."})
    engine_model: EngineModel = field(default_factory=EngineModel)
    allow_static_timing: bool = field(default=False, metadata={"help": "Let --batching continuous price steps with a table measured with static batches (hf engine)."})
    goodput: tuple[str, ...] = field(default=(), metadata={"help": "Fixed SLOs for goodput as `vllm bench serve` counts it, e.g. ttft:2000 tpot:100 (milliseconds; also e2el); a request is good when it meets every one."})
    local_prefill: bool = field(default=False, metadata={"help": "With a serving engine and a predictor that uses the prefill family: compute it on a local copy of the model (its cost counts in each request's latency)."})

    @property
    def priority_sign(self) -> int:
        return 1 if self.priority_order == "lower-first" else -1

    @property
    def policy_params(self) -> dict:
        return {"size_weight": self.size_weight, "uncertainty_weight": self.uncertainty_weight}

    def validate(self) -> "ReplayConfig":
        self.workload.validate()
        make_policy(self.policy, **self.policy_params)  # unknown name -> did-you-mean; bad parameters
        check_needs(self.policy, {k for k, v in (("predictor", self.predictor), ("profile", self.profile)) if v})
        if self.simulate and not self.profile:
            raise RtlmError("--simulate needs --profile: the simulator replays the true output lengths recorded there")
        if not self.profile and not self.prompts:
            raise RtlmError("pass --profile (prompts with known lengths) or --prompts (any prompt source)")
        if self.max_batch < 1:
            raise RtlmError(f"--max-batch must be >= 1, got {self.max_batch}")
        self.engine.validate()
        goodput_thresholds(self.goodput)
        if self.batching not in BATCHING:
            raise RtlmError(f"unknown --batching {self.batching!r}: use {' or '.join(BATCHING)}")
        if self.batching == "continuous":
            if not self.simulate:
                raise RtlmError("--batching continuous is a simulation (--simulate); real continuous batching is --engine vllm|openai")
            if self.max_batch != 1:
                raise RtlmError("--max-batch is for static batches; a continuous engine batches itself")
            if self.dispatch == "direct" and (self.offload or len(self.workers) > 1):
                raise RtlmError("--dispatch direct sends to one engine: several --worker and --offload need --dispatch gateway")
            if min(self.engine_model.max_num_seqs, self.engine_model.max_num_batched_tokens, self.engine_model.block_size) < 1 \
                    or self.engine_model.kv_cache_tokens < self.engine_model.block_size:
                raise RtlmError("--max-num-seqs, --max-num-batched-tokens and --block-size must be >= 1, and "
                                "--kv-cache-tokens at least one block")
        if self.engine.is_server:
            if self.simulate:
                raise RtlmError(f"--simulate runs no engine: drop --engine {self.engine.name} (or --simulate)")
            if self.max_batch != 1:
                raise RtlmError(f"--max-batch is for the hf engine's static batches; --engine {self.engine.name} batches by itself")
            if self.dispatch == "direct" and (len(self.engine.client.urls) > 1 or self.offload):
                raise RtlmError("--dispatch direct sends to one server: several --url and --offload need --dispatch gateway")
            if self.workers and len(self.workers) != max(len(self.engine.client.urls), 1):
                raise RtlmError("with a serving engine, give one --worker NAME=TIMING per --url (its timing table), or none")
            if self.priority_order not in PRIORITY_ORDERS:
                raise RtlmError(f"--priority-order is one of {', '.join(PRIORITY_ORDERS)}, got {self.priority_order!r}")
        if self.dispatch not in DISPATCH:
            raise RtlmError(f"unknown --dispatch {self.dispatch!r}: use {' or '.join(DISPATCH)}")
        if self.dispatch == "gateway" and not (self.engine.is_server or self.batching == "continuous"):
            raise RtlmError("--dispatch gateway fronts serving engines: use --engine vllm|openai, or --simulate --batching continuous")
        if (self.inflight is not None and self.inflight < 1) or ((self.shed or self.retry_failed or self.inflight)
                                                                  and self.dispatch != "gateway"):
            raise RtlmError("--inflight (>= 1), --shed and --retry-failed go with --dispatch gateway")
        if self.placement not in ("first-free", "round-robin"):
            raise RtlmError(f"--placement is first-free or round-robin, got {self.placement!r}")
        if self.shed and self.workload.slo_s is None and self.workload.slo_factor is None:
            raise RtlmError("--shed drops requests past their deadline: give deadlines with --slo or --slo-factor")
        check_output(Path(self.out), self.overwrite)
        return self

    @property
    def slots(self) -> int:
        """Requests in flight per backend under --dispatch gateway."""
        return self.inflight or (self.engine.vllm.max_num_seqs if self.engine.is_server else self.engine_model.max_num_seqs)


def sweep(base: ReplayConfig, policies: list[str], rates: list[float] | None, loads: list[float] | None) -> list[ReplayConfig]:
    """One config per (policy, rate or load) point; several points write to ``out/<policy>-<load|rate><x>``.
    Every point is validated before the first one runs."""
    if rates is not None and loads is not None:
        raise RtlmError("give --rate or --load, not both")
    points = [("rate", r) for r in rates] if rates is not None else [("load", x) for x in (loads or [None])]
    policies = policies or [base.policy]
    several = len(policies) * len(points) > 1
    configs = []
    for pol in policies:
        for kind, value in points:
            name = f"{pol}-{kind}{value:g}" if value is not None else pol
            configs.append(dataclasses.replace(
                base, policy=pol, out=str(Path(base.out) / name) if several else base.out,
                workload=dataclasses.replace(base.workload, **{kind: value})))
    for c in configs:
        c.validate()
    return configs
