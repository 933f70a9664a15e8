"""What the run writer's flushes cost a real replay: 2,000 requests through the tests' fake
OpenAI server (direct dispatch, a burst, 1 ms a token), written every 2 s (the default) against
written once at the end (a flush interval longer than the run), in pairs whose order alternates.
The fake server runs in a process of its own pinned to core 1 and the replay is pinned to core 0, so
neither takes the other's core. Two figures: the median of the pairs' ratios (noisy: identical runs spread
~15% here), and the time spent inside the flushes, timed in the replay's own process, as a share of
the flushing runs' wall time (a flush blocks the event loop, so this is what it can cost at most).
Target: no more than 2% slower.

    .venv/bin/python scripts/bench_writer.py --json docs/bench/writer.json

Run it alone on the cores (it times things).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

from benchlib import fake_server, stop  # noqa: E402

from rtlm_cli.formats.store import provenance  # noqa: E402
from rtlm_cli.serve.config import ReplayConfig  # noqa: E402
from rtlm_cli.serve.job import replay  # noqa: E402
from rtlm_cli.engines import EngineConfig  # noqa: E402
from rtlm_cli.engines.openai import ClientSettings  # noqa: E402


FLUSHES: list[float] = []  # seconds of each RunWriter.flush of the current run (a replay's close writes
                           # its records whole without one)


def timed_flushes() -> None:
    """Time every flush the replay makes (it runs in this process, on the event loop's thread: a
    flush's wall time is time the replay did nothing else)."""
    from rtlm_cli.formats.run import RunWriter

    flush = RunWriter.flush

    def timed(self, complete: bool = False):
        t0 = time.perf_counter()
        try:
            return flush(self, complete)
        finally:
            FLUSHES.append(time.perf_counter() - t0)

    RunWriter.flush = timed


def one(url: str, out: Path, flush_s: float, n: int) -> tuple[float, float, int]:
    """(wall s, seconds in flushes before the run's end, their count) of one replay."""
    FLUSHES.clear()
    cfg = ReplayConfig.of(str(out), profile="reference-64", policy="fcfs", arrivals="burst", num_requests=n,
                          engine=EngineConfig(name="openai", client=ClientSettings(urls=(url,))), flush_s=flush_s)
    meta = replay(cfg, console=None, dashboard=False)
    assert meta["summary"]["completed"] == n, meta["summary"]
    return meta["wall_s"], sum(FLUSHES), len(FLUSHES)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-n", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--json")
    args = ap.parse_args()
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    server, url = fake_server(core=1, ms_per_token=1, max_running=64)
    os.sched_setaffinity(0, {0})
    tmp = Path(tempfile.mkdtemp(prefix="rtlm-writer-"))
    arms = (("every 2 s", 2.0), ("at the end", 1e9))
    walls: dict[str, list[float]] = {name: [] for name, _ in arms}
    flushing = {"seconds": [], "count": []}  # the flushes of the "every 2 s" runs
    timed_flushes()
    try:
        one(url, tmp / "warm-up", 1e9, args.n)
        for rep in range(args.repeats):
            for name, flush_s in arms if rep % 2 == 0 else arms[::-1]:
                wall, spent, count = one(url, tmp / f"{rep}-{flush_s:g}", flush_s, args.n)
                walls[name].append(wall)
                if flush_s < 1e9:
                    flushing["seconds"].append(spent)
                    flushing["count"].append(count)
                print(f"{name}: {wall:.2f} s ({count} flushes, {spent * 1000:.1f} ms in them)", flush=True)
    finally:
        stop(server)
    pairs = [a / b for a, b in zip(walls["every 2 s"], walls["at the end"])]
    ratio = statistics.median(pairs)
    share = sum(flushing["seconds"]) / sum(walls["every 2 s"])
    print(f"flushed every 2 s / written at the end, median of {len(pairs)} pairs = {ratio:.3f} "
          f"(pairs {min(pairs):.3f} to {max(pairs):.3f}; target <= 1.02)")
    print(f"time inside the flushes: {sum(flushing['seconds']) * 1000:.0f} ms of {sum(walls['every 2 s']):.1f} s "
          f"= {share:.2%} of the flushing runs' wall time ({sum(flushing['count'])} flushes)")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "command": " ".join(["scripts/bench_writer.py", *sys.argv[1:]]), "started": started,
            "ended": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": platform.node(),
            "cpus": os.cpu_count(), "requests": args.n, "wall_s": walls, "pair_ratios": pairs, "ratio": ratio,
            "flushes": flushing, "flush_share_of_wall": share,
            **provenance()}, indent=1))


if __name__ == "__main__":
    main()
