"""Benchmark: the README's five-minute tour, run as written, step by step, in a fresh directory.

Every command of the tour's code block runs as a newcomer types it (`rtlm ...`, the `rtlm` of this
checkout's .venv first on PATH), in an empty temporary directory, one after the other; each step's
wall time and exit code are printed and, with --json, written. The setup (`bash scripts/setup.sh`)
is not timed: the README's first command does it. Target: the whole tour in at most five minutes.
Run it alone on the cores (it times things).

    .venv/bin/python scripts/bench/tour.py --json docs/bench/tour.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import exit_on_sigterm, now  # noqa: E402

from rtlm_cli.formats.store import provenance  # noqa: E402
from rtlm_cli.testing.tour import tour_commands  # noqa: E402  (one parser of the tour, the test's too)

TARGET_S = 300


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json")
    args = ap.parse_args()
    exit_on_sigterm()  # what it started (servers, gateways, the load generator) stops with it
    commands = tour_commands((ROOT / "README.md").read_text())
    env = {**os.environ, "PATH": f"{ROOT / '.venv' / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    out = {"started": now(), "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
           "steps": []}
    with tempfile.TemporaryDirectory(prefix="rtlm-tour-") as work:
        for i, argv in enumerate(commands, 1):
            t0 = time.perf_counter()
            r = subprocess.run(argv, cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            wall = time.perf_counter() - t0
            out["steps"].append({"step": i, "command": shlex.join(argv), "wall_s": wall, "exit_code": r.returncode,
                                 "output_tail": r.stdout[-1500:]})
            print(f"step {i} ({wall:.1f} s, exit {r.returncode}): {shlex.join(argv)}", flush=True)
            if r.returncode != 0:
                print(r.stdout[-3000:])
                break
    total = sum(s["wall_s"] for s in out["steps"])
    ok = len(out["steps"]) == len(commands) and all(s["exit_code"] == 0 for s in out["steps"])
    out.update(ended=now(), total_s=total, all_ran=ok, target_s=TARGET_S, met=ok and total <= TARGET_S,
               provenance=provenance())
    print(f"the tour: {total:.0f} s in all, {'every step ran' if ok else 'a step FAILED'}; "
          f"target <= {TARGET_S} s: {'met' if out['met'] else 'missed'}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
