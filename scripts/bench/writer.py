"""What the run writer's flushes cost a real replay: 2,000 requests through the tests' fake
OpenAI server (direct dispatch, a burst, 1 ms a token), written every 2 s (the default) against
written once at the end (a flush interval longer than the run), in pairs whose order alternates.
The fake server runs in a process of its own pinned to core 1 and the replay is pinned to core 0, so
neither takes the other's core. Two figures: the median of the pairs' ratios (noisy: identical runs spread
~15% here), and the time spent inside the flushes, timed in the replay's own process, as a share of
the flushing runs' wall time (a flush blocks the event loop, so this is what it can cost at most).
Target: no more than 2% slower.

    .venv/bin/python scripts/bench/writer.py --json docs/bench/writer.json

--growing 10000,100000,1000000: a long-lived service's run instead (no server): a writer holding N
requests' rows, the time one flush takes when it recomputes meta.json's summary over all of them, how
often the writer then recomputes it (at most 2% of its time, past 10,000 rows) and the memory the
rows take in the writer (tracemalloc).

    .venv/bin/python scripts/bench/writer.py --growing 10000,100000,1000000 --json /tmp/growing.json

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

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import exit_on_sigterm, fake_server, markdown_table, now, stop, write_record  # noqa: E402

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


def markdown(record: dict) -> str:
    """docs/benchmarks.md's table from a --json record: each writer's wall times and their median."""
    label = {"every 2 s": "flushed every 2 s", "at the end": "at the end"}
    rows = [[label.get(name, name), ", ".join(f"{w:.2f}" for w in walls), f"{statistics.median(walls):.2f}"]
            for name, walls in record["wall_s"].items()]
    return markdown_table(["writer", f"wall s, {len(next(iter(record['wall_s'].values())))} runs", "median"], rows,
                          right_from=2)


def growing(sizes: list[int]) -> list[dict]:
    """Per size N: one flush's time with the summary recomputed over N rows, the interval the writer
    keeps between recomputations at that cost, and the rows' memory in the writer (beside what the same
    rows take as lists of Python objects, as the writer kept them before 2026-12-07)."""
    import math
    import tracemalloc

    from rtlm_cli.formats import run as runfmt

    column = {"rid": lambda i: f"req-{i:08d}", "status": lambda i: "finished", "arrival_s": lambda i: i * 0.1,
              "start_s": lambda i: i * 0.1 + 0.01, "first_token_s": lambda i: i * 0.1 + 0.2,
              "last_token_s": lambda i: i * 0.1 + 5.0, "finish_s": lambda i: i * 0.1 + 5.0,
              "deadline_s": lambda i: math.nan, "output_tokens": lambda i: 100 + i % 150, "batch_size": lambda i: 0,
              "in_flight": lambda i: 8, "prediction_cost_s": lambda i: 0.0005 + i * 1e-9}

    def held(fill) -> int:
        tracemalloc.start()
        kept = fill()
        size, _ = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        del kept
        return size

    out = []
    for n in sizes:
        writer = runfmt.RunWriter(Path(tempfile.mkdtemp(prefix="rtlm-growing-")) / "run", {"mode": "real"}, flush_s=1e9)

        def fill():  # as the flushes would have left them
            for c, values in writer.summary_rows.items():
                values.extend(column[c](i) if isinstance(values, list) else float(column[c](i)) for i in range(n))
            return writer.summary_rows

        now_bytes = held(fill)
        before_bytes = held(lambda: {c: [f(i) for i in range(n)] for c, f in column.items()})
        times = []
        for _ in range(3):
            writer.summarized_at = -math.inf  # force the recomputation
            t0 = time.perf_counter()
            writer.flush()
            times.append(time.perf_counter() - t0)
        cost = min(times)
        every = max(2.0, cost / runfmt.SUMMARY_COST_SHARE) if n >= runfmt.SUMMARY_EVERY_FLUSH else 2.0
        out.append({"rows": n, "flush_s_with_summary": cost, "share_at_2s_flushes_unthrottled": cost / 2.0,
                    "recomputed_every_s": every, "bytes_per_row": now_bytes / n,
                    "bytes_per_row_as_lists": before_bytes / n})
        print(f"{n:>9,} rows: a flush with the summary {cost * 1000:.1f} ms ({cost / 2.0:.1%} of a 2 s interval if "
              f"done at every flush); recomputed every {every:.1f} s; the rows in the writer {now_bytes / n:.0f} B "
              f"each ({before_bytes / n:.0f} as lists of objects)", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-n", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--json")
    ap.add_argument("--markdown", metavar="RECORD", help="only print docs/benchmarks.md's table from a --json record")
    ap.add_argument("--growing", type=lambda v: [int(x) for x in v.split(",")],
                    help="a growing run of these sizes instead (no server): the summary's cost and the rows' memory")
    args = ap.parse_args()
    exit_on_sigterm()  # what it started (servers, gateways, the load generator) stops with it
    if args.markdown:
        print(markdown(json.loads(Path(args.markdown).read_text())), end="")
        return
    if args.growing:
        started = now()
        write_record(args.json, {"growing": growing(args.growing)}, started)
        return
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
            "command": " ".join(["scripts/bench/writer.py", *sys.argv[1:]]), "started": started,
            "ended": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": platform.node(),
            "cpus": os.cpu_count(), "requests": args.n, "wall_s": walls, "pair_ratios": pairs, "ratio": ratio,
            "flushes": flushing, "flush_share_of_wall": share,
            **provenance()}, indent=1))


if __name__ == "__main__":
    main()
