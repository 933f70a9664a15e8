"""Regenerate the report shown in docs/ and the results page's headline table from `rtlm report`.

Runs a fixed set of simulations on the shipped reference profile (deterministic: seeded, no clock),
reports them with the fast predictor, and writes:
  docs/report/report.html    the report page (what `rtlm report --html` makes)
  docs/report/report.png     a screenshot of it at 1280 px (headless Chromium; scripts/check_html.sh)
  docs/report/headline.md    the report's headline as Markdown
  docs/bench/headline.json   the raw data: the report's JSON (every run's numbers, the comparisons and
                             each policy across the seeds) with the command, date, machine and revision
  docs/benchmarks.md         the table between <!-- headline:start --> and <!-- headline:end -->, made
                             from docs/bench/headline.json alone (tests/test_headline.py checks it)
  docs/report/demo.html      the demo's own report (`bash scripts/demo.sh`: a real run on SmolLM2 beside
  docs/report/demo.png       simulated runs, which the report keeps apart), and its screenshot

Every setting runs on --seeds seeds from --first-seed on (default 5, 6, 7: the policies' weights were
tuned on seeds 0-4, rtlm's size weight by `bench/serve.py --aging` on 0-2 and the continuous
engine's on 3-4), so each figure comes with its interval or range, on workloads nothing was tuned on.
Usage: .venv/bin/python scripts/docs_report.py [--requests 10000] [--seeds 3] [--first-seed 5] [--no-demo]
(about 5 minutes, and about 5 more for the demo, which profiles and serves for real on this machine)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RTLM = [sys.executable, "-m", "rtlm_cli.cli"]


def rtlm(*args) -> str:
    return subprocess.run([*RTLM, *map(str, args)], check=True, capture_output=True, text=True, cwd=ROOT).stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=10_000)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--first-seed", type=int, default=5, help="the first workload seed (0-4 tuned the policies)")
    ap.add_argument("--demo", action=argparse.BooleanOptionalAction, default=True)
    args = ap.parse_args()
    out = ROOT / "docs" / "report"
    out.mkdir(parents=True, exist_ok=True)
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        pred = tmp / "fast"
        rtlm("train-predictor", "reference", "--out", pred, "--no-ablation")
        runs = []
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            n = ("-n", args.requests, "--seed", seed)
            s = tmp / f"seed{seed}"
            rtlm("serve-local", "--simulate", "--profile", "reference", "--predictor", pred, "--policy",
                 "fcfs,rtlm,oracle", "--loads", "0.5,0.9,0.95", *n, "--out", s / "static")
            cont = ("--simulate", "--batching", "continuous", "--timing", "vllm-cpu", "--profile", "reference",
                    "--predictor", pred, *n)
            rtlm("serve-local", *cont, "--policy", "fcfs,rtlm,oracle", "--loads", "0.9,0.95", "--out", s / "continuous")
            rtlm("serve-local", *cont, "--dispatch", "gateway", "--policy", "rtlm,oracle", "--loads", "0.9,0.95",
                 "--out", s / "gateway")
            runs += [s / "static", s / "continuous", s / "gateway"]
        data = json.loads(rtlm("report", *runs, "reference", pred, "--html", out / "report.html", "--json"))
    from rtlm_cli.formats.store import provenance

    raw = {"command": " ".join(["scripts/docs_report.py", *sys.argv[1:]]), "started": started,
           "ended": datetime.now(timezone.utc).isoformat(timespec="seconds"),
           "machine": f"{platform.machine()}, {os.cpu_count()} cores", "requests": args.requests, "seeds": args.seeds,
           "first_seed": args.first_seed,
           **provenance(), "report": {k: data[k] for k in ("headline", "across_seeds", "runs", "predictors")}}
    (ROOT / "docs" / "bench" / "headline.json").write_text(json.dumps(raw, indent=1, default=str))
    subprocess.run(["bash", ROOT / "scripts" / "check_html.sh", out / "report.html", out / "report.png"], check=True)
    table = headline_markdown(raw)
    (out / "headline.md").write_text(table)
    page = ROOT / RESULTS_PAGE
    text = page.read_text()
    new = re.sub(r"(<!-- headline:start -->\n).*?(<!-- headline:end -->)", lambda m: m.group(1) + table + m.group(2),
                 text, flags=re.S)
    page.write_text(new)
    print(table)
    if args.demo:
        subprocess.run(["bash", ROOT / "scripts" / "demo.sh"], check=True, cwd=ROOT)
        shutil.copyfile(ROOT / "demo" / "report.html", out / "demo.html")
        subprocess.run(["bash", ROOT / "scripts" / "check_html.sh", out / "demo.html", out / "demo.png"], check=True)


RESULTS_PAGE = "docs/benchmarks.md"  # where the headline table lives (links relative to docs/)


def headline_markdown(raw: dict) -> str:
    """The results page's headline table from docs/bench/headline.json alone: each policy against FCFS
    over the seeds, its mean with a 95% interval, the ranges of its median and p99, and its share of
    the oracle's gain (mean and range)."""
    data, requests = raw["report"], raw["requests"]
    rows = ["| setting | policy | mean response vs fcfs (95% interval) | median | p99 | of the oracle's gain (range) |",
            "| --- | --- | ---: | ---: | ---: | ---: |"]
    for a in data["across_seeds"]:
        if a["policy"].startswith("oracle"):
            continue
        setting = re.sub(r"^reference \(cap 256\), simulated, ", "", a["workload"]).replace(
            f", {requests} requests, seed *", "")
        share = "-" if a["oracle_gain_share_mean"] is None else \
            "{:.0%} ({:.0%} to {:.0%})".format(a["oracle_gain_share_mean"], *a["oracle_gain_share_range"])
        rows.append(f"| {setting} | {a['policy']} | {a['e2el_mean_vs_baseline']:.2f}x ± {a['ci95']:.2f} | "
                    "{:.2f}-{:.2f}x | {:.2f}-{:.2f}x | {} |".format(*a["e2el_p50_vs_baseline"], *a["e2el_p99_vs_baseline"],
                                                                    share))
    pred = next((p for p in data["predictors"] if p["kind"] == "cross-validated"), None)
    if pred:
        rows.append(f"| predictor ranking of lengths, out of fold over the reference profile | fast (text + prompt) | "
                    f"Kendall tau {pred['kendall_tau']:.3f} | | | |")
    first = raw.get("first_seed", 0)
    tuned = "; the policies' weights were tuned on seeds 0-4" if first >= 5 else ""
    return "\n".join(rows) + f"\n\n(`scripts/docs_report.py`: {requests:,} simulated requests per run on the reference " \
        f"profile, seeds {first}-{first + raw['seeds'] - 1}{tuned}, the fast predictor's out-of-fold predictions; raw data: " \
        "[bench/headline.json](bench/headline.json); the page: [report/report.html](report/report.html))\n"


if __name__ == "__main__":
    main()
