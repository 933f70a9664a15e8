"""Helpers the benchmark scripts share: processes pinned to a core, started until they listen and
stopped with their whole group; the tests' fake OpenAI server in a process of its own."""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the repository


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def exit_on_sigterm() -> None:
    """SIGTERM raises SystemExit (143) instead of ending the process on the spot, so that what the bench
    started is stopped on the way out: `subprocess.run` kills its child (a `vllm bench serve` client),
    `finally` blocks stop gateways and `with` blocks stop vLLM servers."""
    def handler(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM ends it at once
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


def free_port() -> int:
    from rtlm_cli.engines.vllm import free_port as port

    return port()


def wait_listening(url: str, proc: subprocess.Popen, limit_s: float = 60) -> None:
    """Until ``url``/health answers (any HTTP status); an exit or ``limit_s`` is an error."""
    deadline = time.time() + limit_s
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{url} exited: {Path(proc.args_log).read_text()[-3000:]}")
        try:
            urllib.request.urlopen(url + "/health", timeout=1)
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.1)
    stop(proc)
    raise SystemExit(f"{url} did not listen in {limit_s} s")


def start(cmd: list[str], url: str, core: int | None = None, limit_s: float = 60) -> subprocess.Popen:
    """``cmd`` in a process group of its own (pinned to ``core`` with taskset), once ``url`` listens; its
    output goes to the file ``proc.args_log``."""
    pin = ["taskset", "-c", str(core)] if core is not None else []
    fd, log = tempfile.mkstemp(prefix="rtlm-bench-", suffix=".log")  # a file, not a pipe: nothing blocks on it
    proc = subprocess.Popen([*pin, *map(str, cmd)], cwd=ROOT, stdout=fd, stderr=subprocess.STDOUT,
                            start_new_session=True)
    os.close(fd)
    proc.args_log = log
    wait_listening(url, proc, limit_s)
    return proc


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM to its group (SIGKILL after 60 s)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def fake_server(core: int | None = None, ms_per_token: float = 0.0, max_running: int = 1_000_000):
    """(process, url) of the tests' fake OpenAI server in a process of its own."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start([sys.executable, "-m", "rtlm_cli.testing.fake_openai", "--port", port, "--ms-per-token", ms_per_token,
                  "--max-running", max_running], url, core)
    return proc, url


def gateway(url: str, *args, core: int | None = None, limit_s: float = 120):
    """(process, url) of `rtlm gateway --url URL ARGS` on a free port."""
    port = free_port()
    gurl = f"http://127.0.0.1:{port}"
    proc = start([sys.executable, "-m", "rtlm_cli.cli", "gateway", "--url", url, "--port", port, *args], gurl, core,
                 limit_s)
    return proc, gurl


def warm_up(url: str, model: str = "smollm2", n: int = 4, tokens: int = 32) -> None:
    """A few short greedy requests to a fresh server before any timed arm: its first requests pay
    one-time costs that would otherwise fall on whichever arm runs first."""
    body = json.dumps({"model": model, "prompt": "Hello", "max_tokens": tokens, "temperature": 0}).encode()
    for _ in range(n):
        req = urllib.request.Request(url + "/v1/completions", data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=300) as resp:
            resp.read()


def arm_order(arms, block: int, fixed: bool = False) -> list:
    """Block ``block``'s row of a cyclic Latin square over the arms: ``arms`` rotated by ``block`` (``fixed``:
    as given). Over any ``len(arms)`` consecutive blocks every arm runs once in every position, so an order
    effect (a fresh server, drift within a block) falls on every arm alike and cancels in the mean; the
    callers record each arm's ``position``. (Before 2026-12-08 the order was a shuffle by the seed, which
    can leave an arm in one position in every block.)"""
    order = list(arms)
    if not fixed and order:
        k = block % len(order)
        order = order[k:] + order[:k]
    return order


def stamp(out: dict, started: str, path: str | None = None) -> dict:
    """``out`` with this invocation's record under ``runs`` (one per invocation of a resumable script,
    kept across invocations): its command line, start, end so far and revision (the record's own
    file, ``path``, not counted as a change to the tree)."""
    from rtlm_cli.formats.store import provenance

    run = {"command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]), "started": started, "ended": now(),
           "provenance": provenance(Path(path) if path else None)}
    runs = out.setdefault("runs", [])
    if runs and runs[-1]["started"] == started:
        runs[-1] = run
    else:
        runs.append(run)
    return out


def write_record(path: str | None, out: dict, started: str) -> None:
    """``out``, stamped (``stamp``), written atomically to ``path`` as JSON (nothing when ``path`` is None):
    a benchmark's raw data, kept beside the table it makes."""
    if path:
        from rtlm_cli.formats.store import atomic_write_json

        atomic_write_json(Path(path), stamp(out, started, path))


def interval95(values: list[float]) -> tuple[float, float]:
    """Mean and the half-width of its 95% t-interval over the draws (nan for one draw)."""
    from scipy import stats

    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, float("nan")
    return mean, stats.t.ppf(0.975, len(values) - 1) * statistics.stdev(values) / len(values) ** 0.5


def markdown_table(header: list[str], rows: list[list], right_from: int = 1) -> str:
    """A Markdown table (columns from ``right_from`` on right-aligned), as docs/ prints them."""
    align = ["---" if i < right_from else "---:" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"
