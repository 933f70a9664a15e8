"""Settings of ``rtlm serve-local``, one plain dataclass per concern (building one has no side
effects), validated in one place once the ``Mode`` is known, and the expansion of a sweep (policies x
rates or loads) into one config per run.

- ``WorkloadConfig`` (workload.py): which prompts arrive when, with which deadlines.
- ``PolicyConfig``: what decides the order: the policy, its predictor and parameters, consolidation
  and offloading.
- ``BackendConfig``: what serves and how requests reach it: simulated or real, the engine, its
  workers or URLs and their timing tables, the engine's priority order.
- ``GatewayConfig``: rtlm's queue in front of serving engines.

The policy's and the gateway's options make one ``QueueConfig`` (``queue()``, ``serve/queue.py``),
the queue configuration ``rtlm gateway`` and Ray Serve's capacity queue use too.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from rtlm_cli.engines import EngineConfig
from rtlm_cli.errors import RtlmError
from rtlm_cli.formats.store import check_output
from rtlm_cli.formats.timing import timing_origin
from rtlm_cli.serve.decide.policies import RTLM, TailAware, check_needs
from rtlm_cli.serve.decide.slots import GATHER_MS
from rtlm_cli.serve.mode import Mode
from rtlm_cli.serve.queue import QueueConfig
from rtlm_cli.serve.sim.server import ServerLimits
from rtlm_cli.serve.workload import WorkloadConfig

GOODPUT_METRICS = ("ttft", "tpot", "e2el")


@dataclass(frozen=True)
class PolicyConfig:
    name: str = field(default="fcfs", metadata={"help": "Scheduling policy"})
    predictor: str | None = field(default=None, metadata={"help": "Predictor directory (needed by the policies that say so)."})
    size_weight: float = field(default=RTLM.SIZE_WEIGHT, metadata={"help": "rtlm policy: weight of predicted service time against arrival order (0 = FCFS; larger = lower mean response time, longer tail at high load)."})
    uncertainty_weight: float = field(default=RTLM.UNCERTAINTY_WEIGHT, metadata={"help": "rtlm policy: how much uncertainty inflates a request's predicted service time."})
    tail_weight: float = field(default=TailAware.TAIL_WEIGHT, metadata={"help": "tail policy: weight of the upper tail (CVaR) against the expected length (0 = expected length only)."})
    tail_level: float = field(default=TailAware.TAIL_LEVEL, metadata={"help": "tail policy: CVaR level (0.9: the mean of the longest 10% of a prompt's predicted answers)."})
    max_batch: int = field(default=1, metadata={"help": "Dynamic consolidation (static batches): batches of up to this many alike requests (1 = off). Near capacity a larger limit leaves more room to group; the timing table's largest measured batch is a good choice (16 on the reference table)."})
    offload: bool = field(default=False, metadata={"help": "Strategic offloading, only while the fast workers are congested. Static batches (hf workers): slower workers take the longest, most uncertain request if it finishes sooner there. Serving engines (--dispatch gateway): a slower backend's free slot takes the request whose move saves the most waiting, if it finishes no later there (any, once the fast backends alone are overloaded)."})
    local_prefill: bool = field(default=False, metadata={"help": "With a serving engine and a predictor that uses the prefill family: compute it on a local copy of the model (its cost counts in each request's latency)."})

    @property
    def params(self) -> dict:
        return {"size_weight": self.size_weight, "uncertainty_weight": self.uncertainty_weight,
                "tail_weight": self.tail_weight, "tail_level": self.tail_level}


@dataclass(frozen=True)
class BackendConfig:
    simulate: bool = field(default=False, metadata={"help": "Discrete-event simulation on the timing table instead of the real model."})
    batching: str | None = field(default=None, metadata={"help": "static (padded run-to-completion batches: the hf engine, RT-LM's setting) or continuous (a serving engine: with --simulate a vLLM-like one with a running set of --max-num-seqs, token budget, KV cache, preemption, priced by a table measured through an engine). Default: continuous with --engine vllm|openai, else static."})
    dispatch: str | None = field(default=None, metadata={"help": "How requests reach a serving engine: direct (each sent when it arrives, its policy key as the request's priority; the engine orders its own queue) or gateway (rtlm's own queue, at most --inflight requests in flight per backend; several backends, --offload, --shed). Default: direct for a serving engine, batches for hf workers."})
    model: str = field(default="smollm2", metadata={"help": "Model for real runs (as in `rtlm profile`)."})
    specs: tuple[str, ...] = field(default=(), metadata={"help": "A backend (where requests run) and its timing table, repeatable: WHERE[=TIMING], WHERE being a device for hf workers (cpu, cuda:0), a --url for serving engines, a name in simulation; TIMING a profile or timing file, or a shipped table (h200, vllm-cpu). Default: one backend (cpu; the --url; in simulation \"worker\") priced by the profile's table."})
    timing: str | None = field(default=None, metadata={"help": "Default timing table (a profile directory, a .jsonl/.parquet file, or h200, vllm-cpu)."})
    max_new_tokens: int | None = field(default=None, metadata={"help": "Token cap for real runs (default: the profile's)."})
    priority_order: str = field(default="lower-first", metadata={"help": "Which engine priority runs first: lower-first (vLLM) or higher-first (SGLang's default); honoured by the simulated engine too."})
    allow_static_timing: bool = field(default=False, metadata={"help": "Let --batching continuous price steps with a table measured with static batches (hf engine)."})
    engine: EngineConfig = field(default_factory=EngineConfig)
    limits: ServerLimits = field(default_factory=ServerLimits)


@dataclass(frozen=True)
class GatewayConfig:
    inflight: int | None = field(default=None, metadata={"help": "--dispatch gateway: K, the requests in flight per backend (default: --max-num-seqs, the engine's batch)."})
    shed: bool = field(default=False, metadata={"help": "--dispatch gateway with deadlines (--slo, --slo-factor): drop a request that can no longer meet its deadline (recorded shed, counted as missed) instead of serving it late; priced at the concurrency it would join and the backend's realised pace."})
    gather_ms: float | None = field(default=None, metadata={"help": f"--dispatch gateway: a request reaching an idle gateway is held this long so that what arrives with it (a burst) is ordered together, as rtlm gateway does (0: none; default {GATHER_MS:g})."})
    placement: str = field(default="first-free", metadata={"help": "--dispatch gateway with several backends: first-free (a freed slot, else the fastest free backend, takes the next request), least-loaded (the free backend with the fewest in flight: spreads the load, smaller batches), round-robin (in turn: a baseline) or power-of-two (Ray Serve's default router: the less loaded of two drawn at random; a baseline)."})
    retry_failed: bool = field(default=False, metadata={"help": "--dispatch gateway: a request whose backend failed before its first chunk because it is down or overloaded (no connection, HTTP 502/503/504) goes once more to a live backend (recorded in retries; the one retry rule of every path)."})


def split_spec(spec: str) -> tuple[str, str]:
    """``WHERE[=TIMING]`` -> (where, timing or ""); a URL may hold '=', a timing table's name never does."""
    where, sep, timing = spec.rpartition("=")
    return (where, timing) if sep else (timing, "")


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


@dataclass(frozen=True)
class ReplayConfig:
    out: str = field(metadata={"help": "Run directory to write (a parent directory when sweeping several policies/rates/loads)."})
    workload: WorkloadConfig = field(default_factory=WorkloadConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    backends: BackendConfig = field(default_factory=BackendConfig)
    gateway: GatewayConfig = field(default_factory=GatewayConfig)
    goodput: tuple[str, ...] = field(default=(), metadata={"help": "Fixed SLOs for goodput as `vllm bench serve` counts it, e.g. ttft:2000 tpot:100 (milliseconds; also e2el); a request is good when it meets every one."})
    overwrite: bool = field(default=False, metadata={"help": "Replace an existing run directory once the new run is written (a killed new run leaves the old one whole)."})
    flush_s: float = field(default=2.0, metadata={"help": "Real runs: the records are written to the run directory this often, so a run killed even with SIGKILL keeps what finished before the last flush."})

    @classmethod
    def of(cls, out: str, **options) -> "ReplayConfig":
        """One config from flat keywords, each a field of the concern that owns it (``policy`` the
        policy's name; ``limits`` or ServerLimits' own fields); a concern may be given whole
        (``workload=WorkloadConfig(...)``). For scripts: ``ReplayConfig.of(out, simulate=True, policy="rtlm")``."""
        if isinstance(options.get("policy"), str):
            options["name"] = options.pop("policy")
        own = {k: options.pop(k) for k in ("goodput", "overwrite", "flush_s") if k in options}
        limit_names = {f.name for f in dataclasses.fields(ServerLimits)}
        limits = {k: options.pop(k) for k in list(options) if k in limit_names}
        parts = {}
        for part, kind in (("workload", WorkloadConfig), ("policy", PolicyConfig), ("backends", BackendConfig),
                           ("gateway", GatewayConfig)):
            given = options.pop(part, None) or kind()
            names = {f.name for f in dataclasses.fields(kind)}
            parts[part] = dataclasses.replace(given, **{k: options.pop(k) for k in list(options) if k in names})
        if options:
            raise TypeError(f"ReplayConfig.of: no setting named {', '.join(sorted(options))}")
        if limits:
            b = parts["backends"]
            parts["backends"] = dataclasses.replace(b, limits=dataclasses.replace(b.limits, **limits))
        return cls(out=out, **own, **parts)

    @property
    def mode(self) -> Mode:
        b = self.backends
        return Mode.resolve(b.simulate, b.batching, b.dispatch, b.engine.name)

    def queue(self) -> QueueConfig:
        """The queue this replay runs (``serve/queue.py``): the policy's options and the gateway's."""
        p, g = self.policy, self.gateway
        return QueueConfig(policy=p.name, policy_params=tuple(p.params.items()), inflight=g.inflight,
                           gather_ms=GATHER_MS if g.gather_ms is None else g.gather_ms, placement=g.placement, shed=g.shed, offload=p.offload,
                           max_batch=p.max_batch, priority_order=self.backends.priority_order)

    @property
    def inflight(self) -> int:
        """K, the requests in flight per backend under --dispatch gateway (the engine's batch by default)."""
        b = self.backends
        return self.queue().k(b.engine.vllm.max_num_seqs if b.engine.is_server else b.limits.max_num_seqs)

    def validate(self) -> "ReplayConfig":
        mode = self.mode
        w, p, b = self.workload, self.policy, self.backends
        w.validate()
        self.queue().validate()  # policy (did-you-mean), its parameters, K, window, placement, priority order
        check_needs(p.name, p.predictor, w.profile)
        if mode.simulated and not w.profile:
            raise RtlmError("--simulate needs --profile: the simulator replays the true output lengths recorded there")
        if not w.profile and not w.prompts:
            raise RtlmError("pass --profile (prompts with known lengths) or --prompts (any prompt source)")
        b.engine.validate()
        goodput_thresholds(self.goodput)
        if p.max_batch != 1 and mode.batching == "continuous":
            raise RtlmError(f"--max-batch (>= 1) is for static batches; a serving engine batches by itself (got {p.max_batch})")
        _check_dispatch(mode, self)
        if mode.simulated and mode.batching == "continuous":
            _check_simulated_server(b, w.profile)
        if not mode.simulated and b.engine.is_server and b.specs:
            urls = {u.rstrip("/") for u in b.engine.client.urls or (b.engine.name,)}
            named = {split_spec(s)[0].rstrip("/") for s in b.specs}
            if len(b.specs) != len(urls) or named != urls:
                raise RtlmError(f"with a serving engine, give one --backend URL=TIMING per --url ({', '.join(sorted(urls))}), "
                                "or none")
        if self.flush_s <= 0:
            raise RtlmError(f"--flush must be > 0 seconds, got {self.flush_s}")
        check_output(Path(self.out), self.overwrite)
        return self


def _check_dispatch(mode: Mode, cfg: ReplayConfig) -> None:
    """What each way of reaching the backends allows."""
    g, b = cfg.gateway, cfg.backends
    if mode.dispatch != "gateway" and (g.inflight is not None or g.shed or g.retry_failed or g.gather_ms is not None):
        raise RtlmError("--inflight (>= 1), --shed, --retry-failed and --gather-ms go with --dispatch gateway")
    if mode.dispatch == "direct" and (cfg.policy.offload or len(b.engine.client.urls) > 1 or len(b.specs) > 1):
        raise RtlmError("--dispatch direct sends to one engine: several --url or --backend and --offload need "
                        "--dispatch gateway")
    if mode.dispatch == "gateway" and g.shed and cfg.workload.slo_s is None and cfg.workload.slo_factor is None:
        raise RtlmError("--shed drops requests past their deadline: give deadlines with --slo or --slo-factor")


def _check_simulated_server(b: BackendConfig, profile: str | None) -> None:
    """A simulated serving engine: sane limits, and steps priced by a table measured through an engine."""
    m = b.limits
    if min(m.max_num_seqs, m.max_num_batched_tokens, m.block_size) < 1 or m.kv_cache_tokens < m.block_size:
        raise RtlmError("--max-num-seqs, --max-num-batched-tokens and --block-size must be >= 1, and "
                        "--kv-cache-tokens at least one block")
    for spec in b.specs or ("",):
        source = split_spec(spec)[1] or b.timing or profile
        if source and timing_origin(source) == "hf" and not b.allow_static_timing:
            raise RtlmError(f"the timing table of {source} was measured with static batches (the hf engine): continuous "
                            "batching needs one measured through a serving engine (`rtlm profile --engine vllm "
                            "--calibrate -n 0`, or the shipped --timing vllm-cpu), or pass --allow-static-timing")


def sweep(base: ReplayConfig, policies: list[str], rates: list[float] | None, loads: list[float] | None) -> list[ReplayConfig]:
    """One config per (policy, rate or load) point; several points write to ``out/<policy>-<load|rate><x>``.
    Every point is validated before the first one runs."""
    if rates is not None and loads is not None:
        raise RtlmError("give --rate or --load, not both")
    points = [("rate", r) for r in rates] if rates is not None else [("load", x) for x in (loads or [None])]
    policies = policies or [base.policy.name]
    several = len(policies) * len(points) > 1
    configs = []
    for pol in policies:
        for kind, value in points:
            name = f"{pol}-{kind}{value:g}" if value is not None else pol
            configs.append(dataclasses.replace(
                base, policy=dataclasses.replace(base.policy, name=pol),
                out=str(Path(base.out) / name) if several else base.out,
                workload=dataclasses.replace(base.workload, **{kind: value})))
    for c in configs:
        c.validate()
    return configs
