"""Benchmark: rtlm's central queue across several engines against what Ray Serve ships, in the
continuous-batching simulator (the rule proven here before it runs inside Ray).

--engines simulated vLLM-CPU engines (the shipped vllm-cpu table, max_num_seqs 8), each taking at most
K = 8 in flight (Ray's max_ongoing_requests, as a careful user sets it), the reference profile,
Poisson arrivals at --loads of their combined capacity, --requests per point, seeds 0-2:

  ray power-of-two   Ray Serve's default router, modelled: FIFO, the less loaded of two replicas drawn
                     at random (`--placement power-of-two`, policy fcfs)
  central fcfs       one capacity queue for all engines, FCFS: a freed slot takes the next request
                     (`--placement first-free`, policy fcfs): the pooling alone
  central rtlm       the same queue in rtlm's order (policy rtlm, the shipped predictor's out-of-fold
                     predictions)

Prints mean, p50 and p99 response time per arm with each against power-of-two; --json writes them.
Usage: .venv/bin/python scripts/bench_central_queue.py --json docs/bench/central-queue.json
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

ARMS = {"ray power-of-two": ("fcfs", "power-of-two"), "central fcfs": ("fcfs", "first-free"),
        "central rtlm": ("rtlm", "first-free")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--engines", type=int, default=4)
    ap.add_argument("--loads", type=lambda s: [float(x) for x in s.split(",")], default=[0.8, 0.9, 0.95])
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--json")
    args = ap.parse_args()
    out = {"started": now(), "setup": vars(args), "points": []}
    specs = tuple(f"e{i}=vllm-cpu" for i in range(args.engines))
    with tempfile.TemporaryDirectory() as tmp:
        for load in args.loads:
            for seed in range(args.seeds):
                row = {"load": load, "seed": seed}
                for arm, (policy, placement) in ARMS.items():
                    cfg = ReplayConfig.of(str(Path(tmp) / "run"), profile="reference", predictor="reference",
                                          policy=policy, simulate=True, batching="continuous", dispatch="gateway",
                                          specs=specs, placement=placement, inflight=8, max_num_seqs=8, load=load,
                                          num_requests=args.requests, seed=seed, overwrite=True)
                    e2el = replay(cfg, console=None, dashboard=False)["summary"]["e2el_s"]
                    row[arm] = {k: e2el[k] for k in ("mean", "p50", "p99")}
                base = row["ray power-of-two"]
                print(f"load {load} seed {seed}: " + "; ".join(
                    f"{arm} mean {r['mean']:.2f} s ({r['mean'] / base['mean']:.3f}x), p99 {r['p99']:.1f} s "
                    f"({r['p99'] / base['p99']:.2f}x)" for arm, r in ((a, row[a]) for a in ARMS)), flush=True)
                out["points"].append(row)
    out["ended"] = now()
    out["provenance"] = provenance()
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
