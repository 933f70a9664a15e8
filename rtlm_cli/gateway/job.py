"""``rtlm gateway``: open the backends (a managed vLLM server, or running servers at --url), build
the decision core and the service, listen until SIGTERM or Ctrl-C, drain, and leave the records as
a run directory that grows while the service runs (``formats/run.py``, schema 4)."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

from rtlm_cli.engines import EngineConfig, open_engine
from rtlm_cli.errors import RtlmError
from rtlm_cli.formats.run import RunWriter
from rtlm_cli.formats.store import check_output, now_iso, provenance
from rtlm_cli.formats.timing import load_timing_table, static_pricing
from rtlm_cli.serve.admit import Admission, load_predictor, true_lengths
from rtlm_cli.gateway.config import ServiceConfig
from rtlm_cli.gateway.service import GatewayService
from rtlm_cli.serve.config import split_spec
from rtlm_cli.serve.costmodel import CostModel
from rtlm_cli.serve.decide.backend import Backend

HEALTH_EVERY_S = 2.0
LOG_EVERY_S = 5.0


def gateway(cfg: ServiceConfig, engine_cfg: EngineConfig, model: str, console=None) -> dict:
    """Serve until stopped; the run's final meta (or {} without ``--out``)."""
    cfg.validate()
    if cfg.out:
        # a service never replaces a run (a day of traffic): no --overwrite here
        check_output(Path(cfg.out), overwrite=False, remedy="move that run away first")
    predictor = load_predictor(cfg.predictor)
    tables, truth = _tables(cfg, engine_cfg.client.urls), true_lengths(cfg.profile)
    with open_engine(engine_cfg, model, console=console) as engine:
        urls, queue = list(engine.client.settings.urls), cfg.queue()
        k = queue.k(engine_cfg.vllm.max_num_seqs)
        backends = [Backend(i, url, tables.get(url.rstrip("/"), tables[""]), inflight=k) for i, url in enumerate(urls)]
        core = queue.build_core(backends)
        meta = _meta(cfg, engine, k, predictor, console)
        meta["workers"] = [{"name": b.name, "spec": f"{b.name}={b.cost.name}"} for b in backends]
        meta["timing_warning"] = static_pricing([b.cost.name for b in backends])
        if meta["timing_warning"] and console is not None:
            console.print(f"[yellow]warning:[/yellow] {meta['timing_warning']}")
        records = RunWriter(Path(cfg.out), meta, flush_s=cfg.flush_s) if cfg.out else None
        entry = {"id": engine.client.model, "object": "model", "owned_by": "rtlm", "root": engine.info.resolved}
        fastest = min(backends, key=lambda b: b.step_s).cost  # predicted service is priced where it runs soonest
        service = GatewayService(cfg, queue.slot_queue(core), dict(enumerate(urls)),
                                 {engine.client.model: entry}, Admission(predictor, fastest, truth),
                                 engine.client.upstream, records)
        engine.run(_serve(service, cfg, console))
        return records.close() if records else {}


def _tables(cfg: ServiceConfig, urls: tuple[str, ...]) -> dict[str, CostModel]:
    """Each backend's cost model by URL ("" for --timing, the default); --backend names only --urls."""
    known = {u.rstrip("/") for u in urls}
    tables = {"": CostModel.from_table(load_timing_table(cfg.timing, missing_ok=False), cfg.timing)}
    for spec in cfg.backends:
        where, timing = split_spec(spec)
        where = where.rstrip("/")
        if where not in known or not timing:
            raise RtlmError(f"--backend {spec}: give URL=TIMING with URL one of the --url values "
                            f"({', '.join(sorted(known)) or 'none: rtlm starts one vLLM server, priced by --timing'})")
        tables[where] = CostModel.from_table(load_timing_table(timing, missing_ok=False), timing)
    return tables


def _meta(cfg: ServiceConfig, engine, k: int, predictor, console) -> dict:
    mismatch = None
    if predictor is not None:
        trained = (predictor.meta.get("model") or {}).get("model_hash")
        if trained and trained != engine.info.model_hash:
            mismatch = (f"predictor {cfg.predictor} was trained on another model's profiles than the backends serve "
                        f"({engine.info.model_id}): its predictions may not fit")
            if console is not None:
                console.print(f"[yellow]warning:[/yellow] {mismatch}")
    return {"mode": "real", "batching": "continuous", "dispatch": "gateway", "executes": "serving-engine",
            "service": True, "engine": engine.name, "engine_settings": engine.server, **cfg.queue().meta("gateway", k),
            "predictor": cfg.predictor, "predictor_version": predictor.version if predictor is not None else None,
            "profile": cfg.profile, "predictor_warning": mismatch, "cap": None,
            "workload": {"arrivals": "service", "rate_rps": None, "offered_load": None, "num_requests": None},
            "model": {"model_id": engine.info.model_id, "model_hash": engine.info.model_hash},
            "created_at": now_iso(), "listen": f"{cfg.host}:{cfg.port}", **provenance()}


async def _serve(service: GatewayService, cfg: ServiceConfig, console) -> None:
    from aiohttp import web

    runner = web.AppRunner(service.app(), handler_cancellation=True, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, cfg.host, cfg.port)
    try:
        await site.start()
    except OSError as e:
        await runner.cleanup()
        raise RtlmError(f"cannot listen on {cfg.host}:{cfg.port} ({e.strerror or e}): pick another --port") from None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    host, port = runner.addresses[0][:2]
    say = console.print if console is not None else print
    say(f"rtlm gateway: listening on http://{host}:{port} (policy {cfg.policy}, K = "
        f"{service.queue.core.backends[0].inflight} per backend, {len(service.urls)} backend(s))")
    chores = [asyncio.create_task(c) for c in (_flush(service, cfg), _health(service), _watch(service, cfg, console))]
    try:
        await stop.wait()
        say(f"rtlm gateway: draining for up to {cfg.drain_timeout_s:g} s")
        await service.drain(cfg.drain_timeout_s)
    finally:
        for t in chores:
            t.cancel()
        await asyncio.gather(*chores, return_exceptions=True)
        await runner.cleanup()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


async def _flush(service: GatewayService, cfg: ServiceConfig) -> None:
    while service.records is not None:
        await asyncio.sleep(cfg.flush_s)
        service.records.flush(complete=False)


async def _health(service: GatewayService) -> None:
    """A backend taken out is asked its /health every few seconds, and put back when it answers."""
    while True:
        await asyncio.sleep(HEALTH_EVERY_S)
        for b in service.queue.core.backends:
            if b.down and await service.upstream.healthy(service.urls[b.bid]):
                service.queue.bring_up(b.bid)
                service.metrics.live.labels(service.urls[b.bid]).set(1)
                service.slots.fill()


async def _watch(service: GatewayService, cfg: ServiceConfig, console) -> None:
    """The live view: serve-local's dashboard on a terminal (queue, per-backend in flight and speed,
    failures, percentiles over the latest records), a plain line every few seconds elsewhere."""
    from rtlm_cli.serve.live.dashboard import Dashboard

    names = list(service.urls.values())
    board = Dashboard(cfg.policy, names, None, console, every_s=LOG_EVERY_S, title="rtlm gateway")
    with board:
        while True:
            await asyncio.sleep(LOG_EVERY_S if board.plain else 0.5)
            now, recent = service.now(), service.recent
            states = service.backend_states()
            span = now - recent[0]["arrival_s"] if len(recent) == recent.maxlen else now
            board.update(now, service.arrived, len(service.queue.core.queue),
                         {u: n for u, (n, _) in states.items()}, list(recent), span_s=span,
                         speeds=service.metrics.speeds(now), predictor=service.metrics.predictor_figures())
