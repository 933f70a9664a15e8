"""``rtlm serve-local``."""

from __future__ import annotations

from typing import Optional

import typer

from rtlm_cli.cli.app import app, console, out_console, print_json
from rtlm_cli.cli.options import engine_options, numbers, option, user_errors
from rtlm_cli.engines import EngineConfig
from rtlm_cli.serve.config import BackendConfig, GatewayConfig, PolicyConfig, ReplayConfig
from rtlm_cli.serve.decide.policies import policy_help
from rtlm_cli.serve.sim.server import ServerLimits
from rtlm_cli.serve.workload import WorkloadConfig

W, R, P, B, G, L = WorkloadConfig, ReplayConfig, PolicyConfig, BackendConfig, GatewayConfig, ServerLimits


@app.command("serve-local")
@user_errors
@engine_options
def serve_local(
    out: str = option(R, "out", "--out", "-o"),
    profile: Optional[str] = option(W, "profile", "--profile"),
    prompts: Optional[str] = option(W, "prompts", "--prompts", "-p"),
    text_column: Optional[str] = option(W, "text_column", "--text-column"),
    predictor: Optional[str] = option(P, "predictor", "--predictor"),
    policy: str = option(P, "name", "--policy", help=f"{policy_help()}. Comma-separated to sweep."),
    simulate: bool = option(B, "simulate", "--simulate"),
    arrivals: str = option(W, "arrivals", "--arrivals"),
    rate: Optional[str] = option(W, "rate", "--rate", "--rates"),
    load: Optional[str] = option(W, "load", "--load", "--loads"),
    cv: float = option(W, "cv", "--cv"),
    num_requests: int = option(W, "num_requests", "--num-requests", "-n"),
    seed: int = option(W, "seed", "--seed"),
    trace: Optional[str] = option(W, "trace", "--trace"),
    slo: Optional[float] = option(W, "slo_s", "--slo"),
    slo_factor: Optional[float] = option(W, "slo_factor", "--slo-factor"),
    max_batch: int = option(P, "max_batch", "--max-batch"),
    offload: bool = option(P, "offload", "--offload"),
    size_weight: float = option(P, "size_weight", "--size-weight"),
    uncertainty_weight: float = option(P, "uncertainty_weight", "--uncertainty-weight"),
    tail_weight: float = option(P, "tail_weight", "--tail-weight"),
    tail_level: float = option(P, "tail_level", "--tail-level"),
    local_prefill: bool = option(P, "local_prefill", "--local-prefill"),
    backend: list[str] = option(B, "specs", "--backend", default=[]),
    worker: list[str] = typer.Option([], "--worker", hidden=True, help="Old spelling of --backend."),
    timing: Optional[str] = option(B, "timing", "--timing"),
    model: str = option(B, "model", "--model", "-m"),
    max_new_tokens: Optional[int] = option(B, "max_new_tokens", "--max-new-tokens"),
    dispatch: Optional[str] = option(B, "dispatch", "--dispatch"),
    batching: Optional[str] = option(B, "batching", "--batching"),
    priority_order: str = option(B, "priority_order", "--priority-order"),
    allow_static_timing: bool = option(B, "allow_static_timing", "--allow-static-timing"),
    max_num_batched_tokens: int = option(L, "max_num_batched_tokens", "--max-num-batched-tokens"),
    kv_cache_tokens: int = option(L, "kv_cache_tokens", "--kv-cache-tokens"),
    block_size: int = option(L, "block_size", "--block-size"),
    inflight: Optional[int] = option(G, "inflight", "--inflight"),
    shed: bool = option(G, "shed", "--shed"),
    retry_failed: bool = option(G, "retry_failed", "--retry-failed"),
    placement: str = option(G, "placement", "--placement"),
    gather_ms: Optional[float] = option(G, "gather_ms", "--gather-ms"),
    goodput: Optional[str] = option(R, "goodput", "--goodput", default=None),
    overwrite: bool = option(R, "overwrite", "--overwrite"),
    flush: float = option(R, "flush_s", "--flush"),
    no_dashboard: bool = typer.Option(False, "--no-dashboard", help="Plain progress lines instead of the live dashboard."),
    as_json: bool = typer.Option(False, "--json", help="Print the run summary (or summaries) as JSON on stdout."),
    engine: EngineConfig = None,
):
    """Replay a workload under a scheduling policy, for real or simulated.

    Real runs generate on the local model with a live dashboard; --simulate runs the same decision
    core in a discrete-event simulator on the timing table. With a serving engine (--engine vllm, or
    openai --url URL) each request is sent when it arrives with its policy's key as its priority, and
    the engine orders its own queue (--dispatch direct), or waits in rtlm's queue with at most
    --inflight per backend (--dispatch gateway). --simulate --batching continuous simulates such an
    engine (running set, token budget, KV cache).

    Example: [bold]rtlm serve-local --engine vllm --profile reference-64 --predictor P --policy fcfs,rtlm --arrivals burst -n 32 --out runs/vllm[/bold]
    Example: [bold]rtlm serve-local --simulate --profile reference --predictor predictors/smollm2 --policy fcfs,rtlm --loads 0.5,0.9 -n 10000 --out runs/sweep[/bold]
    """
    from rtlm_cli.render import run_table
    from rtlm_cli.serve.config import sweep
    from rtlm_cli.serve.job import replay
    from rtlm_cli.serve.live.servers import shared_engine

    base = ReplayConfig(
        out=out, overwrite=overwrite, flush_s=flush, goodput=tuple((goodput or "").replace(",", " ").split()),
        workload=WorkloadConfig(profile=profile, prompts=prompts, text_column=text_column, arrivals=arrivals, cv=cv,
                                num_requests=num_requests, seed=seed, trace=trace, slo_s=slo, slo_factor=slo_factor),
        policy=PolicyConfig(name=policy, predictor=predictor, size_weight=size_weight,
                            uncertainty_weight=uncertainty_weight, tail_weight=tail_weight, tail_level=tail_level,
                            max_batch=max_batch, offload=offload,
                            local_prefill=local_prefill),
        backends=BackendConfig(simulate=simulate, batching=batching, dispatch=dispatch, model=model,
                               specs=tuple(backend) + tuple(worker), timing=timing, max_new_tokens=max_new_tokens,
                               priority_order=priority_order, allow_static_timing=allow_static_timing, engine=engine,
                               limits=ServerLimits(max_num_seqs=engine.vllm.max_num_seqs,
                                                   max_num_batched_tokens=max_num_batched_tokens,
                                                   kv_cache_tokens=kv_cache_tokens, block_size=block_size)),
        gateway=GatewayConfig(inflight=inflight, shed=shed, placement=placement, retry_failed=retry_failed,
                              gather_ms=gather_ms),
    )
    policies = [p.strip() for p in policy.split(",") if p.strip()]
    configs = sweep(base, policies, numbers(rate, "--rate"), numbers(load, "--load"))
    with shared_engine(base, console) as opened:  # one server for the whole sweep
        metas = [replay(c, console=console, dashboard=not no_dashboard, engine=opened) for c in configs]
    if as_json:
        rows = [{"out": m["out"], "policy": m["policy"], "mode": m["mode"], "engine": m["engine"],
                 "workload": m["workload"], **m["summary"]} for m in metas]
        print_json(rows if len(metas) > 1 else rows[0])
    else:
        out_console.print(run_table(metas))
    if any(not m["complete"] for m in metas):
        console.print("[red]interrupted:[/red] the finished requests are kept in the run; the rest are marked cancelled")
        raise typer.Exit(130)
