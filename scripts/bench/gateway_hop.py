"""Benchmark: what the hop through `rtlm gateway` costs (run alone on the cores: it times things).

The gateway runs pinned to core 0 (taskset), the load generator (this script) and the tests' fake
OpenAI server (answers of 3-40 tokens, streamed at once) pinned to core 1. Closed loop: --clients
streamed requests in flight at all times, each timed from its send to its first token (TTFT) and to
its end, in two phases:

  saturated    the fake server answers at once (--requests): the gateway's core is the bottleneck, so
               this gives its throughput, and its TTFT is mostly the wait for that core (Little's law)
  paced        the fake server streams a token every --ms-per-token (--requests / 3; 10 ms, a GPU engine's
               pace at batch 16): the gateway's core is far from full, so the added TTFT is what the hop
               itself costs a request

  harness      the load generator straight to the fake server: what the harness alone reaches
               (it must reach at least twice the target rate for the gateway's figure to mean anything)
  gateway      the same through `rtlm gateway` (policy rtlm, the shipped predictor: prediction on;
               --inflight above the clients, so rtlm's queue never holds a request back)
  predictor    the shipped predictor alone, one prompt at a time, as the gateway calls it
  memory       the gateway's resident memory per request waiting in its queue (K = 1 in front of a
               slow fake server, --waiting requests held)

Targets: >= 300 requests/s through the gateway with no error (saturated); added TTFT p50 <= 1 ms plus
the prediction's own p50, p99 <= 10 ms (paced, at --clients 16); the predictor alone <= 0.3 ms a request.

    .venv/bin/python scripts/bench/gateway_hop.py --json docs/bench/gateway-hop.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import exit_on_sigterm, fake_server, gateway, markdown_table, now, stop  # noqa: E402


async def load(url: str, clients: int, total: int, prompts: list[str]) -> dict:
    """Closed loop: ``clients`` streamed chat completions in flight until ``total`` are done."""
    import aiohttp

    ttft, e2e, errors, sent = [], [], 0, iter(range(total))

    async def client(session):
        nonlocal errors
        for i in sent:
            body = {"model": "smollm2", "messages": [{"role": "user", "content": prompts[i % len(prompts)]}],
                    "max_tokens": 64, "stream": True}
            t0, first = time.perf_counter(), None
            try:
                async with session.post(url + "/v1/chat/completions", json=body) as r:
                    if r.status != 200:
                        errors += 1
                        await r.read()
                        continue
                    async for line in r.content:
                        if first is None and line.startswith(b"data:"):
                            first = time.perf_counter()
            except aiohttp.ClientError:
                errors += 1
                continue
            ttft.append(first - t0)
            e2e.append(time.perf_counter() - t0)

    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=60)) as session:
        t0 = time.perf_counter()
        await asyncio.gather(*(client(session) for _ in range(clients)))
        wall = time.perf_counter() - t0
    q = lambda v, p: float(np.percentile(v, p) * 1000) if v else float("nan")  # noqa: E731
    return {"requests": total, "clients": clients, "errors": errors, "wall_s": wall, "rps": len(e2e) / wall,
            "ttft_p50_ms": q(ttft, 50), "ttft_p99_ms": q(ttft, 99), "e2e_p50_ms": q(e2e, 50), "e2e_p99_ms": q(e2e, 99)}


def predictor_alone(prompts: list[str]) -> dict:
    """The shipped predictor, one prompt at a time, as the gateway's admission calls it."""
    from rtlm_cli.serve.admit import Admission
    from rtlm_cli.serve.admit import load_predictor
    from rtlm_cli.formats.timing import load_timing_table
    from rtlm_cli.serve.costmodel import CostModel

    admit = Admission(load_predictor("reference"), CostModel.from_table(load_timing_table("vllm-cpu", missing_ok=False)))
    costs = [admit(i, 0.0, p, {}, {}).prediction_cost_s for i, p in enumerate(prompts)]
    return {"prompts": len(costs), "p50_ms": statistics.median(costs) * 1000, "mean_ms": statistics.fmean(costs) * 1000,
            "p99_ms": float(np.percentile(costs, 99) * 1000)}


def memory(waiting: int) -> dict:
    """RSS of a gateway holding ``waiting`` requests in its queue (K = 1, a fake server that holds one)."""
    import psutil

    backend, furl = fake_server(1, ms_per_token=1000.0, max_running=1)
    gw, gurl = gateway(furl, "--inflight", 1, "--max-queue", waiting + 10, core=0)
    try:
        proc = psutil.Process(gw.pid)
        proc = next((c for c in proc.children(recursive=True) if "rtlm_cli" in " ".join(c.cmdline())), proc)
        before = proc.memory_info().rss

        async def hold():
            import aiohttp

            conn = aiohttp.TCPConnector(limit=0)
            async with aiohttp.ClientSession(connector=conn) as s:
                body = {"model": "smollm2", "messages": [{"role": "user", "content": "a question of some words " * 8}],
                        "max_tokens": 64, "stream": True}
                async def one():
                    async with s.post(gurl + "/v1/chat/completions", json=body) as r:
                        await r.read()

                tasks = [asyncio.create_task(one()) for _ in range(waiting)]
                for _ in range(300):
                    await asyncio.sleep(0.1)
                    text = await asyncio.to_thread(lambda: urllib.request.urlopen(gurl + "/metrics").read().decode())
                    queued = next(float(x.split()[-1]) for x in text.splitlines() if x.startswith("rtlm:num_requests_waiting "))
                    if queued >= waiting - 1:
                        break
                after = proc.memory_info().rss
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                return queued, after

        queued, after = asyncio.run(hold())
        return {"waiting": int(queued), "rss_before_mib": before / 2**20, "rss_after_mib": after / 2**20,
                "kib_per_waiting_request": (after - before) / max(queued, 1) / 1024}
    finally:
        stop(gw)
        stop(backend)


def hop(phase: str, ms_per_token: float, total: int, clients: int, prompts: list[str]) -> dict:
    """The harness straight to a fake server streaming a token every ``ms_per_token``, then the same
    through a gateway (pinned to core 0) in front of it."""
    out = {"ms_per_token": ms_per_token, "requests": total}
    backend, url = fake_server(1, ms_per_token=ms_per_token)
    try:
        asyncio.run(load(url, clients, 200, prompts))  # warm-up
        out["harness"] = asyncio.run(load(url, clients, total, prompts))
        print(f"{phase}, harness alone:", out["harness"], flush=True)
        run_dir = Path(f"/tmp/rtlm-hop-{os.getpid()}-{phase}")
        gw, gurl = gateway(url, "--inflight", 4 * clients, "--out", run_dir, core=0)
        try:
            asyncio.run(load(gurl, clients, 200, prompts))  # warm-up
            out["gateway"] = asyncio.run(load(gurl, clients, total, prompts))
        finally:
            stop(gw)
        from rtlm_cli.formats.run import load_run

        _, df = load_run(run_dir)
        out["gateway"]["prediction_p50_ms"] = float(df["prediction_cost_s"].median() * 1000)
        print(f"{phase}, through the gateway:", out["gateway"], flush=True)
    finally:
        stop(backend)
    return out


def markdown(records: list[dict]) -> str:
    """docs/benchmarks.md's hop tables from --json records: per record and phase, the harness alone and
    through the gateway (req/s, TTFT p50 / p99), what the gateway adds, the prediction's p50 inside it;
    then per record the fast predictor alone and the memory per waiting request."""
    hop_rows, alone_rows = [], []
    for r in records:
        label = f"{r['started'][:16].replace('T', ' ')}"
        for phase in ("saturated", "paced"):
            ph = r[phase]
            h, g = ph["harness"], ph["gateway"]
            what = ("answers at once" if not ph["ms_per_token"] else f"a token every {ph['ms_per_token']:g} ms")
            hop_rows.append([label, f"{phase} ({what}, {ph['requests']:,} requests)",
                             f"{h['rps']:,.0f}, {h['ttft_p50_ms']:.1f} / {h['ttft_p99_ms']:.1f} ms",
                             f"{g['rps']:,.0f}, {g['ttft_p50_ms']:.1f} / {g['ttft_p99_ms']:.1f} ms"
                             + (f", {g['errors']} errors" if g["errors"] else ""),
                             f"{ph['added_ttft_p50_ms']:.1f} / {ph['added_ttft_p99_ms']:.1f} ms",
                             f"{g['prediction_p50_ms']:.2f} ms"])
        m = r["memory"]
        alone_rows.append([label, f"{r['predictor']['p50_ms']:.2f} / {r['predictor']['p99_ms']:.2f} ms",
                           f"{m['kib_per_waiting_request']:.1f} KiB ({m['waiting']:,} waiting: "
                           f"{m['rss_before_mib']:.0f} → {m['rss_after_mib']:.0f} MiB)"])
    return (markdown_table(["run (UTC)", "phase", "harness alone: req/s, TTFT p50 / p99",
                            "through the gateway: req/s, TTFT p50 / p99", "added TTFT p50 / p99",
                            "prediction p50 in the gateway"], hop_rows, right_from=4) + "\n"
            + markdown_table(["run (UTC)", "fast predictor alone, p50 / p99 a request (500 prompts)",
                              "memory per waiting request"], alone_rows, right_from=1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--waiting", type=int, default=1000)
    ap.add_argument("--ms-per-token", type=float, default=10.0,
                    help="the paced phase's fake server (10: a GPU engine's pace at batch 16; vLLM-CPU's is 30-100)")
    ap.add_argument("--json")
    ap.add_argument("--markdown", nargs="+", metavar="RECORD", help="only print docs/benchmarks.md's tables from --json records")
    args = ap.parse_args()
    exit_on_sigterm()  # what it started (servers, gateways, the load generator) stops with it
    if args.markdown:
        print(markdown([json.loads(Path(p).read_text()) for p in args.markdown]), end="")
        return
    if len(os.sched_getaffinity(0)) < 2:
        raise SystemExit("needs two cores (the gateway on one, the load generator and the fake server on the other)")
    from rtlm_cli.formats.profile import load_profile
    from rtlm_cli.formats.store import provenance

    prompts = list(load_profile("reference")[1]["prompt"][:500])
    out = {"started": now(), "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
           "setup": vars(args)}
    out["predictor"] = predictor_alone(prompts)
    print("predictor alone:", out["predictor"], flush=True)
    os.sched_setaffinity(0, {1})  # the load generator: core 1, beside the fake server
    # saturated: answers streamed at once, the gateway's core is the bottleneck (its throughput);
    # paced: tokens every --ms-per-token, ~a quarter of its throughput (what the hop adds to a request)
    for phase, ms, total in (("saturated", 0.0, args.requests), ("paced", args.ms_per_token, args.requests // 3)):
        out[phase] = hop(phase, ms, total, args.clients, prompts)
    os.sched_setaffinity(0, {0, 1})
    out["memory"] = memory(args.waiting)
    print("memory:", out["memory"], flush=True)
    sat, paced = out["saturated"], out["paced"]
    for phase in (sat, paced):
        g, h = phase["gateway"], phase["harness"]
        phase["added_ttft_p50_ms"] = g["ttft_p50_ms"] - h["ttft_p50_ms"]
        phase["added_ttft_p99_ms"] = g["ttft_p99_ms"] - h["ttft_p99_ms"]
    g, h = paced["gateway"], paced["harness"]
    out["targets"] = {
        "harness >= 600 req/s": sat["harness"]["rps"] >= 600,
        "gateway >= 300 req/s, no error": sat["gateway"]["rps"] >= 300 and not sat["gateway"]["errors"],
        "added TTFT p50 <= 1 ms + prediction p50 (paced)": paced["added_ttft_p50_ms"] <= 1 + g["prediction_p50_ms"],
        "added TTFT p99 <= 10 ms (paced)": paced["added_ttft_p99_ms"] <= 10,
        "predictor <= 0.3 ms": out["predictor"]["p50_ms"] <= 0.3}
    out["ended"] = now()
    out["provenance"] = provenance()
    print(json.dumps({"saturated": {k: sat[k] for k in ("added_ttft_p50_ms", "added_ttft_p99_ms")},
                      "paced": {k: paced[k] for k in ("added_ttft_p50_ms", "added_ttft_p99_ms")},
                      "targets": out["targets"]}, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1, default=str))


if __name__ == "__main__":
    main()
