"""``rtlm serve-local``."""

from __future__ import annotations

from typing import Optional

import typer

from rtlm_cli.cli.app import app, console, out_console, print_json
from rtlm_cli.cli.options import engine_options, numbers, option, user_errors
from rtlm_cli.engines import EngineConfig
from rtlm_cli.serve.config import ReplayConfig
from rtlm_cli.serve.continuous import EngineModel
from rtlm_cli.serve.scheduling.policies import policy_help
from rtlm_cli.serve.workload import WorkloadConfig

W, R, M = WorkloadConfig, ReplayConfig, EngineModel


@app.command("serve-local")
@user_errors
@engine_options
def serve_local(
    out: str = option(R, "out", "--out", "-o"),
    profile: Optional[str] = option(R, "profile", "--profile"),
    prompts: Optional[str] = option(R, "prompts", "--prompts", "-p"),
    text_column: Optional[str] = option(R, "text_column", "--text-column"),
    predictor: Optional[str] = option(R, "predictor", "--predictor"),
    policy: str = option(R, "policy", "--policy", help=f"{policy_help()}. Comma-separated to sweep."),
    simulate: bool = option(R, "simulate", "--simulate"),
    arrivals: str = option(W, "arrivals", "--arrivals"),
    rate: Optional[str] = option(W, "rate", "--rate", "--rates"),
    load: Optional[str] = option(W, "load", "--load", "--loads"),
    cv: float = option(W, "cv", "--cv"),
    num_requests: int = option(W, "num_requests", "--num-requests", "-n"),
    seed: int = option(W, "seed", "--seed"),
    trace: Optional[str] = option(W, "trace", "--trace"),
    slo: Optional[float] = option(W, "slo_s", "--slo"),
    slo_factor: Optional[float] = option(W, "slo_factor", "--slo-factor"),
    max_batch: int = option(R, "max_batch", "--max-batch"),
    offload: bool = option(R, "offload", "--offload"),
    worker: list[str] = option(R, "workers", "--worker", default=[]),
    timing: Optional[str] = option(R, "timing", "--timing"),
    model: str = option(R, "model", "--model", "-m"),
    max_new_tokens: Optional[int] = option(R, "max_new_tokens", "--max-new-tokens"),
    size_weight: float = option(R, "size_weight", "--size-weight"),
    uncertainty_weight: float = option(R, "uncertainty_weight", "--uncertainty-weight"),
    overwrite: bool = option(R, "overwrite", "--overwrite"),
    dispatch: str = option(R, "dispatch", "--dispatch"),
    inflight: Optional[int] = option(R, "inflight", "--inflight"),
    shed: bool = option(R, "shed", "--shed"),
    retry_failed: bool = option(R, "retry_failed", "--retry-failed"),
    placement: str = option(R, "placement", "--placement"),
    batching: str = option(R, "batching", "--batching"),
    max_num_batched_tokens: int = option(M, "max_num_batched_tokens", "--max-num-batched-tokens"),
    kv_cache_tokens: int = option(M, "kv_cache_tokens", "--kv-cache-tokens"),
    block_size: int = option(M, "block_size", "--block-size"),
    allow_static_timing: bool = option(R, "allow_static_timing", "--allow-static-timing"),
    goodput: Optional[str] = option(R, "goodput", "--goodput", default=None),
    priority_order: str = option(R, "priority_order", "--priority-order"),
    local_prefill: bool = option(R, "local_prefill", "--local-prefill"),
    no_dashboard: bool = typer.Option(False, "--no-dashboard", help="Plain progress lines instead of the live dashboard."),
    as_json: bool = typer.Option(False, "--json", help="Print the run summary (or summaries) as JSON on stdout."),
    engine: EngineConfig = None,
):
    """Replay a workload under a scheduling policy, for real or simulated.

    Real runs generate on the local model with a live dashboard; --simulate runs the same
    scheduler in a discrete-event simulator on the timing table. With a serving engine
    (--engine vllm, or openai --url URL) each request is sent when it arrives with its policy's
    key as its priority, and the engine orders its own queue (--dispatch direct).
    --simulate --batching continuous simulates such an engine (running set, token budget, KV cache).

    Example: [bold]rtlm serve-local --engine vllm --profile reference-64 --predictor P --policy fcfs,rtlm --arrivals burst -n 32 --out runs/vllm[/bold]
    Example: [bold]rtlm serve-local --simulate --profile reference --predictor predictors/smollm2 --policy fcfs,rtlm --loads 0.5,0.9 -n 10000 --out runs/sweep[/bold]
    """
    from rtlm_cli.render import run_table
    from rtlm_cli.serve.config import sweep
    from rtlm_cli.serve.engine_run import shared_engine
    from rtlm_cli.serve.job import replay

    base = ReplayConfig(
        out=out, profile=profile, prompts=prompts, text_column=text_column, predictor=predictor, simulate=simulate,
        model=model, workers=tuple(worker), timing=timing, max_batch=max_batch, offload=offload,
        max_new_tokens=max_new_tokens, size_weight=size_weight, uncertainty_weight=uncertainty_weight,
        overwrite=overwrite, engine=engine, dispatch=dispatch, inflight=inflight, shed=shed, retry_failed=retry_failed, placement=placement, batching=batching, allow_static_timing=allow_static_timing,
        goodput=tuple((goodput or "").replace(",", " ").split()),
        engine_model=EngineModel(max_num_seqs=engine.vllm.max_num_seqs, max_num_batched_tokens=max_num_batched_tokens,
                                 kv_cache_tokens=kv_cache_tokens, block_size=block_size), priority_order=priority_order, local_prefill=local_prefill,
        workload=WorkloadConfig(arrivals=arrivals, cv=cv, num_requests=num_requests, seed=seed, trace=trace,
                                slo_s=slo, slo_factor=slo_factor),
    )
    policies = [p.strip() for p in policy.split(",") if p.strip()]
    configs = sweep(base, policies, numbers(rate, "--rate"), numbers(load, "--load"))
    with shared_engine(base, configs, console) as opened:  # one server for the whole sweep
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
