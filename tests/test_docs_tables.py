"""The docs' measured tables are what their raw records say: each benchmark script's `--markdown
RECORD` regenerates its tables from the record kept in docs/bench/ (or from the shipped predictors'
own evaluation files), and every row it prints must be in the doc as printed (bold added by hand
aside). A table edited by hand, or a record re-run without its table, fails here. The scripts run in
this process (as ``python SCRIPT --markdown RECORD`` would, argv and stdout swapped in), which spares
a Python start and the imports for each of them."""

import contextlib
import io
import os
import runpy
import signal
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TABLES = [  # script, its --markdown arguments (records in docs/bench/, or shipped predictors), the doc that shows the tables
    ("bench/predictor.py", "docs/bench/predictor.json", "research.md"),
    ("bench/serve.py", "docs/bench/serve-sim.json", "benchmarks.md"),
    ("bench/gateway_gain.py", "docs/bench/gateway-gain.json", "benchmarks.md"),
    ("bench/gateway_gain.py", "docs/bench/gateway-inflight.json", "benchmarks.md"),
    ("bench/gateway_gain.py", "docs/bench/gateway-gain-2026-12-07.json", "benchmarks.md"),
    ("bench/continuous.py", "docs/bench/continuous-sim.json", "benchmarks.md"),
    ("bench/continuous.py", "docs/bench/continuous-accuracy.json", "benchmarks.md"),
    ("bench/continuous.py", "docs/bench/continuous-gateway.json", "benchmarks.md"),
    ("bench/continuous.py", "docs/bench/offload-fresh-seeds.json", "benchmarks.md"),
    ("bench/continuous.py", "docs/bench/shed-alone-0d3ff68.json", "benchmarks.md"),
    ("bench/continuous.py", "docs/bench/shed-priced.json", "benchmarks.md"),
    ("bench/oracle.py", "docs/bench/oracle.json", "benchmarks.md"),
    ("bench/writer.py", "docs/bench/writer.json", "benchmarks.md"),
    ("bench/ray_serve.py", "docs/bench/ray-serve.json", "benchmarks.md"),
    ("bench/gather.py", "docs/bench/gather.json", "benchmarks.md"),
    ("bench/gateway_hop.py", "docs/bench/gateway-hop.json docs/bench/gateway-hop-paced-2ms.json", "benchmarks.md"),
    ("bench/sampled.py", "docs/bench/sampled-scheduling.json", "research.md"),
    ("bench/sampled.py", "docs/bench/sampled-scheduling-512.json", "research.md"),
    ("research/distribution_fit.py", "reference-sampled", "research.md"),
    ("research/distribution_fit.py", "reference-sampled-512", "research.md"),
    ("research/distribution_fit.py", "docs/bench/distribution-prefill-512", "research.md"),
]


def rows(text: str) -> list[str]:
    """A text's table rows (separator lines aside), with Markdown bold taken off."""
    return [line.replace("**", "").strip() for line in text.splitlines()
            if line.startswith("|") and not set(line) <= set("|-: ")]


def markdown(script: str, records: list[str]) -> str:
    """What ``python scripts/SCRIPT --markdown RECORDS`` prints, run in this process from the project
    root; argv, sys.path, the working directory and the SIGTERM handler are put back after."""
    path = ROOT / "scripts" / script
    saved = sys.argv, list(sys.path), os.getcwd(), signal.getsignal(signal.SIGTERM)
    out = io.StringIO()
    try:
        sys.argv = [str(path), "--markdown", *records]
        os.chdir(ROOT)
        with contextlib.redirect_stdout(out):
            try:
                runpy.run_path(str(path), run_name="__main__")
            except SystemExit as e:
                assert e.code in (0, None), f"{script} --markdown exited {e.code}"
    finally:
        sys.argv, sys.path[:] = saved[0], saved[1]
        os.chdir(saved[2])
        signal.signal(signal.SIGTERM, saved[3])
    return out.getvalue()


@pytest.mark.parametrize("script,source,doc", TABLES, ids=[f"{s}:{r.split()[0]}" for s, r, _ in TABLES])
def test_a_docs_table_is_what_its_record_says(script, source, doc):
    printed = markdown(script, source.split())
    made, shown = rows(printed), set(rows((ROOT / "docs" / doc).read_text()))
    assert len(made) >= 3, printed  # a header and two rows at least
    missing = [r for r in made if r not in shown]
    assert not missing, f"docs/{doc} lacks {len(missing)} of {len(made)} rows that {script} --markdown {source} prints, e.g. {missing[0]}"
