"""The real executor: one model per worker (a thread each), requests really generated, on the wall clock.

The dispatcher (this thread) is the only caller of the scheduler, through the same three calls
as the simulator. A request's first and last tokens are its batch's start plus the engine's
per-request TTFT and end-to-end times; its response is complete, and the worker free, when the
whole batch returns (``generate`` returns a batch at once). A
failing batch is recorded as failed and the run goes on; Ctrl-C stops dispatching, keeps every
finished record and marks the rest cancelled.
"""

from __future__ import annotations

import dataclasses
import queue
import threading
import time

from rtlm_cli.engines.base import GenerationSettings
from rtlm_cli.errors import RtlmError
from rtlm_cli.formats.run import cancelled, record
from rtlm_cli.serve.dashboard import Dashboard
from rtlm_cli.serve.scheduling.request import Request


def _worker_loop(model: str, device: str, inbox: queue.Queue, results: queue.Queue, ready: queue.Queue, wid: int,
                 settings: GenerationSettings):
    """One worker: loads its own model and runs every torch op in this thread. (On a CPU, torch ops
    run from two threads give two OpenMP pools that spin against each other: 1.7x slower decoding,
    measured. So the dispatcher thread never touches torch.)"""
    from rtlm_cli.engines import load_engine

    try:
        engine = load_engine(model, device=device)
        engine.generate(["Hello"], GenerationSettings(max_new_tokens=4))  # warm-up
        ready.put((wid, engine.info, None))
    except Exception as e:  # RtlmError included: reported by the dispatcher
        ready.put((wid, None, e))
        return
    while True:
        batch = inbox.get()
        if batch is None:
            return
        try:
            res = engine.generate([r.prompt for r in batch], settings)
            results.put((wid, batch, res, None))
        except Exception as e:  # one bad batch must not end the run
            results.put((wid, batch, None, f"{type(e).__name__}: {e}"))


def start_workers(scheduler, model: str, settings: GenerationSettings, console=None):
    """Start one thread per worker; (inboxes, results queue, model info) once every model is loaded."""
    results: queue.Queue = queue.Queue()
    ready: queue.Queue = queue.Queue()
    inboxes = {}
    for w in scheduler.workers:
        device = w.name
        if device not in ("cpu", "auto") and not device.startswith("cuda"):
            raise RtlmError(f"worker {device!r} is not a device: real workers are cpu, cuda or cuda:N (names are for --simulate)")
        if console:
            console.print(f"loading {model} on {device} for worker {w.name} ...")
        inboxes[w.wid] = queue.Queue()
        threading.Thread(target=_worker_loop, args=(model, device, inboxes[w.wid], results, ready, w.wid, settings),
                         daemon=True, name=f"rtlm-worker-{w.name}").start()
    info = None
    for _ in scheduler.workers:
        _, worker_info, error = ready.get()
        if error is not None:
            for box in inboxes.values():
                box.put(None)
            raise error
        info = info or dataclasses.asdict(worker_info)
    return inboxes, results, info


def serve(requests: list[Request], scheduler, cfg, max_new_tokens: int, console=None, dashboard: bool = True):
    """Replay ``requests`` on real workers; (records, model info, interrupted).

    Predictions come with the requests (made beforehand in a separate process, their measured cost
    per prompt recorded): no LightGBM runs in this process, where it would slow torch on a CPU.
    """
    settings = GenerationSettings(max_new_tokens=max_new_tokens)
    inboxes, results, info = start_workers(scheduler, cfg.model, settings, console)
    workers = {w.wid: w for w in scheduler.workers}
    pending = sorted(requests, key=lambda r: (r.arrival_s, r.rid))
    records: dict[int, dict] = {}
    running: dict[int, tuple[float, int, list[Request]]] = {}
    idle = sorted(workers)
    batch_id = 0
    arrived = 0
    interrupted = False
    board = Dashboard(cfg.policy, [w.name for w in scheduler.workers], len(requests), console, live=dashboard)
    t0 = time.perf_counter()
    try:
        with board:
            while len(records) < len(requests):
                now = time.perf_counter() - t0
                while arrived < len(pending) and pending[arrived].arrival_s <= now:
                    scheduler.arrive(pending[arrived], now)
                    arrived += 1
                for wid in list(idle):
                    batch = scheduler.next_batch(workers[wid], now)
                    if batch:
                        idle.remove(wid)
                        running[wid] = (now, batch_id, batch)
                        inboxes[wid].put(batch)
                        batch_id += 1
                board.update(now, arrived, scheduler.queue_len, {workers[w].name: len(b) for w, (_, _, b) in running.items()},
                             list(records.values()))
                wait = 0.25 if arrived >= len(pending) else min(max(pending[arrived].arrival_s - now, 0.0), 0.25)
                try:
                    wid, batch, res, error = results.get(timeout=wait)
                except queue.Empty:
                    continue
                start, bid, _ = running.pop(wid)
                done = time.perf_counter() - t0
                for i, r in enumerate(batch):
                    if res is None:
                        records[r.rid] = record(r, start_s=start, first_token_s=done, last_token_s=done, finish_s=done,
                                                worker=workers[wid].name,
                                                batch_id=bid, batch_size=len(batch), output_tokens=0,
                                                status="failed", error=error)
                    else:
                        g = res.generations[i]
                        records[r.rid] = record(r, start_s=start, first_token_s=start + g.ttft_s,
                                                last_token_s=start + g.e2e_s, finish_s=done, worker=workers[wid].name,
                                                batch_id=bid, batch_size=len(batch),
                                                output_tokens=g.output_tokens, ended=g.ended)
                scheduler.finished(workers[wid], done)
                idle.append(wid)
                idle.sort()
    except KeyboardInterrupt:
        interrupted = True
    finally:
        for box in inboxes.values():
            box.put(None)
    for r in pending:
        if r.rid not in records:
            records[r.rid] = cancelled(r)
    return [records[r.rid] for r in requests], info, interrupted
