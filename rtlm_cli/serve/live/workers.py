"""rtlm's own executor: one model per hf worker (a thread each), static batches really generated, on the
wall clock.

The dispatcher (this thread) is the only caller of the decision core, through the same calls as the
simulator (``sim/static.py``). A request's first and last tokens are its batch's start plus the engine's
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
from rtlm_cli.formats.run import not_run, record
from rtlm_cli.serve.decide.core import DecisionCore
from rtlm_cli.serve.decide.request import Request
from rtlm_cli.serve.live.dashboard import Dashboard


def _worker_loop(model: str, device: str, inbox: queue.Queue, results: queue.Queue, ready: queue.Queue, bid: int,
                 settings: GenerationSettings):
    """One worker: loads its own model and runs every torch op in this thread. (On a CPU, torch ops
    run from two threads give two OpenMP pools that spin against each other and slow decoding badly:
    docs/benchmarks.md. So the dispatcher thread never touches torch.)"""
    from rtlm_cli.engines import load_engine

    try:
        engine = load_engine(model, device=device)
        engine.generate(["Hello"], GenerationSettings(max_new_tokens=4))  # warm-up
        ready.put((bid, engine.info, None))
    except Exception as e:  # RtlmError included: reported by the dispatcher
        ready.put((bid, None, e))
        return
    while True:
        batch = inbox.get()
        if batch is None:
            return
        try:
            res = engine.generate([r.prompt for r in batch], settings)
            results.put((bid, batch, res, None))
        except Exception as e:  # one bad batch must not end the run
            results.put((bid, batch, None, f"{type(e).__name__}: {e}"))


class ThreadWorkers:
    """One thread per worker, each with its own model; ``submit`` hands a batch to a worker and
    ``results`` yields ``(bid, batch, BatchResult or None, error)`` as batches finish."""

    def __init__(self, backends, model: str, settings: GenerationSettings, console=None):
        self.results: queue.Queue = queue.Queue()
        ready: queue.Queue = queue.Queue()
        self.inboxes: dict[int, queue.Queue] = {}
        for b in backends:
            device = b.name
            if device not in ("cpu", "auto") and not device.startswith("cuda"):
                raise RtlmError(f"backend {device!r} is not a device: hf workers run on cpu, cuda or cuda:N (names are for --simulate)")
            if console:
                console.print(f"loading {model} on {device} for worker {b.name} ...")
            self.inboxes[b.bid] = queue.Queue()
            threading.Thread(target=_worker_loop, args=(model, device, self.inboxes[b.bid], self.results, ready, b.bid,
                                                        settings), daemon=True, name=f"rtlm-worker-{b.name}").start()
        self.info = None
        for _ in backends:
            _, worker_info, error = ready.get()
            if error is not None:
                self.close()
                raise error
            self.info = self.info or dataclasses.asdict(worker_info)

    def submit(self, bid: int, batch: list[Request]) -> None:
        self.inboxes[bid].put(batch)

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


def run_batches(requests: list[Request], core: DecisionCore, workers, clock, board, sink=None) -> tuple[list[dict], bool]:
    """Admit requests as they arrive, give every idle worker the core's next batch, record batches
    as they finish (each record to ``sink`` too, when given); (records in request order, interrupted)."""
    backends = {b.bid: b for b in core.backends}
    pending = sorted(requests, key=lambda r: (r.arrival_s, r.rid))
    records: dict[int, dict] = {}
    running: dict[int, tuple[float, int, list[Request]]] = {}
    batch_id = arrived = 0
    interrupted = False
    try:
        with board:
            while len(records) < len(requests):
                now = clock.now()
                while arrived < len(pending) and pending[arrived].arrival_s <= now:
                    core.add_request(pending[arrived], now)
                    arrived += 1
                for bid in sorted(set(backends) - set(running)):
                    batch = core.schedule(backends[bid], now)
                    if batch:
                        running[bid] = (now, batch_id, batch)
                        workers.submit(bid, batch)
                        batch_id += 1
                board.update(now, arrived, len(core.queue),
                             {backends[b].name: len(batch) for b, (_, _, batch) in running.items()}, list(records.values()))
                got = clock.next_result(pending[arrived].arrival_s if arrived < len(pending) else None)
                if got is not None:
                    bid, batch, res, error = got
                    start, this_batch, _ = running.pop(bid)
                    done = clock.now()
                    made = _batch_records(batch, res, error, start, done, backends[bid].name, this_batch)
                    records.update(made)
                    for row in made.values() if sink is not None else ():
                        sink(row)
                    core.update(backends[bid], done, batch)
    except KeyboardInterrupt:
        interrupted = True
    for r in pending:
        if r.rid not in records:
            records[r.rid] = not_run(r, "cancelled")
    return [records[r.rid] for r in requests], interrupted


def _batch_records(batch: list[Request], res, error: str | None, start: float, done: float, worker: str,
                   batch_id: int) -> dict[int, dict]:
    """The records of a batch that returned (``res``), or failed whole (``error``)."""
    out = {}
    for i, r in enumerate(batch):
        common = dict(backend=worker, batch_id=batch_id, batch_size=len(batch), in_flight=len(batch), finish_s=done)
        if res is None:
            out[r.rid] = record(r, start_s=start, first_token_s=done, last_token_s=done, output_tokens=0,
                                status="failed", error=error, **common)
        else:
            g = res.generations[i]
            out[r.rid] = record(r, start_s=start, first_token_s=start + g.ttft_s, last_token_s=start + g.e2e_s,
                                output_tokens=g.output_tokens, ended=g.ended, **common)
    return out


def serve_batches(requests: list[Request], core: DecisionCore, model: str, max_new_tokens: int, label: str,
                  console=None, dashboard: bool = True, sink=None):
    """Replay ``requests`` on real hf workers; (records, model info, interrupted).

    Predictions come with the requests (made beforehand in a separate process, their measured cost
    per prompt recorded): no LightGBM runs in this process, where it would slow torch on a CPU.
    """
    workers = ThreadWorkers(core.backends, model, GenerationSettings(max_new_tokens=max_new_tokens), console)
    board = Dashboard(label, [b.name for b in core.backends], len(requests), console, live=dashboard)
    try:
        records, interrupted = run_batches(requests, core, workers, WallClock(workers.results), board, sink)
    finally:
        workers.close()
    return records, workers.info, interrupted
