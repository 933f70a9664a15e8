"""Benchmark: the TTFT the hop through `rtlm gateway` adds to each request, paired (run alone on the
cores: it times things).

The same scripted requests go to a deterministic fake backend (the tests' fake OpenAI server: an
answer's length is a hash of its prompt, a token every --ms-per-token) twice each: once straight to
it and once through `rtlm gateway` in front of it, back to back, which leg goes first alternating
by request. A request's added TTFT is its TTFT through the gateway minus its own TTFT direct (time
from the send to the first streamed `data:` line). Closed loop, --clients pairs in flight, so both
legs of a pair meet the same load. The gateway (policy rtlm, the shipped predictor: a prediction
per request; --inflight above the clients, so its queue holds nothing back) runs pinned to core 0;
this script and the fake server on core 1.

Reported per pacing: the added TTFT's median, p90 and p99 over requests with 95% bootstrap
intervals (scipy), its mean with a 95% t-interval, and the gateway's own prediction time (its
records). Targets (issue 41's, read per request): added TTFT p50 <= 1 ms plus the prediction's
p50; p99 <= 10 ms.

    .venv/bin/python scripts/bench/gateway_paired.py --json docs/bench/gateway-paired.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import exit_on_sigterm, fake_server, gateway, interval95, markdown_table, now, stop, write_record  # noqa: E402


async def first_token_s(session, url: str, prompt: str) -> float:
    """Seconds from the send to the first streamed ``data:`` line; the answer is read to its end."""
    body = {"model": "smollm2", "messages": [{"role": "user", "content": prompt}], "max_tokens": 64, "stream": True}
    t0, first = time.perf_counter(), None
    async with session.post(url + "/v1/chat/completions", json=body) as r:
        if r.status != 200:
            raise RuntimeError(f"HTTP {r.status}: {(await r.read())[:200]!r}")
        async for line in r.content:
            if first is None and line.startswith(b"data:"):
                first = time.perf_counter()
    if first is None:
        raise RuntimeError("a stream ended without a data line")
    return first - t0


async def pairs(direct: str, through: str, prompts: list[str], clients: int) -> list[dict]:
    """Each prompt sent direct and through the gateway, back to back (order alternating by index)."""
    import aiohttp

    out, todo = [], iter(range(len(prompts)))

    async def client(session):
        for i in todo:
            legs = [("direct", direct), ("gateway", through)]
            if i % 2:
                legs.reverse()
            t = {name: await first_token_s(session, url, prompts[i]) for name, url in legs}
            out.append({"i": i, "first": legs[0][0], "direct_ms": t["direct"] * 1000, "gateway_ms": t["gateway"] * 1000})

    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=60)) as session:
        await asyncio.gather(*(client(session) for _ in range(clients)))
    return sorted(out, key=lambda r: r["i"])


def summary(rows: list[dict]) -> dict:
    """Percentiles of the per-request added TTFT with 95% bootstrap intervals, and the mean's t-interval."""
    from scipy import stats

    added = np.array([r["gateway_ms"] - r["direct_ms"] for r in rows])
    out = {"requests": len(added)}
    for p in (50, 90, 99):
        ci = stats.bootstrap((added,), lambda x, axis: np.percentile(x, p, axis=axis), n_resamples=2000,
                             confidence_level=0.95, method="percentile", random_state=0).confidence_interval
        out[f"p{p}_ms"] = [float(np.percentile(added, p)), float(ci.low), float(ci.high)]
    mean, half = interval95(list(added))
    out["mean_ms"] = [mean, half]
    out["direct_p50_ms"] = float(np.median([r["direct_ms"] for r in rows]))
    out["gateway_p50_ms"] = float(np.median([r["gateway_ms"] for r in rows]))
    out["gateway_slower_share"] = float((added > 0).mean())
    return out


def run(ms_per_token: float, n: int, clients: int, prompts: list[str]) -> dict:
    backend, url = fake_server(1, ms_per_token=ms_per_token)
    run_dir = Path(f"/tmp/rtlm-paired-{os.getpid()}-{ms_per_token:g}")
    gw, gurl = gateway(url, "--inflight", 4 * clients, "--out", run_dir, core=0)
    try:
        asyncio.run(pairs(url, gurl, prompts[:100], clients))  # warm-up: connections, caches, the predictor
        rows = asyncio.run(pairs(url, gurl, prompts[:n], clients))
    finally:
        stop(gw)
        stop(backend)
    from rtlm_cli.formats.run import load_run

    _, df = load_run(run_dir)
    out = {"ms_per_token": ms_per_token, "clients": clients, "summary": summary(rows), "rows": rows,
           "prediction_p50_ms": float(df["prediction_cost_s"].median() * 1000)}
    print(f"{ms_per_token:g} ms a token:", json.dumps(out["summary"]), flush=True)
    return out


def markdown(record: dict) -> str:
    rows = []
    for r in record["pacings"]:
        s = r["summary"]
        ci = lambda k: f"{s[k][0]:.2f} ({s[k][1]:.2f} to {s[k][2]:.2f})"  # noqa: E731
        rows.append([f"a token every {r['ms_per_token']:g} ms", s["requests"], f"{s['direct_p50_ms']:.2f} / {s['gateway_p50_ms']:.2f}",
                     ci("p50_ms"), ci("p90_ms"), ci("p99_ms"), f"{s['mean_ms'][0]:.2f} ± {s['mean_ms'][1]:.2f}",
                     f"{r['prediction_p50_ms']:.2f}"])
    return markdown_table(["pacing (16 pairs in flight)", "requests", "TTFT p50 direct / through, ms",
                           "added TTFT p50, ms (95% interval)", "p90", "p99", "mean ± 95%, ms", "prediction p50, ms"], rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=1000, help="pairs per pacing (default 1000)")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--ms-per-token", default="10,2", help="pacings, comma-separated (default 10,2)")
    ap.add_argument("--json", help="write the raw record here")
    ap.add_argument("--markdown", nargs="+", metavar="RECORD", help="only print docs/benchmarks.md's table from --json records")
    args = ap.parse_args()
    if args.markdown:
        for path in args.markdown:
            print(markdown(json.loads(Path(path).read_text())), end="")
        return
    exit_on_sigterm()  # what it started (servers, gateways, the load generator) stops with it
    from rtlm_cli.formats.profile import load_profile

    _, prof = load_profile("reference")
    prompts = list(prof["prompt"].drop_duplicates())[: args.requests]
    started = now()
    os.sched_setaffinity(0, {1})  # the load generator: core 1, beside the fake server
    record = {"setup": {"requests": args.requests, "clients": args.clients, "backend": "rtlm_cli.testing.fake_openai",
                        "gateway": "policy rtlm, the shipped reference predictor, pinned to core 0"}, "pacings": []}
    for ms in (float(x) for x in args.ms_per_token.split(",")):
        record["pacings"].append(run(ms, args.requests, args.clients, prompts))
        write_record(args.json, record, started)
    print(markdown(record), end="")


if __name__ == "__main__":
    main()
