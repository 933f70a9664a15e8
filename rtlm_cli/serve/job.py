"""``rtlm serve-local``: build a workload's requests, drive the shared scheduler with the simulator or
the real executor, and write a run directory. Torch is imported only by the real executor.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np

from rtlm_cli.defaults import MAX_NEW_TOKENS
from rtlm_cli.engines import engine_name
from rtlm_cli.errors import RtlmError
from rtlm_cli.formats import predictor as predictor_format
from rtlm_cli.formats import profile as profile_format
from rtlm_cli.formats.run import write_run
from rtlm_cli.formats.store import now_iso, provenance
from rtlm_cli.formats.timing import load_timing_table, timing_origin
from rtlm_cli.serve.config import ReplayConfig, goodput_thresholds
from rtlm_cli.serve.continuous import (
    ContinuousEngine,
    StepCost,
    continuous_capacity,
    simulate_continuous,
)
from rtlm_cli.serve.costmodel import CostModel
from rtlm_cli.serve.engine_run import engine_for
from rtlm_cli.serve.gateway import Gateway, simulate_gateway
from rtlm_cli.serve.requests import (
    Pool,
    build_requests,
    check_predictor,
    load_pool,
    predict_pool,
)
from rtlm_cli.serve.scheduling.policies import make_policy
from rtlm_cli.serve.scheduling.scheduler import Scheduler, Worker


def make_workers(cfg: ReplayConfig, pool: Pool) -> list[Worker]:
    """Workers from specs ``NAME[=TIMING]`` (simulation) or ``DEVICE[=TIMING]`` (real); a serving
    engine is one worker, priced by the profile's (or ``--timing``'s) table."""
    if cfg.engine.is_server:  # one worker per server: its URL (a managed vLLM: "vllm")
        names = cfg.engine.client.urls or (cfg.engine.name,)
        specs = tuple(f"{u}={s.partition('=')[2]}" if s else u for u, s in zip(names, cfg.workers or [""] * len(names)))
    else:
        specs = cfg.workers or (("cpu",) if not cfg.simulate else ("worker",))
    default_timing = cfg.timing or cfg.profile
    workers = []
    for i, spec in enumerate(specs):
        name, _, timing = spec.partition("=")
        source = timing or default_timing
        if not source:
            raise RtlmError(f"worker {name} has no timing table: pass --timing FILE or NAME=TIMING")
        table = load_timing_table(source, missing_ok=False)
        workers.append(Worker(i, name, CostModel.from_table(table, name)))
    return workers


def capacity_rps(workers: list[Worker], pool: Pool, predicted: np.ndarray) -> float:
    """Requests/s the workers sustain at batch 1 for this pool's mean request."""
    sizes = np.where(pool.true_tokens > 0, pool.true_tokens, predicted)
    idx = np.linspace(0, len(sizes) - 1, min(len(sizes), 500)).astype(int)
    total = 0.0
    for w in workers:
        mean_s = float(np.mean([w.cost.service_s(int(pool.prompt_tokens[i]), float(sizes[i])) for i in idx]))
        total += 1.0 / mean_s
    return total


def check_continuous_timing(cfg: ReplayConfig) -> None:
    """Continuous batching prices steps with a table measured through a serving engine."""
    for spec in cfg.workers or ("",):
        source = spec.partition("=")[2] or cfg.timing or cfg.profile
        if timing_origin(source) == "hf" and not cfg.allow_static_timing:
            raise RtlmError(f"the timing table of {source} was measured with static batches (the hf engine): continuous "
                            "batching needs one measured through a serving engine (`rtlm profile --engine vllm "
                            "--calibrate -n 0`, or the shipped --timing vllm-cpu), or pass --allow-static-timing")


def execute(cfg: ReplayConfig, requests, scheduler: Scheduler, max_new: int, console, dashboard: bool, engine):
    """Run the requests one of five ways: simulated with static batches, simulated on a continuous
    engine (direct or behind the gateway), on rtlm's hf workers, or through serving engines;
    (records, model info or None when simulated, interrupted, the engine's settings or None)."""
    policy, workers = scheduler.policy, scheduler.workers
    if cfg.simulate and cfg.batching == "continuous":
        if cfg.dispatch == "gateway":  # the engines get no priority from the gateway: arrival order
            fifo = make_policy("fcfs")
            engines = {w.wid: ContinuousEngine(cfg.engine_model, StepCost(w.cost), fifo, cfg.priority_sign, w.wid, w.name)
                       for w in workers}
            return simulate_gateway(requests, Gateway(scheduler, workers, cfg.placement), engines), None, False, None
        return simulate_continuous(requests, policy, cfg.engine_model, workers[0].cost, cfg.priority_sign), None, False, None
    if cfg.simulate:
        from rtlm_cli.serve.simulate import simulate

        return simulate(requests, scheduler), None, False, None
    if cfg.engine.is_server:
        from rtlm_cli.serve.engine_run import serve_engine

        return serve_engine(requests, policy, cfg, max_new, console, dashboard, engine, scheduler)
    from rtlm_cli.serve.executor import serve

    return (*serve(requests, scheduler, cfg, max_new, console, dashboard), None)


def replay(cfg: ReplayConfig, console=None, dashboard: bool = True, engine=None) -> dict:
    """Run one replay and write its run directory; ``engine``: an open serving engine to reuse (one
    is opened for this replay when it needs one and none is given)."""
    cfg.validate()
    if cfg.engine.is_server and engine is None:
        with engine_for(cfg, console) as opened:
            return replay(cfg, console, dashboard, opened)
    pmeta = predictor_format.read_predictor_meta(cfg.predictor) if cfg.predictor else None
    pool = load_pool(cfg, pmeta, engine)
    check_predictor(cfg.predictor, pmeta, pool)
    cap = float(profile_format.cap(pool.meta) if pool.meta else cfg.max_new_tokens or MAX_NEW_TOKENS)
    workers = make_workers(cfg, pool)
    isolate = not cfg.simulate and not cfg.engine.is_server  # torch and LightGBM in one process: slow
    preds = predict_pool(cfg.predictor, pool, cap, isolate=isolate, pmeta=pmeta, console=console)
    continuous = cfg.simulate and cfg.batching == "continuous"
    if continuous:
        check_continuous_timing(cfg)
        sizes = np.where(pool.true_tokens > 0, pool.true_tokens, preds.predicted)
        capacity = sum(continuous_capacity(w.cost, cfg.engine_model, pool.prompt_tokens, sizes) for w in workers)
    else:
        capacity = capacity_rps(workers, pool, preds.predicted)
    w = cfg.workload
    rate = w.rate if w.rate is not None else (w.load * capacity if w.load is not None else None)
    fastest = min(workers, key=lambda x: x.cost.step(1, 256))
    requests = build_requests(cfg, pool, preds, fastest.cost, rate)
    pred_cap = float(pmeta["cap"]) if pmeta and pmeta.get("cap") else None  # what a mixture's P(capped) is of
    policy = make_policy(cfg.policy, **cfg.policy_params)
    if cfg.dispatch == "gateway":
        for worker in workers:
            worker.slots = cfg.slots
    scheduler = Scheduler(policy, workers, max_batch=cfg.max_batch, offload=cfg.offload, cap_tokens=pred_cap,
                          shed=cfg.shed)
    started = now_iso()
    t0 = time.perf_counter()
    max_new = cfg.max_new_tokens or int(cap)
    records, model_info, interrupted, about_engine = execute(cfg, requests, scheduler, max_new, console, dashboard,
                                                             engine)
    if model_info is None:  # simulated: the profile's model
        model_info = pool.meta["model"] if pool.meta else {"model_id": cfg.model}
    wall = time.perf_counter() - t0
    meta = {
        "complete": not interrupted, "created_at": started, "mode": "simulated" if cfg.simulate else "real",
        "engine": None if cfg.simulate else engine_name(cfg.model, cfg.engine.name),
        "batching": "continuous" if cfg.engine.is_server or continuous else "static", "engine_settings": about_engine,
        "engine_model": dataclasses.asdict(cfg.engine_model) if continuous else None,
        "dispatch": cfg.dispatch if continuous or cfg.engine.is_server else None,
        "inflight": cfg.slots if cfg.dispatch == "gateway" else None, "shed": cfg.shed,
        "placement": cfg.placement if cfg.dispatch == "gateway" else None,
        "goodput_slo": goodput_thresholds(cfg.goodput) or None,
        "policy": cfg.policy, "policy_params": cfg.policy_params, "cap": int(cap),
        "max_batch": cfg.max_batch, "offload": cfg.offload,
        "workload": {**dataclasses.asdict(w), "rate_rps": rate, "capacity_rps": capacity,
                     "offered_load": rate / capacity if rate else None},
        "profile": cfg.profile, "prompts": cfg.prompts, "predictor": cfg.predictor,
        "predictor_meta": {k: pmeta[k] for k in ("families", "method", "target", "metrics")} if pmeta else None,
        "out_of_fold_predictions": preds.out_of_fold,
        "model": model_info, "workers": [{"name": x.name, "spec": s} for x, s in zip(workers, cfg.workers or [x.name for x in workers])],
        "seed": w.seed, "wall_s": wall, **provenance(),
    }
    meta = write_run(Path(cfg.out), records, meta)
    meta["out"] = cfg.out
    return meta
