"""Regenerate the report shown in docs/ and the README's headline-results table from `rtlm report`.

Runs a fixed set of simulations on the shipped reference profile (deterministic: seeded, no clock),
reports them with the fast predictor, and writes:
  docs/report/report.html    the report page (what `rtlm report --html` makes)
  docs/report/report.png     a screenshot of it at 1280 px (headless Chromium; scripts/check_html.sh)
  docs/report/headline.md    the report's headline as Markdown
  README.md                  the table between <!-- headline:start --> and <!-- headline:end -->
  docs/report/demo.html      the demo's own report (`bash scripts/demo.sh`: a real run on SmolLM2 beside
  docs/report/demo.png       simulated runs, which the report keeps apart), and its screenshot

Usage: .venv/bin/python scripts/docs_report.py [--requests 20000] [--no-demo]
(about 3 minutes, and about 5 more for the demo, which profiles and serves for real on this machine)
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RTLM = [sys.executable, "-m", "rtlm_cli.cli"]


def rtlm(*args) -> str:
    return subprocess.run([*RTLM, *map(str, args)], check=True, capture_output=True, text=True, cwd=ROOT).stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=20_000)
    ap.add_argument("--demo", action=argparse.BooleanOptionalAction, default=True)
    args = ap.parse_args()
    out = ROOT / "docs" / "report"
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        pred = tmp / "fast"
        rtlm("train-predictor", "reference", "--out", pred, "--no-ablation")
        n = ("-n", args.requests, "--seed", 0)
        rtlm("serve-local", "--simulate", "--profile", "reference", "--predictor", pred, "--policy", "fcfs,rtlm,oracle",
             "--loads", "0.5,0.9,0.95", *n, "--out", tmp / "static")
        cont = ("--simulate", "--batching", "continuous", "--timing", "vllm-cpu", "--profile", "reference", "--predictor",
                pred, *n)
        rtlm("serve-local", *cont, "--policy", "fcfs,rtlm,oracle", "--loads", "0.9,0.95", "--out", tmp / "continuous")
        rtlm("serve-local", *cont, "--dispatch", "gateway", "--policy", "rtlm,oracle", "--loads", "0.9,0.95",
             "--out", tmp / "gateway")
        runs = [tmp / "static", tmp / "continuous", tmp / "gateway"]
        data = json.loads(rtlm("report", *runs, "reference", pred, "--html", out / "report.html", "--json"))
    subprocess.run(["bash", ROOT / "scripts" / "check_html.sh", out / "report.html", out / "report.png"], check=True)
    table = headline_markdown(data, args.requests)
    (out / "headline.md").write_text(table)
    readme = ROOT / "README.md"
    text = readme.read_text()
    new = re.sub(r"(<!-- headline:start -->\n).*?(<!-- headline:end -->)", lambda m: m.group(1) + table + m.group(2),
                 text, flags=re.S)
    readme.write_text(new)
    print(table)
    if args.demo:
        subprocess.run(["bash", ROOT / "scripts" / "demo.sh"], check=True, cwd=ROOT)
        shutil.copyfile(ROOT / "demo" / "report.html", out / "demo.html")
        subprocess.run(["bash", ROOT / "scripts" / "check_html.sh", out / "demo.html", out / "demo.png"], check=True)


def headline_markdown(data: dict, requests: int) -> str:
    rows = ["| setting | policy | mean response vs fcfs | median | p99 | of the oracle's gain |",
            "| --- | --- | ---: | ---: | ---: | ---: |"]
    for r in data["headline"]:
        if r["policy"].startswith("oracle"):
            continue
        g = r["group"]
        setting = re.sub(r"^reference \(cap 256\), simulated, ", "", g).replace(f", {requests} requests, seed 0", "")
        share = "-" if r["oracle_gain_share"] is None else f"{r['oracle_gain_share']:.0%}"
        rows.append(f"| {setting} | {r['policy']} | {r['e2el_mean_vs_baseline']:.2f}x | {r['e2el_p50_vs_baseline']:.2f}x | "
                    f"{r['e2el_p99_vs_baseline']:.2f}x | {share} |")
    pred = next((p for p in data["predictors"] if p["kind"] == "cross-validated"), None)
    if pred:
        rows.append(f"| predictor ranking of lengths, out of fold over the reference profile | fast (text + prompt) | "
                    f"Kendall tau {pred['kendall_tau']:.3f} | | | |")
    return "\n".join(rows) + f"\n\n(`scripts/docs_report.py`: {requests:,} simulated requests per run on the reference " \
        "profile, the fast predictor's out-of-fold predictions; the page: [docs/report/report.html](docs/report/report.html))\n"


if __name__ == "__main__":
    main()
