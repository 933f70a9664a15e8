"""``rtlm serve-local``: resolve the ``Mode`` once, build the workload's requests and the decision core,
run the mode's one path (``serve/mode.py`` lists the six), and write a run directory. Torch is
imported only where a model runs (the hf executor's workers)."""

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
from rtlm_cli.formats.run import RunWriter
from rtlm_cli.formats.store import now_iso, provenance
from rtlm_cli.formats.timing import load_timing_table, static_pricing, timing_origin
from rtlm_cli.serve.config import ReplayConfig, goodput_thresholds, split_spec
from rtlm_cli.serve.costmodel import CostModel
from rtlm_cli.serve.decide.backend import Backend
from rtlm_cli.serve.decide.core import DecisionCore
from rtlm_cli.serve.live.servers import engine_for
from rtlm_cli.serve.mode import Mode
from rtlm_cli.serve.pool import Pool, build_requests, check_predictor, load_pool, predict_pool
from rtlm_cli.serve.sim.server import SimulatedServer, StepCost, capacity_rps


def make_backends(cfg: ReplayConfig, mode: Mode) -> list[Backend]:
    """Backends from specs ``WHERE[=TIMING]``: devices (hf workers), URLs (serving engines; a managed
    vLLM is "vllm") or names (simulation), each priced by its timing table (default: ``--timing``,
    else the profile's)."""
    b = cfg.backends
    if mode.executes == "serving-engine" and not mode.simulated:
        given = dict(split_spec(s) for s in b.specs)
        specs = [(u, given.get(u, given.get(u.rstrip("/"), ""))) for u in (b.engine.client.urls or (b.engine.name,))]
    else:
        specs = [split_spec(s) for s in b.specs or (("worker",) if mode.simulated else ("cpu",))]
    default_timing = b.timing or cfg.workload.profile
    inflight = {"batches": 1, "direct": None, "gateway": cfg.inflight}[mode.dispatch]
    backends = []
    for i, (where, timing) in enumerate(specs):
        source = timing or default_timing
        if not source:
            raise RtlmError(f"worker {where} has no timing table: pass --timing FILE or {where}=TIMING")
        cost = CostModel.from_table(load_timing_table(source, missing_ok=False), where)
        backends.append(Backend(i, where, cost, static=mode.batching == "static", inflight=inflight, timing=str(source)))
    return backends


def load_capacity(mode: Mode, cfg: ReplayConfig, backends: list[Backend], pool: Pool, predicted: np.ndarray) -> float:
    """Requests/s the backends sustain over this pool's requests: continuous-batching capacity for a
    serving engine, batch-1 service otherwise (what ``--load`` is a share of)."""
    sizes = np.where(pool.true_tokens > 0, pool.true_tokens, predicted)
    if mode.batching == "continuous":
        return sum(capacity_rps(b.cost, cfg.backends.limits, pool.prompt_tokens, sizes) for b in backends)
    idx = np.linspace(0, len(sizes) - 1, min(len(sizes), 500)).astype(int)
    return sum(1.0 / float(np.mean([b.cost.service_s(int(pool.prompt_tokens[i]), float(sizes[i])) for i in idx]))
               for b in backends)


def simulate(mode: Mode, cfg: ReplayConfig, requests, core: DecisionCore) -> list[dict]:
    """The simulated modes' one path each."""
    from rtlm_cli.serve.sim.continuous import simulate_direct, simulate_gateway
    from rtlm_cli.serve.sim.static import simulate_batches

    if mode.dispatch == "batches":
        return simulate_batches(requests, core)
    b = cfg.backends
    servers = {x.bid: SimulatedServer(b.limits, StepCost(x.cost), x.bid, x.name, b.priority_order) for x in core.backends}
    if mode.dispatch == "direct":
        return simulate_direct(requests, core, core.backends[0], servers[0])
    return simulate_gateway(requests, cfg.queue().slot_queue(core), servers)


def execute(mode: Mode, cfg: ReplayConfig, requests, core: DecisionCore, max_new: int, console, dashboard: bool,
            engine, sink=None):
    """(records, model info or None when simulated, interrupted, the engine's settings or None); a
    real run hands each record to ``sink`` as it is made."""
    if mode.simulated:
        return simulate(mode, cfg, requests, core), None, False, None
    if mode.executes == "serving-engine":
        from rtlm_cli.serve.live.servers import replay_on_servers

        return replay_on_servers(mode, cfg, requests, core, max_new, console, dashboard, engine, sink)
    from rtlm_cli.serve.live.workers import serve_batches

    return (*serve_batches(requests, core, cfg.backends.model, max_new, cfg.policy.name, console, dashboard, sink),
            None)


def replay(cfg: ReplayConfig, console=None, dashboard: bool = True, engine=None) -> dict:
    """Run one replay and write its run directory; ``engine``: an open serving engine to reuse (one
    is opened for this replay when it needs one and none is given)."""
    cfg.validate()
    mode = cfg.mode
    if mode.executes == "serving-engine" and not mode.simulated and engine is None:
        with engine_for(cfg, console) as opened:
            return replay(cfg, console, dashboard, opened)
    p, w = cfg.policy, cfg.workload
    pmeta = predictor_format.read_predictor_meta(p.predictor) if p.predictor else None
    pool = load_pool(w, p.predictor, pmeta, engine, samples_ok=mode.simulated or mode.executes == "serving-engine")
    check_predictor(p.predictor, pmeta, pool)
    cap = float(profile_format.cap(pool.meta) if pool.meta else cfg.backends.max_new_tokens or MAX_NEW_TOKENS)
    backends = make_backends(cfg, mode)
    pricing_warning = static_pricing([b.timing for b in backends]) if mode.batching == "continuous" else None
    if pricing_warning and console is not None:
        console.print(f"[yellow]warning:[/yellow] {pricing_warning}")
    isolate = not mode.simulated and mode.executes == "hf-workers"  # torch and LightGBM in one process: slow
    preds = predict_pool(p.predictor, pool, cap, isolate=isolate, pmeta=pmeta, console=console)
    capacity = load_capacity(mode, cfg, backends, pool, preds.predicted)
    rate = w.rate if w.rate is not None else (w.load * capacity if w.load is not None else None)
    requests = build_requests(w, pool, preds, min(backends, key=lambda b: b.step_s).cost, rate, cap)
    core = cfg.queue().build_core(backends, cap_tokens=float(pmeta["cap"]) if pmeta and pmeta.get("cap") else None)
    started, t0 = now_iso(), time.perf_counter()
    meta = run_meta(cfg, mode, backends, capacity, rate, int(cap), pmeta, preds.out_of_fold)
    meta.update(created_at=started, model=pool.meta["model"] if pool.meta else {"model_id": cfg.backends.model},
                timing_warning=pricing_warning)
    # a real run's records reach its directory as they are made (a SIGKILL loses at most one flush)
    writer = RunWriter(Path(cfg.out), meta, live=not mode.simulated, flush_s=cfg.flush_s)
    records, model_info, interrupted, about_engine = execute(mode, cfg, requests, core,
                                                             cfg.backends.max_new_tokens or int(cap), console,
                                                             dashboard, engine, writer.add)
    meta = writer.close(records, {"complete": not interrupted, "wall_s": time.perf_counter() - t0,
                                  "model": model_info or meta["model"], "engine_settings": about_engine})
    meta["out"] = cfg.out
    return meta


def run_meta(cfg: ReplayConfig, mode: Mode, backends: list[Backend], capacity: float, rate: float | None, cap: int,
             pmeta: dict | None, out_of_fold: int) -> dict:
    """What a run's meta.json says of how it was made (``docs/formats.md``)."""
    p, b, w = cfg.policy, cfg.backends, cfg.workload
    return {
        **mode.describe(), **cfg.queue().meta(mode.dispatch, cfg.inflight),
        "engine": None if mode.simulated else engine_name(b.model, b.engine.name),
        "engine_model": dataclasses.asdict(b.limits) if mode.simulated and mode.batching == "continuous" else None,
        "goodput_slo": goodput_thresholds(cfg.goodput) or None, "cap": cap,
        "workload": {**dataclasses.asdict(w), "rate_rps": rate, "capacity_rps": capacity,
                     "offered_load": rate / capacity if rate else None},
        "profile": w.profile, "prompts": w.prompts, "predictor": p.predictor,
        "predictor_meta": {k: pmeta[k] for k in ("families", "method", "target", "metrics")} if pmeta else None,
        "out_of_fold_predictions": out_of_fold,
        "workers": [{"name": x.name, "spec": s} for x, s in zip(backends, b.specs or [x.name for x in backends])],
        "timing": [{"backend": x.name, "table": x.timing, "measured_by": timing_origin(x.timing)} for x in backends],
        "seed": w.seed, **provenance(),
    }
