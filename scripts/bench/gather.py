"""How long `rtlm gateway` should gather a burst (`--gather-ms`), measured: the smallest window that
keeps a burst ordered whole, and what the window adds to a lone request's wait at low load.

A gateway process (the fast text+prompt predictor trained on the shipped reference profile, policy
sjf-pred, K = 8) in front of the tests' fake OpenAI server (5 ms a token), and a client that sends a
burst of 32 chat requests at once (aiohttp, as `vllm bench serve --request-rate inf` does;
max_tokens 256, above every prediction, which the gateway caps by it). For
each window W: of the first K requests the backend started, how many are among the policy's first
K of the whole burst (the order the gateway would give if it saw the burst whole; 8/8 = kept
whole), over 5 bursts; the burst's arrival spread at the gateway (first to last, from its records);
and, at low load (one request at a time), the median time a request waited in rtlm's queue.

    .venv/bin/python scripts/bench/gather.py --json docs/bench/gather.json

Run it alone on the cores (it times things).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import exit_on_sigterm, markdown_table  # noqa: E402
from rtlm_cli.testing import FakeOpenAI  # noqa: E402 (the fake server, as the harness's backend)

from rtlm_cli.engines.vllm import free_port  # noqa: E402
from rtlm_cli.formats.run import load_run  # noqa: E402
from rtlm_cli.formats.store import provenance  # noqa: E402

K = 8
WINDOWS = (0, 1, 2, 5, 10, 20, 50)


def prompts_of_reference(n: int, seed: int) -> list[str]:
    from rtlm_cli.formats.profile import load_profile

    _, df = load_profile("reference")
    return df.sample(n, random_state=seed)["prompt"].tolist()


def start_gateway(server_url: str, predictor: str, gather_ms: float, out: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cmd = [sys.executable, "-m", "rtlm_cli.cli", "gateway", "--url", server_url, "--port", str(port), "--inflight",
           str(K), "--policy", "sjf-pred", "--predictor", predictor, "--gather-ms", str(gather_ms), "--out", str(out),
           "--max-queue", "4096"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            urllib.request.urlopen(url + "/health", timeout=1)
            return proc, url
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("the gateway did not start")


async def send_all(url: str, prompts: list[str], at_once: bool) -> None:
    import aiohttp

    async with aiohttp.ClientSession() as s:
        async def one(p):
            body = {"model": "smollm2", "messages": [{"role": "user", "content": p}], "max_tokens": 256}
            async with s.post(url + "/v1/chat/completions", json=body) as r:
                await r.read()
                assert r.status == 200, r.status

        if at_once:
            await asyncio.gather(*(one(p) for p in prompts))
        else:
            for p in prompts:
                await one(p)


def markdown(record: dict) -> str:
    """docs/benchmarks.md's gathering table from a --json record."""
    k, rows = record["k"], []
    for r in record["rows"]:
        kept = r["first_k_kept"]
        rows.append([f"{r['gather_ms']:g}", f"{r['first_k_kept_mean']:g} / {k} "
                     + ("in every burst" if set(kept) == {k} else f"({', '.join(map(str, kept))})"),
                     f"{r['burst_spread_ms_median']:.1f} ms", f"{r['lone_wait_ms_median']:.2f} ms"])
    return markdown_table(["`--gather-ms`", f"of the first {k} sends, among the policy's first {k} of the whole burst",
                           "burst's spread at the gateway (median)", "a lone request's wait in rtlm's queue (median)"],
                          rows, right_from=0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bursts", type=int, default=5)
    ap.add_argument("--burst-size", type=int, default=32)
    ap.add_argument("--lone", type=int, default=30, help="requests sent one at a time (low load)")
    ap.add_argument("--windows", type=lambda v: [float(x) for x in v.split(",")], default=list(WINDOWS))
    ap.add_argument("--json")
    ap.add_argument("--markdown", metavar="RECORD", help="only print docs/benchmarks.md's table from a --json record")
    args = ap.parse_args()
    exit_on_sigterm()  # what it started (servers, gateways, the load generator) stops with it
    if args.markdown:
        print(markdown(json.loads(Path(args.markdown).read_text())), end="")
        return
    from rtlm_cli.predict.model import Predictor

    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    tmp = Path(tempfile.mkdtemp(prefix="rtlm-gather-"))
    predictor = tmp / "pred"
    subprocess.run([sys.executable, "-m", "rtlm_cli.cli", "train-predictor", "reference", "--out", str(predictor),
                    "--features", "text,prompt", "--no-ablation", "--cross-fit", "0"], check=True, cwd=ROOT,
                   stdout=subprocess.DEVNULL)
    pred = Predictor.load(predictor)
    rows = []
    for w in args.windows:
        kept, spreads, waits = [], [], []
        for b in range(args.bursts):
            server = FakeOpenAI(ms_per_token=5)
            proc, url = start_gateway(server.url, str(predictor), w, tmp / f"w{w}-b{b}")
            try:
                prompts = prompts_of_reference(args.burst_size, seed=b)
                asyncio.run(send_all(url, prompts, at_once=True))
                predicted = pred.predict(prompts)["predicted"]
                first_k = {prompts[i] for i in sorted(range(len(prompts)), key=lambda i: predicted[i])[:K]}
                kept.append(sum(p in first_k for p in server.started[:K]))
                if b == 0:
                    asyncio.run(send_all(url, prompts_of_reference(args.lone, seed=99), at_once=False))
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.wait(60)
                server.close()
            _, df = load_run(tmp / f"w{w}-b{b}")
            burst = df.iloc[:args.burst_size]
            spreads.append(float(burst["arrival_s"].max() - burst["arrival_s"].min()))
            if b == 0:
                lone = df.iloc[args.burst_size:]
                waits = (lone["start_s"] - lone["arrival_s"]).tolist()
        row = {"gather_ms": w, "first_k_kept_mean": statistics.fmean(kept), "first_k_kept": kept,
               "burst_spread_ms_median": 1e3 * statistics.median(spreads),
               "lone_wait_ms_median": 1e3 * statistics.median(waits)}
        rows.append(row)
        print(f"W {w:>3} ms: first {K} sends among the policy's first {K}: {row['first_k_kept_mean']:.1f}/{K} "
              f"({kept}); burst spread {row['burst_spread_ms_median']:.1f} ms; lone request waits "
              f"{row['lone_wait_ms_median']:.2f} ms (median)", flush=True)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({
            "command": " ".join(["scripts/bench/gather.py", *sys.argv[1:]]), "started": started,
            "ended": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": platform.node(),
            "cpus": os.cpu_count(), "k": K, "rows": rows, **provenance()}, indent=1))


if __name__ == "__main__":
    main()
