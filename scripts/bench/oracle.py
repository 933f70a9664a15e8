"""Benchmark: which full-knowledge order is the bound (the `oracle`) on a continuously batching engine.

Three orders, each knowing every request's true answer:
  oracle-service        shortest true service first, priced at batch 1 by the engine's timing table
                        (what `oracle` was until this study)
  oracle-length         shortest true output first (arrival breaks ties)
  oracle                shortest true output first, a shorter prompt breaking ties (`oracle` since
                        this study found it the lowest mean; oracle-lenprompt in its first runs)

--sim   in the continuous-batching simulator (the vllm-cpu table, max_num_seqs 8, `--dispatch direct`):
        bursts of --requests from `reference-64` and `reference`, --sim-draws seeds each, and Poisson
        at 90% of capacity (5,000 requests, 3 seeds); FCFS beside them. Mean response time per order,
        with 95% intervals over the draws.
--real  bursts on vLLM-CPU (rtlm starts it; max_num_seqs 8, prefix caching off), `reference-64`,
        --real-draws draws (prompts drawn with the draw's seed), each order and FCFS on the same server,
        the order's key passed as each request's priority (`--dispatch direct`, priced by --timing vllm-cpu).

The lowest mean across both is what `oracle` is. Resumable (--json holds what is done).
Usage: .venv/bin/python scripts/bench/oracle.py --sim --real --json docs/bench/oracle.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

from rich.console import Console

from rtlm_cli.engines import EngineConfig, open_engine
from rtlm_cli.engines.vllm import VLLMSettings
from rtlm_cli.formats.store import provenance
from rtlm_cli.serve.config import ReplayConfig
from rtlm_cli.serve.job import replay

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import interval95, markdown_table, now  # noqa: E402

ORDERS = ("fcfs", "oracle-service", "oracle-length", "oracle")
TIMING = "vllm-cpu"


def interval(values: list[float]) -> dict:
    from scipy import stats

    mean = statistics.fmean(values)
    half = stats.t.ppf(0.975, len(values) - 1) * statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else None
    return {"mean": mean, "ci95": half, "n": len(values)}


def sim_rows(args, tmp: Path, console) -> dict:
    out = {}
    cases = [(f"burst {p}", p, "burst", None, args.requests, range(args.sim_draws)) for p in ("reference-64", "reference")]
    cases.append(("poisson 0.9 reference", "reference", "poisson", 0.9, 5000, range(3)))
    for name, profile, arrivals, load, n, seeds in cases:
        means = {o: [] for o in ORDERS}
        for seed in seeds:
            for order in ORDERS:
                cfg = ReplayConfig.of(str(tmp / "sim"), profile=profile, timing=TIMING, policy=order, simulate=True,
                                      batching="continuous", max_num_seqs=8, overwrite=True, arrivals=arrivals,
                                      load=load, num_requests=n, seed=seed)
                means[order].append(replay(cfg, console=None, dashboard=False)["summary"]["e2el_s"]["mean"])
        out[name] = {o: {**interval(v), "per_draw": v} for o, v in means.items()}
        console.print(f"sim {name}: " + ", ".join(f"{o} {out[name][o]['mean']:.2f}" for o in ORDERS))
    return out


def real_rows(args, tmp: Path, console, done: dict, save) -> dict:
    eng = EngineConfig(name="vllm", vllm=VLLMSettings(max_num_seqs=8))
    rows = done.setdefault("draws", {})
    with open_engine(eng, "smollm2", console=console) as engine:
        for d in range(args.real_draws):
            for order in ORDERS:
                if str(d) in rows and order in rows[str(d)]:
                    continue
                cfg = ReplayConfig.of(str(tmp / f"real-{d}-{order}"), profile="reference-64", timing=TIMING,
                                      policy=order, engine=eng, overwrite=True, dispatch="direct", arrivals="burst",
                                      num_requests=args.requests, seed=d)
                started = now()
                s = replay(cfg, console=None, dashboard=False, engine=engine)["summary"]
                if s["completed"] < args.requests:
                    raise SystemExit(f"draw {d} {order}: {s['failed']} failed")
                rows.setdefault(str(d), {})[order] = {"mean_s": s["e2el_s"]["mean"], "started": started, "ended": now()}
                console.print(f"real draw {d} {order}: mean {s['e2el_s']['mean']:.2f} s")
                save()
    full = [d for d, r in rows.items() if all(o in r for o in ORDERS)]
    done["summary"] = {o: {**interval([rows[d][o]["mean_s"] for d in full]),
                           "vs_fcfs": interval([rows[d][o]["mean_s"] / rows[d]["fcfs"]["mean_s"] for d in full])}
                       for o in ORDERS}
    done["best_per_draw"] = {o: sum(min(ORDERS[1:], key=lambda x: rows[d][x]["mean_s"]) == o for d in full)
                             for o in ORDERS[1:]}
    return done


def markdown(record: dict) -> str:
    """docs/benchmarks.md's table from a --json record: each order's mean response time (± 95% over
    draws) per setting, and the paired differences of oracle-service and oracle-length from oracle."""
    per = {}  # setting -> order -> per-draw means
    names = {"burst reference-64": "sim, burst, reference-64", "burst reference": "sim, burst, reference",
             "poisson 0.9 reference": "sim, Poisson 0.9, reference"}
    for key, label in names.items():
        if key in record.get("sim", {}):
            per[label] = {o: record["sim"][key][o]["per_draw"] for o in ORDERS}
    draws = record.get("real", {}).get("draws", {})
    full = [d for d, r in sorted(draws.items(), key=lambda x: int(x[0])) if all(o in r for o in ORDERS)]
    if full:
        per["**real**, burst, reference-64"] = {o: [draws[d][o]["mean_s"] for d in full] for o in ORDERS}
    rows = []
    for label, means in per.items():
        row = [f"{label} ({len(means['fcfs'])})"]
        for o in ORDERS:
            m, h = interval95(means[o])
            row.append(f"**{m:.2f} ± {h:.2f}**" if o == "oracle" else f"{m:.2f} ± {h:.2f}")
        for o in ("oracle-service", "oracle-length"):
            digits = 3 if label.startswith("sim") and o == "oracle-service" else 2  # the simulator's small gap
            d, h = interval95([x - y for x, y in zip(means[o], means["oracle"])])
            row.append(f"{d:+.{digits}f} ± {h:.{digits}f}")
        rows.append(row)
    return markdown_table(["setting", *ORDERS[:-1], "**oracle**", "oracle-service − oracle, paired",
                           "oracle-length − oracle, paired"], rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sim", action="store_true")
    ap.add_argument("--real", action="store_true")
    ap.add_argument("--requests", type=int, default=32)
    ap.add_argument("--sim-draws", type=int, default=30)
    ap.add_argument("--real-draws", type=int, default=10)
    ap.add_argument("--json", help="the record (required to run; read back, so real draws already there are kept)")
    ap.add_argument("--markdown", metavar="RECORD", help="only print docs/benchmarks.md's table from a --json record")
    args = ap.parse_args()
    if args.markdown:
        print(markdown(json.loads(Path(args.markdown).read_text())), end="")
        return
    if not args.json:
        raise SystemExit("error: --json OUT is required (where the results are kept)")
    console = Console(stderr=True, width=150)
    path = Path(args.json)
    out = json.loads(path.read_text()) if path.is_file() else {}

    def save():
        out["provenance"] = provenance()
        path.write_text(json.dumps(out, indent=1, default=str))

    with tempfile.TemporaryDirectory() as tmp:
        if args.sim:
            out["sim"] = {"started": now(), **sim_rows(args, Path(tmp), console), "ended": now()}
            save()
        if args.real:
            out["real"] = out.get("real") or {"started": now()}  # saved as it grows: a draw done is kept
            real_rows(args, Path(tmp), console, out["real"], save)
            out["real"]["ended"] = now()
            save()
            for o, r in out["real"]["summary"].items():
                console.print(f"real {o}: mean {r['mean']:.2f} ± {r['ci95'] or float('nan'):.2f} s, "
                              f"{r['vs_fcfs']['mean']:.3f}x FCFS's")
            console.print(f"best order per draw: {out['real']['best_per_draw']}")


if __name__ == "__main__":
    main()
