"""The results page's headline table is what its raw data says: regenerated from
docs/bench/headline.json (written by scripts/docs_report.py with the command, date, machine and
revision that made it) by the script's own function, it must equal the table on the page
(docs/benchmarks.md)."""

import importlib.util
import json
import re
from pathlib import Path

ROOT = Path(__file__).parent.parent


def test_the_headline_table_is_regenerated_from_its_raw_runs():
    spec = importlib.util.spec_from_file_location("docs_report", ROOT / "scripts" / "docs_report.py")
    docs_report = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(docs_report)
    raw = json.loads((ROOT / "docs" / "bench" / "headline.json").read_text())
    assert raw["command"].startswith("scripts/docs_report.py") and raw["git_revision"] and raw["started"]
    table = re.search(r"<!-- headline:start -->\n(.*?)<!-- headline:end -->", (ROOT / docs_report.RESULTS_PAGE).read_text(),
                      re.S)
    assert table.group(1) == docs_report.headline_markdown(raw)
    assert all(a["draws"] >= 3 for a in raw["report"]["across_seeds"])  # every figure has its interval
