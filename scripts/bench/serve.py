"""Benchmark for `rtlm serve-local`: policies, consolidation, simulator speed and accuracy.

Parts (each can be skipped):
  --sim   the simulator at 10,000 requests over loads 0.5-0.95, on the reference profile and on a
          second prompt mix (the profile's short prompts, <= 40 words), batch 1 and consolidation,
          and at 50,000 requests (steady state) batch 1 across loads and consolidation near the
          batched capacity (batches of up to 8 and 16);
  --aging rtlm's aging weight (--size-weight) at batch 1 and load 0.95: mean against p99 and max;
  --sweep fcfs, rtlm and the oracle at batch 1 across the loads, 5,000 requests each: what `rtlm report`
          shows of a load sweep;
  --speed 100,000 requests through the simulator, timed;
  --real  the real executor on this machine's CPU with the embedded model (e.g. 60 requests at load
          0.85) for every policy, batch 1 and consolidation, next to the simulator on the same
          workload and seed (its error on mean response time), and the timing table's price of
          every batch the real runs executed against its measured duration (--recalibrate: measure
          the timing table again first, on a copy of the profile, and print the drift).

Load is the offered arrival rate over the workers' batch-1 capacity (1 / mean batch-1 service time
of the profile's requests, from its timing table). Gain share = (fcfs - rtlm) / (fcfs - oracle) on
mean response time.

Usage: .venv/bin/python scripts/bench/serve.py --sim --speed --seeds 0,1,2 --profile P --predictor D
       .venv/bin/python scripts/bench/serve.py --real --recalibrate --profile P --predictor D -n 60 --load 0.85
       .venv/bin/python scripts/bench/serve.py --aging --seeds 0,1,2 --predictor D
       .venv/bin/python scripts/bench/serve.py --markdown OUT   (docs/benchmarks.md's tables from a --json record)
--json OUT writes every row with the command, times, machine and revision (docs/bench/serve-sim.json);
it is rewritten after each part, so an interrupted run keeps the parts it finished.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from rtlm_cli.paths import source_path
from rtlm_cli.serve.config import ReplayConfig
from rtlm_cli.serve.job import replay
from rtlm_cli.serve.decide.policies import POLICIES as POLICY_REGISTRY

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import markdown_table, now, write_record  # noqa: E402

# the policies compared, the baseline (fcfs) first; the oracle is the bound (oracle-service: the
# true-service order, the oracle of the tables made before 2026-12-05)
POLICIES = ("fcfs", "sjf-input", "sjf-pred", "rtlm", "oracle", "oracle-service")
assert set(POLICIES) <= set(POLICY_REGISTRY.names())


def run(out: Path, profile: str, predictor: str, policy: str, load: float, n: int, max_batch: int, simulate: bool,
        seed: int = 0, console=None, **policy_params) -> dict:
    cfg = ReplayConfig.of(str(out), profile=profile, predictor=predictor, policy=policy, simulate=simulate,
                          max_batch=max_batch, overwrite=True, **policy_params, arrivals="poisson", load=load,
                          num_requests=n, seed=seed)
    return replay(cfg, console=console, dashboard=False)


def _ratio(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def _share(x: float | None) -> str:
    return "-" if x is None else f"{x:.0%}"


def table(title: str, rows: list[dict]) -> Table:
    t = Table(title=title)
    for c in ("mix", "requests", "batch", "load", "policy", "mean s", "p50 s", "p95 s", "req/s", "vs fcfs", "vs oracle",
              "gain share"):
        t.add_column(c, justify="right")
    for r in rows:
        t.add_row(r["mix"], str(r.get("requests", "")), str(r["batch"]), f"{r['load']:.2f}", r["policy"], f"{r['mean']:.2f}", f"{r['p50']:.2f}",
                  f"{r['p95']:.2f}", f"{r['rps']:.3f}", _ratio(r["vs_fcfs"]), _ratio(r["vs_oracle"]),
                  _share(r["gain_share"]))
    return t


def gain_share(fcfs: float | None, oracle: float | None, mean: float) -> float | None:
    """(fcfs - mean) / (fcfs - oracle): the share of the oracle's gain over FCFS a policy captures."""
    if fcfs is None or oracle is None or fcfs <= oracle:
        return None
    return (fcfs - mean) / (fcfs - oracle)


def compare(metas: dict[str, dict], mix: str, batch: int, load: float) -> list[dict]:
    """Rows with the ratios to fcfs and oracle (None where either was not run)."""
    fcfs = metas["fcfs"]["summary"]["e2el_s"]["mean"] if "fcfs" in metas else None
    oracle = metas["oracle"]["summary"]["e2el_s"]["mean"] if "oracle" in metas else None
    rows = []
    for pol, m in metas.items():
        s = m["summary"]
        mean = s["e2el_s"]["mean"]
        share = None if pol in ("fcfs", "oracle") else gain_share(fcfs, oracle, mean)
        rows.append({"mix": mix, "batch": batch, "load": load, "policy": pol, "mean": mean, "p50": s["e2el_s"]["p50"],
                     "p95": s["e2el_s"]["p95"], "rps": s["throughput_rps"],
                     "vs_fcfs": None if fcfs is None else mean / fcfs,
                     "vs_oracle": None if oracle is None else mean / oracle, "gain_share": share})
    return rows


def mixes(profile: str, tmp: Path) -> dict[str, str]:
    """The two prompt mixes (name -> profile): the profile itself, and a second mix of its prompts
    of at most 40 words (chosen by input, not outcome), written once under ``tmp``."""
    from rtlm_cli.formats.profile import load_profile

    out = tmp / "short-mix"
    if not out.exists():
        _, df = load_profile(profile)
        (out / "requests").mkdir(parents=True)
        df[df["size_words"] <= 40].to_parquet(out / "requests" / "part-00000.parquet")
        shutil.copy(source_path(profile) / "meta.json", out / "meta.json")
        shutil.copy(source_path(profile) / "timing.parquet", out / "timing.parquet")
    return {"sharegpt": profile, "short<=40w": str(out)}


def batched_capacity_factor(profile: str, batch: int) -> float:
    """How many times its batch-1 capacity a worker serves when it batches up to ``batch`` requests
    drawn at random from the profile (length-blind batches: a batch lasts as long as its longest
    member, and on a CPU its prefill grows with it), priced with the profile's timing table."""
    import numpy as np

    from rtlm_cli.formats.profile import load_profile
    from rtlm_cli.formats.timing import load_timing_table
    from rtlm_cli.serve.costmodel import CostModel

    cost = CostModel.from_table(load_timing_table(profile))
    _, df = load_profile(profile)
    prompts, outputs = df["prompt_tokens"].to_numpy(), df["output_tokens"].to_numpy()
    rng = np.random.default_rng(0)

    def seconds_per_request(b: int) -> float:
        groups = [rng.choice(len(df), b, replace=False) for _ in range(300)]
        return float(np.mean([cost.batch_times(list(prompts[g]), list(outputs[g]))[2] / b for g in groups]))

    sizes = sorted({1, batch} | {b for b in cost.batches if b <= batch})
    return seconds_per_request(1) / min(seconds_per_request(b) for b in sizes)


def sim_part(args, console, tmp: Path) -> list[dict]:
    """Batch 1 and consolidation (up to 8) at the loads of ``--loads`` (``--sim-requests`` each);
    batch 1 again at those loads, and every consolidation limit of ``--consolidation`` at 70%, 90%
    and 95% of its batched capacity, with ``--steady-requests`` each: near capacity a queue takes
    long to settle, and at 10,000 requests FCFS's mean (so every ratio to it, and the share of a gap
    of 0.4 s at load 0.5) moves by a seed's luck. The targets are read on the steady-state rows."""
    rows = []
    factors = {b: batched_capacity_factor(args.profile, b) for b in args.consolidation}
    for b, f in factors.items():
        console.print(f"batches of up to {b} random requests serve {f:.2f}x the batch-1 capacity on this timing table")
    points = [(1, load, args.sim_requests) for load in args.loads] + [(8, load, args.sim_requests) for load in args.loads]
    points += [(1, load, args.steady_requests) for load in args.loads]
    points += [(b, round(frac * f, 2), args.steady_requests) for b, f in factors.items() for frac in (0.7, 0.9, 0.95)]
    for seed in args.seeds:
        seed_rows = []
        for mix, prof in mixes(args.profile, tmp).items():
            for batch, load, n in points:
                metas = {p: run(tmp / f"{mix}-{batch}-{load}-{p}", prof, args.predictor, p, load, n, batch, True, seed=seed)
                         for p in POLICIES}
                seed_rows += [{**r, "seed": seed, "requests": n} for r in compare(metas, mix, batch, load)]
        console.print(table(f"simulator, workload seed {seed}", seed_rows))
        rows += seed_rows
    steady = [r for r in rows if r["requests"] == args.steady_requests]
    shares = [r for r in steady if r["policy"] == "rtlm" and r["batch"] == 1 and r["gain_share"] is not None]
    if shares:
        low = min(shares, key=lambda r: r["gain_share"])
        console.print(f"batch 1, {args.steady_requests} requests: rtlm's smallest share of the oracle's gain over all loads, "
                      f"mixes and seeds: {_share(low['gain_share'])} ({low['mix']}, load {low['load']:.2f}, seed {low['seed']}; "
                      f"target >= 70%)")
    for r in steady:
        if r["policy"] == "rtlm" and r["batch"] > 1:
            frac = r["load"] / factors[r["batch"]]
            console.print(f"{r['mix']}, seed {r['seed']}, batches of up to {r['batch']} at load {r['load']:.2f} "
                          f"({frac:.0%} of their capacity): rtlm {r['vs_fcfs']:.3f}x fcfs, "
                          f"{_share(r['gain_share'])} of the oracle's gain (target <= 0.6x near capacity)")
    return rows


def aging_part(args, console, tmp: Path) -> list[dict]:
    """rtlm's aging weight w at batch 1 and load 0.95: the mean it buys against the tail it costs."""
    import numpy as np
    import pandas as pd

    rows = []
    t = Table(title=f"rtlm's size weight w (aging) at batch 1, load 0.95, {args.sim_requests} requests")
    for c in ("mix", "seed", "policy", "w", "mean s", "gain share", "p99 s", "max s"):
        t.add_column(c, justify="right")
    for mix, prof in mixes(args.profile, tmp).items():
        for seed in args.seeds:
            runs = [("fcfs", None), ("oracle", None)] + [("rtlm", w) for w in (32.0, 128.0, 256.0, 512.0, 1024.0, 1e9)]
            res = {}
            for pol, w in runs:
                params = {} if w is None else {"size_weight": w}
                m = run(tmp / f"aging-{mix}-{seed}-{pol}-{w}", prof, args.predictor, pol, 0.95, args.sim_requests, 1, True,
                        seed=seed, **params)
                df = pd.read_parquet(Path(m["out"]) / "requests.parquet")
                e = (df["finish_s"] - df["arrival_s"]).to_numpy()
                res[(pol, w)] = (float(e.mean()), float(np.percentile(e, 99)), float(e.max()))
            fcfs, oracle = res[("fcfs", None)][0], res[("oracle", None)][0]
            for (pol, w), (mean, p99, mx) in res.items():
                share = gain_share(fcfs, oracle, mean) if pol == "rtlm" else None
                rows.append({"mix": mix, "seed": seed, "policy": pol, "size_weight": w, "mean": mean, "gain_share": share,
                             "p99": p99, "max": mx})
                t.add_row(mix, str(seed), pol, "-" if w is None else ("inf" if w >= 1e9 else f"{w:g}"), f"{mean:.1f}",
                          _share(share), f"{p99:.0f}", f"{mx:.0f}")
    console.print(t)
    return rows


def sweep_part(args, console, tmp: Path) -> list[dict]:
    """The load sweep `rtlm report` shows: fcfs, rtlm and the oracle at batch 1 across ``--loads``,
    ``--sweep-requests`` each, every seed; each run's summary as the report reads it."""
    rows = []
    for seed in args.seeds:
        for load in args.loads:
            for pol in ("fcfs", "rtlm", "oracle"):
                m = run(tmp / f"sweep-{seed}-{load}-{pol}", args.profile, args.predictor, pol, load, args.sweep_requests, 1,
                        True, seed=seed)
                rows.append({"seed": seed, "load": load, "policy": pol, "summary": m["summary"]})
        console.print(f"load sweep: seed {seed} done")
    return rows


def speed_part(args, console, tmp: Path) -> dict:
    t0 = time.perf_counter()
    m = run(tmp / "speed", args.profile, args.predictor, "rtlm", 0.9, 100_000, 1, True)
    replay_s = time.perf_counter() - t0
    sim_s = m["wall_s"]
    console.print(f"simulator: 100,000 requests (rtlm, load 0.9) simulated in {sim_s:.2f} s "
                  f"({replay_s:.2f} s with workload building and writing the run; target < 10 s)")
    return {"simulate_s": sim_s, "replay_s": replay_s}


def batch_accuracy(run_dirs: list[Path], profile: str) -> list[dict]:
    """The cost model's price of every batch the real runs executed (their prompts, their true
    lengths) against its measured duration (first start to last finish), by batch size."""
    import numpy as np
    import pandas as pd

    from rtlm_cli.formats.timing import load_timing_table
    from rtlm_cli.serve.costmodel import CostModel

    cost = CostModel.from_table(load_timing_table(profile))
    rows = []
    for d in run_dirs:
        df = pd.read_parquet(d / "requests.parquet")
        for _, g in df[df["status"] == "finished"].groupby("batch_id"):
            priced = cost.batch_times(list(g["prompt_tokens"]), list(g["output_tokens"]))[2]
            rows.append({"batch_size": len(g), "real_s": g["finish_s"].max() - g["start_s"].min(), "priced_s": priced})
    df = pd.DataFrame(rows)
    df["error"] = df["priced_s"] / df["real_s"] - 1
    return [{"batch_size": int(b), "batches": len(g), "real_s": float(g["real_s"].mean()),
             "priced_s": float(g["priced_s"].mean()), "mean_error": float(g["error"].mean()),
             "mean_abs_error": float(np.abs(g["error"]).mean())} for b, g in df.groupby("batch_size")]


def _calibrate(model: str, batches: list[int], contexts: list[int]):
    from rtlm_cli.engines import load_engine
    from rtlm_cli.profile.calibrate import calibrate
    from rtlm_cli.profile.config import ProfileConfig

    cfg = ProfileConfig(out="-", model=model, calibrate=True, calibration_batches=tuple(batches),
                        calibration_contexts=tuple(contexts))
    return calibrate(load_engine(model, device="cpu"), cfg)


def recalibrate(profile: str, tmp: Path, console) -> str:
    """A copy of the profile with its timing table measured again now, in a separate process (the
    same grid): this machine's speed drifts (another tenant's load), and the simulator can only be
    as right as its table. Prints the drift against the stored table."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from rtlm_cli.formats.store import atomic_write_parquet
    from rtlm_cli.formats.timing import load_timing_table

    old = load_timing_table(profile)
    meta = json.loads((source_path(profile) / "meta.json").read_text())
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as ex:
        new = ex.submit(_calibrate, meta["model"]["model_id"], sorted(set(old["batch"])), sorted(set(old["context"]))).result()
    copy = tmp / "recalibrated"
    shutil.copytree(source_path(profile), copy)
    atomic_write_parquet(new, copy / "timing.parquet")
    both = old.merge(new, on=["batch", "context"], suffixes=("_stored", "_now"))
    t = Table(title="timing table now vs stored (this machine's speed drift)")
    for c in ("batch", "context", "prefill now / stored", "decode step now / stored"):
        t.add_column(c, justify="right")
    for _, r in both.iterrows():
        t.add_row(str(int(r["batch"])), str(int(r["context"])), f"{r['prefill_s_now'] / r['prefill_s_stored']:.3f}",
                  f"{r['decode_step_s_now'] / r['decode_step_s_stored']:.3f}")
    console.print(t)
    return str(copy)


def real_part(args, console, tmp: Path) -> list[dict]:
    # Every real run comes before any simulated one: a simulation loads the LightGBM predictor in
    # this process, and a booster in the process slows torch's CPU decoding 1.7x (measured).
    if args.recalibrate:
        args.profile = recalibrate(args.profile, tmp, console)
    rows, errors, real = [], [], {}
    dirs = {(batch, p): tmp / f"real-{batch}-{p}" for batch in args.batches for p in args.real_policies}
    for (batch, p), d in dirs.items():
        real[(batch, p)] = run(d, args.profile, args.predictor, p, args.load, args.n, batch, False, seed=args.seed,
                               console=console)
    for batch in args.batches:
        for p in args.real_policies:
            sim = run(tmp / f"sim-{batch}-{p}", args.profile, args.predictor, p, args.load, args.n, batch, True, seed=args.seed)
            r, s = real[(batch, p)]["summary"]["e2el_s"]["mean"], sim["summary"]["e2el_s"]["mean"]
            errors.append({"batch": batch, "policy": p, "real_mean_s": r, "sim_mean_s": s, "error": s / r - 1})
        rows += compare({p: real[(batch, p)] for p in args.real_policies}, "real-cpu", batch, args.load)
    console.print(table(f"real executor on this CPU, {args.n} requests, load {args.load}", rows))
    t = Table(title="simulator vs real: mean response time")
    for c in ("batch", "policy", "real s", "simulated s", "error"):
        t.add_column(c, justify="right")
    for e in errors:
        t.add_row(str(e["batch"]), e["policy"], f"{e['real_mean_s']:.2f}", f"{e['sim_mean_s']:.2f}", f"{e['error']:+.1%}")
    console.print(t)
    acc = batch_accuracy(list(dirs.values()), args.profile)
    t = Table(title="the timing table's price of each real batch vs its measured duration")
    for c in ("batch size", "batches", "real s", "priced s", "mean error", "mean |error|"):
        t.add_column(c, justify="right")
    for a in acc:
        t.add_row(str(a["batch_size"]), str(a["batches"]), f"{a['real_s']:.2f}", f"{a['priced_s']:.2f}",
                  f"{a['mean_error']:+.1%}", f"{a['mean_abs_error']:.1%}")
    console.print(t)
    return rows + errors + [{"batch_accuracy": acc}]


def _range(values: list[float], fmt) -> str:
    lo, hi = min(values), max(values)
    return fmt(lo) if fmt(lo) == fmt(hi) else f"{fmt(lo)}-{fmt(hi)}"


def markdown(record: dict) -> str:
    """docs/benchmarks.md's tables from a --json record: seed 0 across the loads; rtlm's share of the
    oracle's gain at batch 1 per seed; consolidation near the batched capacity per seed; the aging
    weight's table; the load sweep; the speed."""
    text = ""
    sim = record.get("sim", [])
    pols = [p for p in POLICIES if any(r["policy"] == p for r in sim)]

    def by(rows, *keys):
        out = {}
        for r in rows:
            out.setdefault(tuple(r[k] for k in keys), []).append(r)
        return out

    def slash(values, fmt) -> str:
        return "-" if any(v is None for v in values) else " / ".join(fmt(v) for v in values)

    if sim:
        small, steady = min(r["requests"] for r in sim), max(r["requests"] for r in sim)
        seeds = sorted({r["seed"] for r in sim})
        rows = []
        for (mix, batch, load), g in by([r for r in sim if r["requests"] == small and r["seed"] == seeds[0]],
                                        "mix", "batch", "load").items():
            mean = {r["policy"]: r for r in g}
            rt = mean["rtlm"]
            rows.append([mix, batch, f"{load:.2f}", *[f"{mean[p]['mean']:.2f}" for p in pols], _ratio(rt["vs_fcfs"]),
                         _ratio(rt["vs_oracle"]), _share(rt["gain_share"])])
        text += f"\nseed {seeds[0]}, {small:,} requests a point, mean response time s:\n\n"
        text += markdown_table(["mix", "batch", "load", *pols, "rtlm / fcfs", "rtlm / oracle", "gain share"], rows)
        rows = []
        one = [r for r in sim if r["batch"] == 1]
        for label, pol, n in (("{mix}", "rtlm", steady), ("({mix}, sjf-pred)", "sjf-pred", steady),
                              ("({mix}, {n:,} requests)", "rtlm", small)):
            for mix in dict.fromkeys(r["mix"] for r in one):
                g = by([r for r in one if r["mix"] == mix and r["policy"] == pol and r["requests"] == n], "load")
                rows.append([label.format(mix=mix, n=n), *[slash([r["gain_share"] for r in sorted(g[k], key=lambda r: r["seed"])],
                                                                 lambda x: f"{x:.0%}") for k in sorted(g)]])
        loads = sorted({r["load"] for r in one})
        text += (f"\nthe policy's share of the oracle's gain at batch 1, seeds {' / '.join(map(str, seeds))}, "
                 f"{steady:,} requests a point unless said:\n\n")
        text += markdown_table(["mix", *[f"load {x:.2f}" for x in loads]], rows)
        rows = []
        for (mix, batch, load), g in by([r for r in sim if r["requests"] == steady and r["batch"] > 1],
                                        "mix", "batch", "load").items():
            at = {p: sorted([r for r in g if r["policy"] == p], key=lambda r: r["seed"]) for p in pols}
            rows.append([mix, batch, f"{load:.2f}", slash([r["mean"] for r in at["fcfs"]], lambda x: f"{x:.1f}"),
                         *[slash([r["vs_fcfs"] for r in at[p]], lambda x: f"{x:.3f}") for p in pols if p != "fcfs"],
                         slash([r["gain_share"] for r in at["rtlm"]], lambda x: f"{x:.0%}")])
        if rows:
            text += (f"\nconsolidation near the batched capacity, {steady:,} requests a point, seeds "
                     f"{' / '.join(map(str, seeds))}: fcfs's mean s, every other policy's relative to it:\n\n")
            text += markdown_table(["mix", "batch", "load", "fcfs s", *[p for p in pols if p != "fcfs"],
                                    "rtlm's gain share"], rows)
    if record.get("aging"):
        ag = record["aging"]
        seeds = sorted({r["seed"] for r in ag})
        rows = []
        for (pol, w), g in by(ag, "policy", "size_weight").items():
            share = {mix: [r["gain_share"] for r in g if r["mix"] == mix] for mix in ("sharegpt", "short<=40w")}
            sg = [r for r in g if r["mix"] == "sharegpt"]
            fmt = (lambda xs: "-" if None in xs else "/".join(f"{x:.0%}" for x in xs))
            rows.append([pol, "-" if w is None else ("no aging" if w >= 1e9 else f"{w:g}"), fmt(share["sharegpt"]),
                         fmt(share["short<=40w"]), "/".join(f"{r['p99']:.0f}" for r in sg),
                         "/".join(f"{r['max']:.0f}" for r in sg)])
        text += f"\naging at batch 1, load 0.95 (seeds {'/'.join(map(str, seeds))}; p99 and max: the sharegpt mix):\n\n"
        text += markdown_table(["policy", "w", "gain share, sharegpt", "gain share, short <= 40 words", "p99 s", "max s"],
                               rows)
    if record.get("sweep"):
        sw = record["sweep"]
        seeds = sorted({r["seed"] for r in sw})
        rows = []
        for (load, pol), g in by(sw, "load", "policy").items():
            def col(metric, stat, fmt=lambda x: f"{x:.2f}"):
                return _range([r["summary"][metric][stat] for r in g], fmt)
            rows.append([pol, f"{load:.2f}", col("e2el_s", "mean"), col("e2el_s", "p50"), col("e2el_s", "p90"),
                         col("e2el_s", "p95"), col("e2el_s", "p99"), col("ttft_s", "p50"), col("queue_s", "p95"),
                         _range([r["summary"]["throughput_rps"] for r in g], lambda x: f"{x:.3f}")])
        text += f"\nload sweep, batch 1 (seconds, range over seeds {', '.join(map(str, seeds))}):\n\n"
        text += markdown_table(["policy", "load", "e2el mean", "p50", "p90", "p95", "p99", "ttft p50", "queue p95", "req/s"],
                               rows)
    if record.get("speed"):
        sp = record["speed"]
        text += (f"\nspeed: 100,000 requests simulated in {sp['simulate_s']:.2f} s "
                 f"({sp['replay_s']:.2f} s with building the workload and writing the run)\n")
    return text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="reference")
    ap.add_argument("--predictor")
    ap.add_argument("--sim", action="store_true")
    ap.add_argument("--speed", action="store_true")
    ap.add_argument("--aging", action="store_true", help="rtlm's size weight against mean and tail at load 0.95")
    ap.add_argument("--real", action="store_true")
    ap.add_argument("--sweep", action="store_true", help="fcfs, rtlm and the oracle across --loads, as `rtlm report` shows them")
    ap.add_argument("--sweep-requests", type=int, default=5_000)
    ap.add_argument("--sim-requests", type=int, default=10_000)
    ap.add_argument("--steady-requests", type=int, default=50_000,
                    help="requests per point of the steady-state rows (batch 1 across loads; near the batched capacity)")
    ap.add_argument("--consolidation", type=lambda s: [int(x) for x in s.split(",")], default=[8, 16],
                    help="simulator part: consolidation limits run near their batched capacity (16: the timing table's largest)")
    ap.add_argument("--loads", type=lambda s: [float(x) for x in s.split(",")], default=[0.5, 0.7, 0.85, 0.95])
    ap.add_argument("-n", type=int, default=60)
    ap.add_argument("--load", type=float, default=0.85)
    ap.add_argument("--seed", type=int, default=0, help="workload seed of the real part")
    ap.add_argument("--seeds", type=lambda s: [int(x) for x in s.split(",")], default=[0],
                    help="workload seeds of the simulator part (at load 0.95 one seed's FCFS mean moves by 1.5x)")
    ap.add_argument("--recalibrate", action="store_true",
                    help="real part: measure the timing table again first (a copy of the profile), for runs and simulator")
    ap.add_argument("--real-policies", type=lambda s: s.split(","), default=list(POLICIES),
                    help="policies for the real part (the ratios need fcfs and oracle among them)")
    ap.add_argument("--batches", type=lambda s: [int(x) for x in s.split(",")], default=[1, 8],
                    help="max batch sizes of the real part: 1 (no consolidation) and/or a consolidation limit")
    ap.add_argument("--json", help="write every row here, after each part (stamped with command, times, machine, revision)")
    ap.add_argument("--markdown", metavar="RECORD", help="only print docs/benchmarks.md's tables from a --json record")
    args = ap.parse_args()
    if args.markdown:
        print(markdown(json.loads(Path(args.markdown).read_text())))
        return
    if not args.predictor:
        ap.error("--predictor is required")
    console = Console(width=150)
    out = {}
    started = now()
    with tempfile.TemporaryDirectory() as tmp:
        for part, fn in (("sim", sim_part), ("aging", aging_part), ("sweep", sweep_part), ("speed", speed_part),
                         ("real", real_part)):
            if getattr(args, part):
                out[part] = fn(args, console, Path(tmp))
                write_record(args.json, out, started)
    print(json.dumps(out, default=float))


if __name__ == "__main__":
    main()
