"""Benchmark: rtlm's central queue across several engines against what Ray Serve ships, in the
continuous-batching simulator (the rule proven here before it runs inside Ray).

--engines N simulated engines (each list entry a point), each taking at most K = 8 in flight (Ray's
max_ongoing_requests, as a careful user sets it; max_num_seqs 8), the reference profile, Poisson
arrivals at --loads of their combined capacity, --requests per point, seeds --seeds (0, 1, 2: no
weight was tuned on them; rtlm's were chosen on seeds 3/4):

  ray power-of-two          Ray Serve's default router, modelled: FIFO, the less loaded of two replicas
                            drawn at random (`--placement power-of-two`, policy fcfs)
  central fcfs first-free   one capacity queue for all engines, FCFS, a freed slot takes the next
                            request (`--placement first-free`): packs the first engines full
  central fcfs              the same queue handing each request to the engine with the fewest in
                            flight (`--placement least-loaded`, policy fcfs): the pooling alone
  central rtlm              the same least-loaded queue in rtlm's order (policy rtlm, the shipped
                            predictor's out-of-fold predictions)
  central oracle            the same queue in the oracle's order (true lengths): the bound

Homogeneous engines are all the shipped vllm-cpu table. --hetero (off by default) adds points with four engines of
which one is slower: three priced by the h200 table, one by vllm-cpu, `--offload` on (a slow engine's
slot takes work only while the fast ones are congested), FCFS and rtlm through the queue, and
power-of-two (which knows nothing of speeds).

Prints mean and p99 response time per arm, each against central fcfs, and rtlm's share of the
oracle's gain over central fcfs (target at 95%: >= 70%, with p99 <= 2x central fcfs's); --json
writes every number. Resumable: points already in --json are skipped.
Usage: .venv/bin/python scripts/bench/central_queue.py --json docs/bench/central-queue.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from rtlm_cli.formats.store import provenance
from rtlm_cli.serve.config import ReplayConfig
from rtlm_cli.serve.job import replay

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import now  # noqa: E402

# arm: (policy, placement, offload)
ARMS = {"ray power-of-two": ("fcfs", "power-of-two", False), "central fcfs first-free": ("fcfs", "first-free", False),
        "central fcfs": ("fcfs", "least-loaded", False), "central rtlm": ("rtlm", "least-loaded", False),
        "central oracle": ("oracle", "least-loaded", False)}
HETERO_ARMS = {"ray power-of-two": ("fcfs", "power-of-two", False), "central fcfs": ("fcfs", "least-loaded", True),
               "central rtlm": ("rtlm", "least-loaded", True)}


def run(tmp: Path, specs: tuple[str, ...], policy: str, placement: str, offload: bool, load: float, n: int,
        seed: int) -> dict:
    # the h200 table was measured with static batches: priced here at each engine's running count
    static = any(s.endswith("=h200") for s in specs)
    cfg = ReplayConfig.of(str(tmp / "run"), profile="reference", predictor="reference", policy=policy,
                          simulate=True, batching="continuous", dispatch="gateway", specs=specs,
                          placement=placement, offload=offload, inflight=8, max_num_seqs=8, load=load,
                          num_requests=n, seed=seed, overwrite=True, allow_static_timing=static)
    e2el = replay(cfg, console=None, dashboard=False)["summary"]["e2el_s"]
    return {k: e2el[k] for k in ("mean", "p50", "p99")}


def rtlm_share(row: dict) -> float | None:
    """rtlm's share of the oracle's gain over central fcfs on the mean (None: the oracle gained nothing)."""
    base, gap = row["central fcfs"]["mean"], row["central fcfs"]["mean"] - row["central oracle"]["mean"]
    return (base - row["central rtlm"]["mean"]) / gap if gap > 0 else None


def line(name: str, row: dict, arms) -> str:
    base = row["central fcfs"]
    parts = [f"{arm} {row[arm]['mean']:.2f} s ({row[arm]['mean'] / base['mean']:.3f}x, p99 "
             f"{row[arm]['p99'] / base['p99']:.2f}x)" for arm in arms]
    if "rtlm_share" in row:
        parts.append(f"rtlm's share {row['rtlm_share']:.0%}" if row["rtlm_share"] is not None else "no oracle gain")
    return f"{name}: " + "; ".join(parts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--engines", type=lambda s: [int(x) for x in s.split(",")], default=[4, 16])
    ap.add_argument("--loads", type=lambda s: [float(x) for x in s.split(",")], default=[0.9, 0.95])
    ap.add_argument("--requests", type=int, default=50000)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--hetero", action=argparse.BooleanOptionalAction, default=False,
                    help="add the points with one slower engine of four (about 3 minutes more)")
    ap.add_argument("--json")
    args = ap.parse_args()
    path = Path(args.json) if args.json else None
    out = json.loads(path.read_text()) if path and path.exists() else {"started": now(), "points": []}
    out["setup"] = vars(args)
    done = {(p["engines"], p["load"], p["seed"]) for p in out["points"]}

    def save():
        out["ended"] = now()
        out["provenance"] = provenance()
        if path:
            path.write_text(json.dumps(out, indent=1))

    points = [(str(e), tuple(f"e{i}=vllm-cpu" for i in range(e)), ARMS) for e in args.engines]
    if args.hetero:
        points.append(("3 h200 + 1 vllm-cpu", ("f0=h200", "f1=h200", "f2=h200", "slow=vllm-cpu"), HETERO_ARMS))
    with tempfile.TemporaryDirectory() as tmp:
        for name, specs, arms in points:
            for load in args.loads:
                for seed in range(args.seeds):
                    if (name, load, seed) in done:
                        continue
                    row = {"engines": name, "load": load, "seed": seed}
                    for arm, (policy, placement, offload) in arms.items():
                        row[arm] = run(Path(tmp), specs, policy, placement, offload, load, args.requests, seed)
                    if "central oracle" in row:
                        row["rtlm_share"] = rtlm_share(row)
                    print(line(f"{name} engines, load {load}, seed {seed}", row, arms), flush=True)
                    out["points"].append(row)
                    save()
    save()


if __name__ == "__main__":
    main()
