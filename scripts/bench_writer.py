"""What the run writer's flushes cost a real replay: 2,000 requests through the tests' fake
OpenAI server (direct dispatch, a burst, 1 ms a token), written every 2 s (the default) against
written once at the end (a flush interval longer than the run), alternating, 3 times each. Target:
no more than 2% slower.

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
sys.path.insert(0, str(ROOT / "tests"))

from fake_openai import FakeOpenAI  # noqa: E402 (the tests' fake server)

from rtlm_cli.formats.store import provenance  # noqa: E402
from rtlm_cli.serve.config import ReplayConfig  # noqa: E402
from rtlm_cli.serve.job import replay  # noqa: E402
from rtlm_cli.engines import EngineConfig  # noqa: E402
from rtlm_cli.engines.openai import ClientSettings  # noqa: E402


def one(url: str, out: Path, flush_s: float, n: int) -> float:
    cfg = ReplayConfig.of(str(out), profile="reference-64", policy="fcfs", arrivals="burst", num_requests=n,
                          engine=EngineConfig(name="openai", client=ClientSettings(urls=(url,))), flush_s=flush_s)
    meta = replay(cfg, console=None, dashboard=False)
    assert meta["summary"]["completed"] == n, meta["summary"]
    return meta["wall_s"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-n", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json")
    args = ap.parse_args()
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    server = FakeOpenAI(ms_per_token=1, max_running=64)
    tmp = Path(tempfile.mkdtemp(prefix="rtlm-writer-"))
    walls: dict[str, list[float]] = {"every 2 s": [], "at the end": []}
    try:
        for rep in range(args.repeats):
            for name, flush_s in (("every 2 s", 2.0), ("at the end", 1e9)):
                walls[name].append(one(server.url, tmp / f"{rep}-{flush_s:g}", flush_s, args.n))
                print(f"{name}: {walls[name][-1]:.2f} s", flush=True)
    finally:
        server.close()
    ratio = statistics.median(walls["every 2 s"]) / statistics.median(walls["at the end"])
    print(f"median wall: flushed every 2 s / written at the end = {ratio:.3f} (target <= 1.02)")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "command": " ".join(["scripts/bench_writer.py", *sys.argv[1:]]), "started": started,
            "ended": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": platform.node(),
            "cpus": os.cpu_count(), "requests": args.n, "wall_s": walls, "ratio": ratio, **provenance()}, indent=1))


if __name__ == "__main__":
    main()
