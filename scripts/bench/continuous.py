"""Benchmark for the continuous-batching simulator (`--simulate --batching continuous`).

Parts (each can be skipped; time-measuring parts run alone on the cores):
  --speed     100,000 requests through the simulator on one core, timed (target < 10 s).
  --targets   steady state (50,000 requests per point, seeds 0/1/2) on the reference profile, a
              running set of 16, loads 70/90/95% of the continuous-batching capacity, the vllm-cpu
              timing table: fcfs, sjf-pred, rtlm and the oracle, all `--dispatch direct` (the
              engine's priority heap), with the full and the fast predictor's out-of-fold
              predictions (prediction time charged as a delay before each request reaches the
              engine). rtlm's size weight is chosen first on seeds 3/4 (--tune). Prints every row
              beside the oracle's own ratio, the share of the oracle's gain, p99 against FCFS's,
              and goodput at fixed SLOs (--goodput) against FCFS's.
              Targets: gain share >= 70% at 90% and 95%; p99 <= 2x FCFS; goodput >= 1.2x FCFS at 95%.
  --accuracy  the simulator fed realised lengths against real vLLM-CPU runs (rtlm starts vLLM):
              inter-token time and TTFT at fixed concurrency 1-16 (target: within 5%); bursts of 32
              and 64 (mean response time and TTFT within 10%); Poisson at 80% of capacity (within
              10%) and at 90% and 95% (three real runs each: the simulated mean inside their spread);
              a run with a small KV cache (preemption counts).
  --gateway   rtlm's own queue in front of the simulated engine (`--dispatch gateway`), steady state:
              gateway against direct at 90% and 95% of capacity, K = 8, 16, 18 in flight (0.5x, 1x,
              1.1x max_num_seqs); with deadlines (--slo, loose to tight, at --slo-loads) and shedding,
              goodput against FCFS's (--slo-runs: which runs); two heterogeneous backends (the vllm-cpu table and the shipped H200 table) at
              --het-loads of their combined capacity: offloading against none and against
              round-robin placement, rtlm's order and FCFS's; the real bursts of bench/engines.py,
              simulated (direct against gateway).
              Targets: gateway >= 70% of the oracle's gain at 95% and at least what direct takes, p99
              <= 2x FCFS; with deadlines and shedding, goodput >= 1.2x FCFS's.

Usage: .venv/bin/python scripts/bench/continuous.py --speed --targets --full FULL --fast FAST
       .venv/bin/python scripts/bench/continuous.py --accuracy --fast FAST
       .venv/bin/python scripts/bench/continuous.py --gateway --gateway-parts slo --slo-loads 0.95,1.2 \
           --slo-runs 'rtlm gateway + shed' --requests 10000 --fast reference   (shedding alone, quick)
(FULL: `rtlm train-predictor reference --features text,prompt,prefill --out FULL`; FAST: the default
families, or `reference`, the shipped predictor.) --json FILE writes every number.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from rtlm_cli.engines import EngineConfig
from rtlm_cli.engines.vllm import VLLMSettings
from rtlm_cli.formats.profile import load_profile
from rtlm_cli.formats.run import load_run
from rtlm_cli.formats.timing import load_timing_table
from rtlm_cli.serve.config import ReplayConfig
from rtlm_cli.serve.costmodel import CostModel
from rtlm_cli.serve.decide.policies import make_policy
from rtlm_cli.serve.decide.request import Request
from rtlm_cli.serve.job import replay
from rtlm_cli.serve.sim.continuous import serve_directly
from rtlm_cli.serve.sim.server import ServerLimits, StepCost, capacity_rps

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import exit_on_sigterm, markdown_table, now, write_record  # noqa: E402

TIMING = "vllm-cpu"
WEIGHTS = (32.0, 128.0, 512.0, 2048.0, 8192.0)


def sim(out: Path, policy: str, load: float | None, seed: int, n: int, predictor: str | None, goodput: str,
        slo_override: float | None = None, arrivals: str = "poisson", **extra) -> dict:
    cfg = ReplayConfig.of(str(out), profile="reference", timing=TIMING, predictor=predictor, policy=policy,
                          simulate=True, batching="continuous", overwrite=True, goodput=tuple(goodput.split()),
                          arrivals=arrivals, load=load, num_requests=n, seed=seed, slo_s=slo_override, **extra)
    summary = replay(cfg, console=None, dashboard=False)["summary"]
    if len(extra.get("specs", ())) > 1:  # how many requests each backend served
        _, df = load_run(out)
        summary = {**summary, "per_worker": {str(k): int(v) for k, v in df["backend"].value_counts().items()}}
    return summary


def speed(args, console) -> dict:
    _, df = load_profile("reference")
    cost = CostModel.from_table(load_timing_table(TIMING))
    cap = capacity_rps(cost, ServerLimits(), df["prompt_tokens"], df["output_tokens"])
    rng = np.random.default_rng(0)  # this benchmark's own generator
    pick = rng.integers(0, len(df), 100_000)
    times = np.cumsum(rng.exponential(1 / (0.95 * cap), len(pick)))
    p, o = df["prompt_tokens"].to_numpy(), df["output_tokens"].to_numpy()
    reqs = [Request(rid=i, arrival_s=float(t), prompt_id=str(j), prompt_tokens=int(p[j]), predicted_tokens=float(o[j]),
                    true_tokens=int(o[j]), true_service_s=float(o[j])) for i, (j, t) in enumerate(zip(pick, times))]
    out = {}
    for policy in ("fcfs", "oracle"):
        t0 = time.perf_counter()
        _, engine = serve_directly(reqs, make_policy(policy), cost)
        out[policy] = {"seconds": time.perf_counter() - t0, "steps": engine.steps}
        console.print(f"speed: 100,000 requests, {policy}, load 0.95: {out[policy]['seconds']:.2f} s on one core "
                      f"({engine.steps:,} engine steps; target < 10 s)")
    return out


def targets(args, console, tmp: Path) -> dict:
    predictors = {"full": args.full, "fast": args.fast}
    predictors = {k: v for k, v in predictors.items() if v}
    chosen = {}
    tune_base = {(seed, load): {p: sim(tmp / "tune", p, load, seed, args.requests, None, args.goodput)
                                for p in ("fcfs", "oracle")}
                 for seed in args.tune_seeds for load in (0.9, 0.95)}
    for name, pred in predictors.items():  # rtlm's size weight, on seeds not evaluated
        scores = {}
        for w in WEIGHTS:
            shares = []
            for seed in args.tune_seeds:
                for load in (0.9, 0.95):
                    base = tune_base[(seed, load)]
                    s = sim(tmp / "tune", "rtlm", load, seed, args.requests, pred, args.goodput, size_weight=w)
                    f, o = base["fcfs"]["e2el_s"], base["oracle"]["e2el_s"]
                    ok = s["e2el_s"]["p99"] <= 2 * f["p99"]
                    shares.append((f["mean"] - s["e2el_s"]["mean"]) / (f["mean"] - o["mean"]) if ok else -1.0)
            scores[w] = statistics.fmean(shares)
        chosen[name] = max(scores, key=scores.get)
        console.print(f"tuning ({name} predictor, seeds {args.tune_seeds}): "
                      + ", ".join(f"w={w:g}: {s:.0%}" for w, s in scores.items()) + f" -> {chosen[name]:g}")
    rows = []
    for load in (0.7, 0.9, 0.95):
        for seed in (0, 1, 2):
            # the baselines need no predictor, so they pay for none
            base = {p: sim(tmp / "t", p, load, seed, args.requests, None, args.goodput) for p in ("fcfs", "oracle")}
            runs = {"fcfs": base["fcfs"], "oracle": base["oracle"]}
            for name, pred in predictors.items():
                runs[f"sjf-pred ({name})"] = sim(tmp / "t", "sjf-pred", load, seed, args.requests, pred, args.goodput)
                runs[f"rtlm ({name})"] = sim(tmp / "t", "rtlm", load, seed, args.requests, pred, args.goodput,
                                             size_weight=chosen[name])
            f, o = runs["fcfs"], runs["oracle"]
            for policy, s in runs.items():
                gain = f["e2el_s"]["mean"] - o["e2el_s"]["mean"]
                rows.append({
                    "load": load, "seed": seed, "policy": policy, "mean": s["e2el_s"]["mean"],
                    "vs_fcfs": s["e2el_s"]["mean"] / f["e2el_s"]["mean"],
                    "oracle_vs_fcfs": o["e2el_s"]["mean"] / f["e2el_s"]["mean"],
                    "gain_share": (f["e2el_s"]["mean"] - s["e2el_s"]["mean"]) / gain if gain > 0 else None,
                    "p99_vs_fcfs": s["e2el_s"]["p99"] / f["e2el_s"]["p99"],
                    "goodput_vs_fcfs": s["request_goodput_rps"] / f["request_goodput_rps"],
                    "ttft_p50": s["ttft_s"]["p50"],
                })
            console.print(f"targets: load {load} seed {seed} done")
    t = Table(title=f"continuous batching, steady state ({args.requests:,} requests), max_num_seqs 16, {TIMING} table; "
                    f"goodput SLOs {args.goodput} ms")
    for c in ("load", "seed", "policy", "mean s", "vs fcfs", "oracle vs fcfs", "gain share", "p99 vs fcfs",
              "goodput vs fcfs"):
        t.add_column(c, justify="right")
    for r in rows:
        share = "-" if r["gain_share"] is None or r["policy"] in ("fcfs", "oracle") else f"{r['gain_share']:.0%}"
        t.add_row(f"{r['load']:.2f}", str(r["seed"]), r["policy"], f"{r['mean']:.2f}", f"{r['vs_fcfs']:.3f}",
                  f"{r['oracle_vs_fcfs']:.3f}", share, f"{r['p99_vs_fcfs']:.2f}", f"{r['goodput_vs_fcfs']:.2f}")
    console.print(t)
    return {"chosen_size_weight": chosen, "rows": rows}


def accuracy(args, console, tmp: Path) -> dict:
    from rtlm_cli.engines import open_engine

    cost = CostModel.from_table(load_timing_table(TIMING))
    out: dict = {"concurrency": [], "runs": []}
    eng = EngineConfig(name="vllm", vllm=VLLMSettings(max_num_seqs=16))
    # a fresh server for each part: on these machines something ends vLLM servers that have lived
    # about half an hour (see bench/engines.py)
    parts = set(args.accuracy_parts.split(","))
    if "concurrency" in parts:
        with open_engine(eng, "smollm2", console=console) as engine:
            for c in (1, 2, 4, 8, 16):  # c requests of 256 random tokens, 64 new tokens each, sent together
                outs = engine.timing_streams(c, 256, 63)
                reqs = [Request(rid=i, arrival_s=0.0, prompt_id=str(i), prompt_tokens=256, true_tokens=64) for i in range(c)]
                recs, _ = serve_directly(reqs, make_policy("fcfs"), cost)
                row = {"c": c,
                       # a decode step: the median gap between tokens (real) and the table's step at c running
                       "real_step": statistics.median(x for o in outs for x in o.itl_s),
                       "sim_step": StepCost(cost).decode(c, 256 + 32),
                       # what a request sees: its mean inter-token time, prefill stalls of the others included
                       "real_itl": statistics.median((o.e2e_s - o.ttft_s) / 63 for o in outs),
                       "sim_itl": statistics.median((r["last_token_s"] - r["first_token_s"]) / 63 for r in recs),
                       "real_ttft": statistics.median(o.ttft_s for o in outs),
                       "sim_ttft": statistics.median(r["first_token_s"] for r in recs)}
                out["concurrency"].append(row)
                args.checkpoint("accuracy", out)
                console.print(" ".join(f"{k} real {row['real_' + k] * 1e3:.1f} ms sim {row['sim_' + k] * 1e3:.1f} ms "
                                       f"({row['sim_' + k] / row['real_' + k] - 1:+.1%});" for k in ("step", "itl", "ttft"))
                              + f" concurrency {c}")
    workloads = (("burst 32", "burst", 32, None, 1), ("burst 64", "burst", 64, None, 1),
                 ("poisson 80%", "poisson", args.poisson, 0.8, 1), ("poisson 90%", "poisson", args.poisson, 0.9, 3),
                 ("poisson 95%", "poisson", args.poisson, 0.95, 3))
    for name, arrivals, n, load, repeats in workloads if "runs" in parts else ():
        reals = []
        with open_engine(eng, "smollm2", console=console) as engine:
            for rep in range(repeats):
                rate = None if load is None else load * capacity_rps(cost, ServerLimits(), *_mix())
                cfg = ReplayConfig.of(str(tmp / f"real-{name}-{rep}".replace(" ", "")), profile="reference",
                                      timing=TIMING, predictor=args.fast, policy="fcfs", engine=eng, overwrite=True,
                                      arrivals=arrivals, num_requests=n, seed=7, rate=rate)
                meta = replay(cfg, console=None, dashboard=False, engine=engine)
                reals.append(meta["summary"])
                _, real_df = load_run(cfg.out)
            sim_s = simulate_realised(real_df, cost)
            row = {"name": name, "real_mean": [r["e2el_s"]["mean"] for r in reals], "sim_mean": sim_s["e2el"],
                   "real_ttft": [r["ttft_s"]["mean"] for r in reals], "sim_ttft": sim_s["ttft"]}
            if name == "burst 64":  # saturated: its throughput against the capacity formula on its own requests
                done = real_df[real_df["status"] == "finished"]
                row["real_rps"] = reals[-1]["throughput_rps"]
                row["capacity_rps"] = capacity_rps(cost, ServerLimits(), done["prompt_tokens"], done["output_tokens"])
            out["runs"].append(row)
            args.checkpoint("accuracy", out)
            console.print(f"{name}: real mean {row['real_mean']} s, simulated {row['sim_mean']:.2f} s; TTFT real "
                          f"{row['real_ttft']} s, simulated {row['sim_ttft']:.2f} s")
    if "small-kv" not in parts:
        return out
    # preemption: a KV cache too small for a burst, the same burst simulated with that cache
    small = EngineConfig(name="vllm", vllm=VLLMSettings(max_num_seqs=16, max_model_len=1024, kv_cache_gib=1,
                                                         vllm_args=(f"--num-gpu-blocks-override={args.small_kv_blocks}",)))
    with open_engine(small, "smollm2", console=console) as engine:
        kv_tokens = engine.server.get("kv_cache_tokens") or args.small_kv_blocks * (engine.server.get("block_size") or 128)
        cfg = ReplayConfig.of(str(tmp / "small-kv"), profile="reference", timing=TIMING, predictor=args.fast,
                              policy="fcfs", engine=small, overwrite=True, arrivals="burst", num_requests=32, seed=11)
        meta = replay(cfg, console=None, dashboard=False, engine=engine)
        real_preempted = preemptions(engine.client.settings.urls[0])
        _, real_df = load_run(cfg.out)
    reqs = [Request(rid=int(r.rid), arrival_s=float(r.start_s), prompt_id=r.prompt_id, prompt_tokens=int(r.prompt_tokens),
                    true_tokens=max(int(r.output_tokens), 1)) for r in real_df.itertuples() if r.status == "finished"]
    recs, sim_engine = serve_directly(reqs, make_policy("fcfs"), cost, ServerLimits(kv_cache_tokens=kv_tokens))
    out["small_kv"] = {"kv_cache_tokens": kv_tokens, "real_preemptions": real_preempted,
                       "sim_preemptions": sim_engine.preemptions, "real_mean": meta["summary"]["e2el_s"]["mean"],
                       "sim_mean": statistics.fmean(r["finish_s"] for r in recs if r["status"] == "finished")}
    console.print(f"small KV cache ({kv_tokens} tokens): preemptions real {real_preempted}, simulated "
                  f"{sim_engine.preemptions}; mean response real {out['small_kv']['real_mean']:.1f} s, simulated "
                  f"{out['small_kv']['sim_mean']:.1f} s")
    return out


def preemptions(url: str) -> float | None:
    """vLLM's count of preempted requests (its /metrics)."""
    import urllib.request

    text = urllib.request.urlopen(url + "/metrics", timeout=10).read().decode()
    found = [float(x.rsplit(" ", 1)[1]) for x in text.splitlines() if x.startswith("vllm:num_preemptions_total")]
    return sum(found) if found else None


def gateway(args, console, tmp: Path) -> dict:
    pred = args.full or args.fast
    parts = set(args.gateway_parts.split(","))
    out: dict = {}
    if "main" in parts:
        out["rows"] = gateway_main(args, console, tmp, pred)
    if "slo" in parts:
        out["slo"] = gateway_slo(args, console, tmp, pred)
    if "het" in parts:
        out["heterogeneous"] = gateway_het(args, console, tmp, pred)
    if "bursts" in parts:
        out["bursts"] = gateway_bursts(args, console, tmp)
    return out


def gateway_bursts(args, console, tmp: Path) -> dict:
    """The real-burst benchmark of bench/engines.py (32 at once, draws 0-4, max_num_seqs 8 and 16, the
    fast predictor) in the simulator: does it show the gateway's loss against direct dispatch that the
    real runs show, with no round trip priced?"""
    out: dict = {}
    for seqs in (8, 16):
        runs = (("fcfs", "direct"), ("rtlm", "direct"), ("oracle", "direct"), ("rtlm", "gateway"), ("oracle", "gateway"))
        means = {}
        for policy, dispatch in runs:
            means[f"{policy} {dispatch}"] = statistics.fmean(
                sim(tmp / "b", policy, None, draw, 32, args.fast if policy == "rtlm" else None, args.goodput,
                    arrivals="burst", dispatch=dispatch, max_num_seqs=seqs)["e2el_s"]["mean"]
                for draw in range(5))
        f = means["fcfs direct"]
        share = {k: (f - means[k]) / (f - means["oracle direct"]) for k in ("rtlm direct", "rtlm gateway")}
        out[seqs] = {"means": means, "gain_share_vs_direct_oracle": share}
        console.print(f"simulated bursts, max_num_seqs {seqs}: " + ", ".join(f"{k} {v:.2f} s" for k, v in means.items())
                      + f"; rtlm's share of the oracle's gain: direct {share['rtlm direct']:.0%}, "
                        f"gateway {share['rtlm gateway']:.0%}")
    return out


def gateway_main(args, console, tmp: Path, pred: str) -> list:
    rows = []
    for load in (0.9, 0.95):
        for seed in (0, 1, 2):
            fcfs = sim(tmp / "g", "fcfs", load, seed, args.requests, None, args.goodput)
            base = {"fcfs direct": fcfs,
                    "oracle direct": sim(tmp / "g", "oracle", load, seed, args.requests, None, args.goodput),
                    "rtlm direct": sim(tmp / "g", "rtlm", load, seed, args.requests, pred, args.goodput)}
            for k in (8, 16, 18):
                for policy in ("fcfs", "rtlm", "oracle"):
                    base[f"{policy} gateway K={k}"] = sim(tmp / "g", policy, load, seed, args.requests,
                                                          pred if policy == "rtlm" else None, args.goodput,
                                                          dispatch="gateway", inflight=k)
            f = fcfs["e2el_s"]
            for name, s in base.items():
                k = name.split("K=")[1] if "K=" in name else None
                oracle = base[f"oracle gateway K={k}" if k else "oracle direct"]["e2el_s"]["mean"]
                rows.append({"load": load, "seed": seed, "run": name, "mean": s["e2el_s"]["mean"],
                             "vs_fcfs": s["e2el_s"]["mean"] / f["mean"], "oracle_vs_fcfs": oracle / f["mean"],
                             "gain_share": (f["mean"] - s["e2el_s"]["mean"]) / (f["mean"] - oracle)
                             if f["mean"] > oracle else None,
                             "p99_vs_fcfs": s["e2el_s"]["p99"] / f["p99"]})
            console.print(f"gateway: load {load} seed {seed} done")
    t = Table(title=f"gateway against direct, steady state ({args.requests:,} requests); gain share against the oracle "
                    "in the same dispatch mode")
    for c in ("load", "seed", "run", "mean s", "vs fcfs direct", "oracle vs fcfs", "gain share", "p99 vs fcfs"):
        t.add_column(c, justify="right")
    for r in rows:
        t.add_row(f"{r['load']:.2f}", str(r["seed"]), r["run"], f"{r['mean']:.2f}", f"{r['vs_fcfs']:.3f}",
                  f"{r['oracle_vs_fcfs']:.3f}", "-" if r["gain_share"] is None or "fcfs" in r["run"] or "oracle" in r["run"]
                  else f"{r['gain_share']:.0%}", f"{r['p99_vs_fcfs']:.2f}")
    console.print(t)
    return rows


SLO_RUNS = {"rtlm gateway + shed": {"dispatch": "gateway", "shed": True}, "rtlm gateway": {"dispatch": "gateway"},
            "rtlm direct": {}}


def gateway_slo(args, console, tmp: Path, pred: str) -> list:
    """Deadlines: a fixed SLO on response time (several, from loose to tight), shedding at the gateway,
    at each load of --slo-loads."""
    slo_rows = []
    for load in args.slo_loads:
        for slo in args.slo:
            for seed in (0, 1, 2):
                f = sim(tmp / "s", "fcfs", load, seed, args.requests, None, args.goodput, slo_override=slo)
                for name, extra in SLO_RUNS.items():
                    if name not in args.slo_runs:
                        continue
                    s = sim(tmp / "s", "rtlm", load, seed, args.requests, pred, args.goodput, slo_override=slo, **extra)
                    slo_rows.append({"load": load, "slo_s": slo, "seed": seed, "run": name,
                                     "goodput_vs_fcfs": s["goodput_rps"] / f["goodput_rps"],
                                     "miss": s["deadline_miss_rate"], "fcfs_miss": f["deadline_miss_rate"], "shed": s["shed"]})
    t = Table(title="deadlines at arrival + SLO: goodput (requests/s within deadline) against FCFS direct")
    for c in ("load", "slo s", "seed", "run", "goodput vs fcfs", "miss rate", "fcfs miss rate", "shed"):
        t.add_column(c, justify="right")
    for r in slo_rows:
        t.add_row(f"{r['load']:g}", f"{r['slo_s']:g}", str(r["seed"]), r["run"], f"{r['goodput_vs_fcfs']:.2f}",
                  f"{r['miss']:.1%}", f"{r['fcfs_miss']:.1%}", str(r["shed"]))
    console.print(t)
    return slo_rows


def gateway_het(args, console, tmp: Path, pred: str) -> list:
    """Two heterogeneous backends: this CPU through vLLM and an H200 (transformers), at 70/80/90% of
    their combined capacity; FCFS with first-free placement is the baseline."""
    het = []
    two = {"specs": ("cpu=vllm-cpu", "gpu=h200"), "allow_static_timing": True, "dispatch": "gateway"}
    runs = (("rtlm", "first-free", {}), ("rtlm", "first-free + offload", {"offload": True}),
            ("rtlm", "round-robin", {"placement": "round-robin"}), ("fcfs", "first-free + offload", {"offload": True}))
    for load in args.het_loads:
        for seed in args.het_seeds:
            f = sim(tmp / "h", "fcfs", load, seed, args.requests, None, args.goodput, **two)
            for policy, name, extra in runs:
                s = sim(tmp / "h", policy, load, seed, args.requests, pred if policy == "rtlm" else None, args.goodput,
                        **two, **extra)
                het.append({"load": load, "seed": seed, "policy": policy, "placement": name, "mean": s["e2el_s"]["mean"],
                            "vs_fcfs": s["e2el_s"]["mean"] / f["e2el_s"]["mean"], "p99": s["e2el_s"]["p99"],
                            "fcfs_p99": f["e2el_s"]["p99"], "on_slow": s["per_worker"].get("cpu", 0) / args.requests
                            if "per_worker" in s else None})
            console.print(f"two backends: load {load} seed {seed} done")
    t = Table(title="two backends (vllm-cpu + h200), gateway; load: share of their combined capacity")
    for c in ("load", "seed", "policy", "placement", "mean s", "vs fcfs first-free", "p99 s", "fcfs p99 s", "on the cpu"):
        t.add_column(c, justify="right")
    for r in het:
        t.add_row(f"{r['load']:.2f}", str(r["seed"]), r["policy"], r["placement"], f"{r['mean']:.2f}", f"{r['vs_fcfs']:.3f}",
                  f"{r['p99']:.1f}", f"{r['fcfs_p99']:.1f}", "-" if r["on_slow"] is None else f"{r['on_slow']:.1%}")
    console.print(t)
    return het


def _mix():
    _, df = load_profile("reference")
    return df["prompt_tokens"].to_numpy(), df["output_tokens"].to_numpy()


def simulate_realised(df, cost: CostModel) -> dict:
    """The simulator on a real run's own requests: its send times, prompts and realised lengths."""
    reqs = [Request(rid=int(r.rid), arrival_s=float(r.start_s), prompt_id=r.prompt_id, prompt_tokens=int(r.prompt_tokens),
                    true_tokens=max(int(r.output_tokens), 1)) for r in df.itertuples() if r.status == "finished"]
    recs, _ = serve_directly(reqs, make_policy("fcfs"), cost)
    arrival = {int(r.rid): float(r.arrival_s) for r in df.itertuples()}
    return {"e2el": statistics.fmean(r["finish_s"] - arrival[r["rid"]] for r in recs),
            "ttft": statistics.fmean(r["first_token_s"] - arrival[r["rid"]] for r in recs)}


def _per_seed(rows: list[dict], key: str, fmt: str) -> str:
    """One figure per seed, "a / b / c" in seed order ("-" where it is None)."""
    return " / ".join("-" if r[key] is None else format(r[key], fmt) for r in sorted(rows, key=lambda r: r["seed"]))


def _grouped(rows: list[dict], *keys: str) -> dict:
    """``rows`` grouped by the values of ``keys``, in the order they first appear."""
    groups: dict = {}
    for r in rows:
        groups.setdefault(tuple(r[k] for k in keys), []).append(r)
    return groups


def _table(header: list[str], rows: list[list]) -> str:
    """A Markdown table of a load or deadline (right-aligned), a name (left), then figures (right)."""
    lines = markdown_table(header, rows, right_from=0).split("\n")
    lines[1] = "| ---: | --- |" + " ---: |" * (len(header) - 2)
    return "\n".join(lines)


def _targets_markdown(targets: dict) -> str:
    rows = []
    for (load, policy), rs in _grouped(targets["rows"], "load", "policy").items():
        share = "-" if policy in ("fcfs", "oracle") else _per_seed(rs, "gain_share", ".0%")
        rows.append([f"{load:.2f}", policy, _per_seed(rs, "vs_fcfs", ".3f"), _per_seed(rs, "oracle_vs_fcfs", ".3f"),
                     f"**{share}**" if policy.startswith("rtlm") else share, _per_seed(rs, "p99_vs_fcfs", ".2f"),
                     _per_seed(rs, "goodput_vs_fcfs", ".2f")])
    seeds = " / ".join(str(s) for s in sorted({r["seed"] for r in targets["rows"]}))
    return _table(["load", "policy", f"mean vs FCFS (seeds {seeds})", "oracle vs FCFS", "share of the oracle's gain",
                   "p99 vs FCFS", "goodput vs FCFS"], rows)


def _accuracy_markdown(acc: dict) -> str:
    err = lambda sim, real: f"{sim / real - 1:+.1%}"
    text = ""
    if acc.get("concurrency"):
        rows = [[r["c"], f"{r['real_step'] * 1e3:.1f} / {r['sim_step'] * 1e3:.1f}", err(r["sim_step"], r["real_step"]),
                 f"{r['real_itl'] * 1e3:.1f} / {r['sim_itl'] * 1e3:.1f}", err(r["sim_itl"], r["real_itl"]),
                 f"{r['real_ttft'] * 1e3:.0f} / {r['sim_ttft'] * 1e3:.0f}", err(r["sim_ttft"], r["real_ttft"])]
                for r in acc["concurrency"]]
        text += markdown_table(["running", "decode step: real / simulated ms", "",
                                "mean inter-token time a request sees: real / simulated ms", "",
                                "TTFT: real / simulated ms", ""], rows, right_from=0) + "\n"
    if acc.get("runs"):
        rows = []
        for r in acc["runs"]:
            real, ttft = r["real_mean"], r["real_ttft"]
            if len(real) == 1:
                rows.append([r["name"], f"{real[0]:.2f}", f"{r['sim_mean']:.2f}", err(r["sim_mean"], real[0]),
                             f"{ttft[0]:.2f}", f"{r['sim_ttft']:.2f}", err(r["sim_ttft"], ttft[0])])
                continue
            inside = min(real) <= r["sim_mean"] <= max(real)
            rows.append([f"{r['name']} ({len(real)} real runs, same workload)", " / ".join(f"{x:.2f}" for x in real),
                         f"{r['sim_mean']:.2f}", f"{'inside' if inside else 'outside'} their spread "
                         f"({err(r['sim_mean'], statistics.fmean(real))} of their mean)", " / ".join(f"{x:.2f}" for x in ttft),
                         f"{r['sim_ttft']:.2f}", err(r["sim_ttft"], statistics.fmean(ttft))])
        text += markdown_table(["workload", "real mean response s", "simulated", "error", "real mean TTFT s", "simulated",
                                "error"], rows) + "\n"
    return text


def _gateway_markdown(gw: dict) -> str:
    text = ""
    if gw.get("rows"):
        rows = []
        for (load, run), rs in _grouped(gw["rows"], "load", "run").items():
            policy = run.split()[0]
            share = "-" if policy in ("fcfs", "oracle") else _per_seed(rs, "gain_share", ".0%")
            rows.append([f"{load:.2f}", run, _per_seed(rs, "vs_fcfs", ".3f"), _per_seed(rs, "oracle_vs_fcfs", ".3f"),
                         share, _per_seed(rs, "p99_vs_fcfs", ".2f")])
        seeds = " / ".join(str(s) for s in sorted({r["seed"] for r in gw["rows"]}))
        text += _table(["load", "run", f"mean vs FCFS direct (seeds {seeds})", "its oracle vs FCFS direct",
                       "share of that oracle's gain", "p99 vs FCFS direct"], rows) + "\n"
    if gw.get("slo"):
        slo = [{"load": 0.95, **r} for r in gw["slo"]]  # records before --slo-loads ran at 0.95 alone
        loads = sorted({r["load"] for r in slo})
        rows = [[f"arrival + {s:g} s" if len(loads) == 1 else f"{load:g}, arrival + {s:g} s", run,
                 _per_seed(rs, "goodput_vs_fcfs", ".2f"), _per_seed(rs, "miss", ".1%"),
                 _per_seed(rs, "fcfs_miss", ".1%"), _per_seed(rs, "shed", "d")]
                for (load, s, run), rs in _grouped(slo, "load", "slo_s", "run").items()]
        seeds = " / ".join(str(s) for s in sorted({r["seed"] for r in slo}))
        text += _table(["deadline" if len(loads) == 1 else "load, deadline",
                        f"run (load {loads[0]:g})" if len(loads) == 1 else "run",
                        f"goodput vs FCFS direct (seeds {seeds})", "deadline misses", "FCFS's misses", "shed"], rows) + "\n"
    full, fast = gw.get("heterogeneous"), gw.get("heterogeneous_fast")
    if full and fast:  # the full predictor's run beside the fast one's
        fast_of = _grouped(fast, "load", "policy", "placement")
        rows = []
        for (load, policy, placement), rs in _grouped(full, "load", "policy", "placement").items():
            fs = fast_of[(load, policy, placement)]
            same = "(no predictor)" if policy == "fcfs" else _per_seed(fs, "vs_fcfs", ".3f")
            rows.append([f"{load:g}", f"{policy}, {placement}", _per_seed(rs, "vs_fcfs", ".3f"),
                         f"**{same}**" if (policy, placement) == ("rtlm", "first-free + offload") else same,
                         _per_seed(fs, "p99", ".1f"), _per_seed(fs, "on_slow", ".1%")])
        seeds = " / ".join(str(s) for s in sorted({r["seed"] for r in full}))
        text += _table(["load", "order, placement", f"mean vs FCFS first-free, full predictor (seeds {seeds})",
                       "same, fast predictor", "p99 s (fast)", "share served by the CPU (fast)"], rows) + "\n"
    elif full:  # one predictor's run (e.g. on fresh seeds)
        rows = []
        for (load, policy, placement), rs in _grouped(full, "load", "policy", "placement").items():
            mean = _per_seed(rs, "vs_fcfs", ".3f")
            rows.append([f"{load:g}", f"{policy}, {placement}",
                         f"**{mean}**" if (policy, placement) == ("rtlm", "first-free + offload") else mean,
                         _per_seed(rs, "p99", ".1f"), _per_seed(rs, "fcfs_p99", ".1f"), _per_seed(rs, "on_slow", ".1%")])
        seeds = " / ".join(str(s) for s in sorted({r["seed"] for r in full}))
        text += _table(["load", "order, placement", f"mean vs FCFS first-free (seeds {seeds})", "p99 s",
                       "FCFS first-free's p99 s", "share served by the CPU"], rows) + "\n"
    return text


def markdown(record: dict) -> str:
    """docs/benchmarks.md's tables from a --json record: the steady-state targets, the simulator
    against real vLLM-CPU, the gateway in front of the simulated engine (K, deadlines, two backends)."""
    text = _targets_markdown(record["targets"]) + "\n" if "targets" in record else ""
    if "accuracy" in record:
        text += _accuracy_markdown(record["accuracy"])
    if "gateway" in record:
        text += _gateway_markdown(record["gateway"])
    return text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--speed", action="store_true")
    ap.add_argument("--targets", action="store_true")
    ap.add_argument("--accuracy", action="store_true")
    ap.add_argument("--gateway", action="store_true")
    ap.add_argument("--slo", type=lambda v: [float(x) for x in v.split(",")], default=[60.0, 30.0, 20.0],
                    help="--gateway's deadlines: seconds after arrival (comma-separated)")
    ap.add_argument("--slo-loads", type=lambda v: [float(x) for x in v.split(",")], default=[0.95],
                    help="the loads of the deadlines part (a share of the engine's capacity)")
    ap.add_argument("--slo-runs", type=lambda v: v.split(","), default=list(SLO_RUNS),
                    help=f"the deadlines part's runs, beside FCFS direct (comma-separated; default: {', '.join(SLO_RUNS)})")
    ap.add_argument("--gateway-parts", default="main,slo,het,bursts",
                    help="which parts of --gateway to run (comma-separated)")
    ap.add_argument("--het-loads", type=lambda v: [float(x) for x in v.split(",")], default=[0.7, 0.8, 0.9],
                    help="--gateway's two-backend part: loads, shares of the backends' combined capacity")
    ap.add_argument("--het-seeds", type=lambda v: [int(x) for x in v.split(",")], default=[5, 6, 7],
                    help="--gateway's two-backend part: workload seeds (the offloading rule was chosen on seeds 0-1: "
                         "report it on others)")
    ap.add_argument("--full")
    ap.add_argument("--fast")
    ap.add_argument("--requests", type=int, default=50_000)
    ap.add_argument("--tune-seeds", type=lambda s: [int(x) for x in s.split(",")], default=[3, 4])
    ap.add_argument("--goodput", default="ttft:5000 tpot:150")
    ap.add_argument("--poisson", type=int, default=120)
    ap.add_argument("--small-kv-blocks", type=int, default=24, help="the small-KV run's cache, in vLLM blocks")
    ap.add_argument("--accuracy-parts", default="concurrency,runs,small-kv",
                    help="which parts of --accuracy to run (comma-separated)")
    ap.add_argument("--json")
    ap.add_argument("--markdown", metavar="RECORD", help="only print docs/benchmarks.md's tables from a --json record")
    args = ap.parse_args()
    exit_on_sigterm()  # what it started (servers, gateways, the load generator) stops with it
    if args.markdown:
        import json

        print(markdown(json.loads(Path(args.markdown).read_text())), end="")
        return
    if unknown := [r for r in args.slo_runs if r not in SLO_RUNS]:
        ap.error(f"--slo-runs: unknown run {unknown[0]!r}; choose from {', '.join(map(repr, SLO_RUNS))}")
    if (args.targets or args.accuracy or args.gateway) and not (args.full or args.fast):
        ap.error("--targets, --accuracy and --gateway need --full and/or --fast predictors")
    console = Console(stderr=True, width=160)
    out: dict = {}
    started = now()

    def checkpoint(part: str, data: dict) -> None:  # a long part's numbers so far survive an interruption
        out[part] = data
        if args.json:
            write_record(args.json, out, started)

    args.checkpoint = checkpoint
    with tempfile.TemporaryDirectory() as tmp:
        for part, fn in (("speed", speed), ("targets", targets), ("gateway", gateway), ("accuracy", accuracy)):
            if getattr(args, part):
                out[part] = fn(args, console) if part == "speed" else fn(args, console, Path(tmp))
                if args.json:
                    write_record(args.json, out, started)


if __name__ == "__main__":
    main()
