"""What the tests share, in one module (tests import it; no test imports another test module):
one-line error checks, process-group and polling helpers, the golden files' check, seeded request
sets, timing tables, the injected-clock executor parts, and ``rtlm gateway`` as a subprocess. The
fixtures are in ``conftest.py``; the fake servers are ``rtlm_cli.testing``'s."""

import gzip
import heapq
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd

from rtlm_cli.engines.base import BatchResult, Generation
from rtlm_cli.engines.vllm import free_port
from rtlm_cli.formats.timing import load_timing_table
from rtlm_cli.paths import source_path
from rtlm_cli.serve.costmodel import CostModel
from rtlm_cli.serve.decide.request import Request

ROOT = Path(__file__).parent.parent
GOLDEN = Path(__file__).parent / "golden"
REFERENCE = source_path("reference")  # the shipped reference profile
H200 = source_path("h200")


def one_line_error(result) -> str:
    """The error text of a failed command, checked to be a single line with no traceback."""
    text = re.sub(r"\s+", " ", result.output).strip()
    assert "Traceback" not in result.output
    assert text.startswith("error:"), result.output
    return text


def in_group(group: int, zombies: bool = True) -> list:
    """The processes (psutil) of process group ``group``; ``zombies``: also those that have exited
    and are not yet reaped by their parent."""
    import psutil

    out = []
    for p in psutil.process_iter():
        try:
            if os.getpgid(p.pid) == group and (zombies or p.status() != psutil.STATUS_ZOMBIE):
                out.append(p)
        except (ProcessLookupError, psutil.Error):
            pass
    return out


def wait_until(check, timeout_s: float = 30.0, what: str = "a condition"):
    """Polls ``check`` every 50 ms until it returns something true, which is returned; an
    AssertionError naming ``what`` after ``timeout_s``."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


async def until(check, timeout_s: float = 30.0, what: str = "a condition"):
    """``wait_until`` inside a running event loop: polls ``check`` every 10 ms without blocking it."""
    import asyncio

    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        value = check()
        if value:
            return value
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def metric(url: str, sample: str) -> float | None:
    """One sample of a service's Prometheus ``/metrics`` (``name`` or ``name{labels}``), None if absent."""
    text = urllib.request.urlopen(url + "/metrics", timeout=10).read().decode()
    for line in text.splitlines():
        if line.startswith(sample + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


def left_in_group(group: int, seconds: float, zombies: bool = True) -> list:
    """Waits up to ``seconds`` for process group ``group`` to empty; what is left in it."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and in_group(group, zombies):
        time.sleep(0.2)
    return in_group(group, zombies)


def check_frame(name: str, df: pd.DataFrame) -> None:
    """``df`` as CSV equals the golden file ``name`` (written instead with RTLM_REGEN_GOLDEN=1)."""
    text = df.to_csv(index=False, float_format="%.9g")
    path = GOLDEN / f"{name}.csv.gz"
    if os.environ.get("RTLM_REGEN_GOLDEN") == "1":
        path.write_bytes(gzip.compress(text.encode(), mtime=0))
    assert path.is_file(), f"{path} is missing: regenerate with RTLM_REGEN_GOLDEN=1"
    assert text == gzip.decompress(path.read_bytes()).decode(), f"{name}: the decisions moved"


def workload(n: int, seed: int, gap_s: float, cost: CostModel, slack_s: float = 40.0) -> list[Request]:
    """Seeded Poisson arrivals (mean gap ``gap_s``) with a mixture predictor's fields, priced by
    ``cost``; a third of them with a deadline ``slack_s`` after their arrival."""
    rng = np.random.default_rng(seed)
    out, t = [], 0.0
    for i in range(n):
        t += float(rng.exponential(gap_s))
        prompt = int(rng.integers(30, 700))
        p = float(rng.uniform())
        ended = float(rng.integers(5, 250))
        pred = p * 256 + (1 - p) * ended
        true = 256 if rng.uniform() < p else int(ended)
        out.append(Request(rid=i, arrival_s=round(t, 6), prompt_id=f"p{i}", prompt_tokens=prompt, predicted_tokens=pred,
                           p90_tokens=pred, capped_prob=p, ended_tokens=ended, uncertainty=float(rng.uniform()),
                           predicted_service_s=cost.service_s(prompt, pred),
                           deadline_s=t + slack_s if i % 3 == 0 else None, true_tokens=true,
                           true_service_s=cost.service_s(prompt, true), prediction_cost_s=1e-4))
    return out


def hand_made(n: int = 600, seed: int = 11) -> list[Request]:
    """``workload`` priced on the reference CPU table: a request every 1.6 s, deadlines 60 s out."""
    return workload(n, seed, 1.6, CostModel.from_table(load_timing_table(REFERENCE)), slack_s=60.0)


# A CPU-like table: a decode step costs 40 ms at batch 1 and 80 ms at batch 8 (4x throughput).
CPU = [{"batch": b, "context": c, "prefill_s": 0.001 * b * c / 16, "decode_step_s": s}
       for b, s in ((1, 0.04), (2, 0.045), (4, 0.055), (8, 0.08)) for c in (128, 1024)]
GPU = [{"batch": b, "context": c, "prefill_s": 0.02, "decode_step_s": 0.018} for b in (1, 8, 32) for c in (128, 1024)]



FLAT = [{"batch": b, "context": c, "prefill_s": 0.02, "decode_step_s": 0.01} for b in (1, 64) for c in (16, 4096)]



class VirtualClock:
    """Time jumps to the next finished batch or the next arrival, whichever comes first (a batch
    finishing at an arrival's instant is delivered first, as the simulator orders them)."""

    def __init__(self):
        self.t, self.heap, self.seq = 0.0, [], 0

    def now(self) -> float:
        return self.t

    def finish_at(self, t: float, item) -> None:
        heapq.heappush(self.heap, (t, self.seq, item))
        self.seq += 1

    def next_result(self, until):
        if self.heap and (until is None or self.heap[0][0] <= until):
            self.t, _, item = heapq.heappop(self.heap)
            return item
        assert until is not None, "nothing runs and nothing will arrive, yet requests are unfinished"
        self.t = until
        return None


class TableEngine:
    """Generates each request's true length in the time a worker's timing table gives the batch."""

    def __init__(self, cost: CostModel, requests, fail=()):
        self.cost, self.fail = cost, set(fail)
        self.by_prompt = {r.prompt_id: r for r in requests}

    def generate(self, batch) -> BatchResult:
        if self.fail & {r.prompt_id for r in batch}:
            raise RuntimeError("boom")
        true = [r.true_tokens for r in batch]
        ttft, finishes, end = self.cost.batch_times([r.prompt_tokens for r in batch], true)
        return BatchResult([Generation(r.prompt_tokens, n, n < 256, ttft, f) for r, n, f in zip(batch, true, finishes)],
                           wall_s=end)


class SyncWorkers:
    """Runs a batch at once and tells the virtual clock when it finishes."""

    def __init__(self, engines: dict, clock: VirtualClock):
        self.engines, self.clock = engines, clock

    def submit(self, bid, batch):
        try:
            res = self.engines[bid].generate(batch)
            self.clock.finish_at(self.clock.now() + res.wall_s, (bid, batch, res, None))
        except RuntimeError as e:
            self.clock.finish_at(self.clock.now() + 0.5, (bid, batch, None, f"RuntimeError: {e}"))


class NoBoard:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def update(self, *args):
        pass


class GatewayProcess:
    """``rtlm gateway`` in a subprocess; ``url`` once it listens; ``stop()`` sends SIGTERM (SIGKILL if it
    does not exit)."""

    def __init__(self, *args, env=None, start_s: float = 60):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "rtlm_cli.cli", "gateway", "--port", str(self.port), *map(str, args)]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env={**os.environ, **(env or {})})
        deadline = time.time() + start_s
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"the gateway exited: {self.proc.stdout.read()}")
            try:
                urllib.request.urlopen(self.url + "/health", timeout=1)
                return
            except urllib.error.HTTPError:
                return  # it answers (503: no live backend)
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise AssertionError(f"the gateway did not start listening in {start_s} s")

    def stop(self, timeout: float = 30) -> tuple[int, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode, self.proc.stdout.read()


def post(url: str, body, headers=None, raw: bytes | None = None) -> tuple[int, dict | str]:
    data = raw if raw is not None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            text = resp.read().decode()
            return resp.status, json.loads(text) if resp.headers.get_content_type() == "application/json" else text
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read().decode())


def decided(queue) -> list[list[tuple[int, str]]]:
    """The sends a ``SlotQueue`` decides from now on, one list per call that sent anything (requests
    sent together), each (request id, backend name) in the order decided: a trace of the decisions
    themselves, read off the queue, not off the clock that timed the sends."""
    log, fill = [], queue.fill

    def logged(now, first=None):
        out = fill(now, first)
        if out.sends:
            log.append([(r.rid, b.name) for r, b in out.sends])
        return out

    queue.fill = logged
    return log
