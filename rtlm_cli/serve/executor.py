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


class ThreadWorkers:
    """One thread per worker, each with its own model; ``submit`` hands a batch to a worker and
    ``results`` yields ``(wid, batch, BatchResult or None, error)`` as batches finish."""

    def __init__(self, scheduler, model: str, settings: GenerationSettings, console=None):
        self.results: queue.Queue = queue.Queue()
        ready: queue.Queue = queue.Queue()
        self.inboxes: dict[int, queue.Queue] = {}
        for w in scheduler.workers:
            device = w.name
            if device not in ("cpu", "auto") and not device.startswith("cuda"):
                raise RtlmError(f"worker {device!r} is not a device: real workers are cpu, cuda or cuda:N (names are for --simulate)")
            if console:
                console.print(f"loading {model} on {device} for worker {w.name} ...")
            self.inboxes[w.wid] = queue.Queue()
            threading.Thread(target=_worker_loop, args=(model, device, self.inboxes[w.wid], self.results, ready, w.wid,
                                                        settings), daemon=True, name=f"rtlm-worker-{w.name}").start()
        self.info = None
        for _ in scheduler.workers:
            _, worker_info, error = ready.get()
            if error is not None:
                self.close()
                raise error
            self.info = self.info or dataclasses.asdict(worker_info)

    def submit(self, wid: int, batch: list[Request]) -> None:
        self.inboxes[wid].put(batch)

    def close(self) -> None:
        for box in self.inboxes.values():
            box.put(None)


class WallClock:
    """Seconds since the run started; waiting for a result polls, so the dashboard stays live."""

    def __init__(self, results: queue.Queue, poll_s: float = 0.25):
        self.results, self.poll_s, self.t0 = results, poll_s, time.perf_counter()

    def now(self) -> float:
        return time.perf_counter() - self.t0

    def next_result(self, until: float | None):
        """The next finished batch, or None once ``until`` (the next arrival) or a poll interval passed."""
        wait = self.poll_s if until is None else min(max(until - self.now(), 0.0), self.poll_s)
        try:
            return self.results.get(timeout=wait)
        except queue.Empty:
            return None


def dispatch(requests: list[Request], scheduler, workers, clock, board) -> tuple[list[dict], bool]:
    """Admit requests as they arrive, give every idle worker the scheduler's next batch, record
    batches as they finish; (records in request order, interrupted)."""
    names = {w.wid: w.name for w in scheduler.workers}
    by_id = {w.wid: w for w in scheduler.workers}
    pending = sorted(requests, key=lambda r: (r.arrival_s, r.rid))
    records: dict[int, dict] = {}
    running: dict[int, tuple[float, int, list[Request]]] = {}
    idle = sorted(names)
    batch_id = arrived = 0
    interrupted = False
    try:
        with board:
            while len(records) < len(requests):
                now = clock.now()
                while arrived < len(pending) and pending[arrived].arrival_s <= now:
                    scheduler.arrive(pending[arrived], now)
                    arrived += 1
                for wid in list(idle):
                    batch = scheduler.next_batch(by_id[wid], now)
                    if batch:
                        idle.remove(wid)
                        running[wid] = (now, batch_id, batch)
                        workers.submit(wid, batch)
                        batch_id += 1
                board.update(now, arrived, scheduler.queue_len, {names[w]: len(b) for w, (_, _, b) in running.items()},
                             list(records.values()))
                got = clock.next_result(pending[arrived].arrival_s if arrived < len(pending) else None)
                if got is None:
                    continue
                wid, batch, res, error = got
                start, bid, _ = running.pop(wid)
                done = clock.now()
                for i, r in enumerate(batch):
                    if res is None:
                        records[r.rid] = record(r, start_s=start, first_token_s=done, last_token_s=done, finish_s=done,
                                                worker=names[wid], batch_id=bid, batch_size=len(batch),
                                                output_tokens=0, status="failed", error=error)
                    else:
                        g = res.generations[i]
                        records[r.rid] = record(r, start_s=start, first_token_s=start + g.ttft_s,
                                                last_token_s=start + g.e2e_s, finish_s=done, worker=names[wid],
                                                batch_id=bid, batch_size=len(batch),
                                                output_tokens=g.output_tokens, ended=g.ended)
                scheduler.finished(by_id[wid], done)
                idle.append(wid)
                idle.sort()
    except KeyboardInterrupt:
        interrupted = True
    for r in pending:
        if r.rid not in records:
            records[r.rid] = cancelled(r)
    return [records[r.rid] for r in requests], interrupted


def serve(requests: list[Request], scheduler, cfg, max_new_tokens: int, console=None, dashboard: bool = True):
    """Replay ``requests`` on real workers; (records, model info, interrupted).

    Predictions come with the requests (made beforehand in a separate process, their measured cost
    per prompt recorded): no LightGBM runs in this process, where it would slow torch on a CPU.
    """
    workers = ThreadWorkers(scheduler, cfg.model, GenerationSettings(max_new_tokens=max_new_tokens), console)
    board = Dashboard(cfg.policy, [w.name for w in scheduler.workers], len(requests), console, live=dashboard)
    try:
        records, interrupted = dispatch(requests, scheduler, workers, WallClock(workers.results), board)
    finally:
        workers.close()
    return records, workers.info, interrupted
