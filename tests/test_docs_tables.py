"""The docs' measured tables are what their raw records say: each benchmark script's `--markdown
RECORD` regenerates its tables from the record kept in docs/bench/, and every row it prints must be
in the doc as printed (bold added by hand aside). A table edited by hand, or a record re-run without
its table, fails here."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TABLES = [  # script, record, the doc that shows its tables
    ("bench_predictor.py", "predictor.json", "research.md"),
    ("bench_serve.py", "serve-sim.json", "benchmarks.md"),
    ("bench_gateway_gain.py", "gateway-gain.json", "benchmarks.md"),
    ("bench_gateway_gain.py", "gateway-inflight.json", "benchmarks.md"),
    ("bench_sampled.py", "sampled-scheduling.json", "research.md"),
]


def rows(text: str) -> list[str]:
    """A text's table rows (separator lines aside), with Markdown bold taken off."""
    return [line.replace("**", "").strip() for line in text.splitlines()
            if line.startswith("|") and not set(line) <= set("|-: ")]


@pytest.mark.parametrize("script,record,doc", TABLES, ids=[f"{s}:{r}" for s, r, _ in TABLES])
def test_a_docs_table_is_what_its_record_says(script, record, doc):
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / script), "--markdown", str(ROOT / "docs" / "bench" / record)],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    made, shown = rows(done.stdout), set(rows((ROOT / "docs" / doc).read_text()))
    assert len(made) >= 5, done.stdout
    missing = [r for r in made if r not in shown]
    assert not missing, f"docs/{doc} lacks {len(missing)} of {len(made)} rows that {script} --markdown {record} prints, e.g. {missing[0]}"
