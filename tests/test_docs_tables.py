"""The docs' measured tables are what their raw records say: each benchmark script's `--markdown
RECORD` regenerates its tables from the record kept in docs/bench/ (or from the shipped predictors'
own evaluation files), and every row it prints must be in the doc as printed (bold added by hand
aside). A table edited by hand, or a record re-run without its table, fails here. The scripts run in
this process (as ``python SCRIPT --markdown RECORD`` would, argv and stdout swapped in), which spares
a Python start and the imports for each of them."""

import contextlib
import io
import json
import os
import re
import runpy
import signal
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TABLES = [  # script, its --markdown arguments (records in docs/bench/, or shipped predictors), the doc that shows the tables
    ("bench/predictor.py", "docs/bench/predictor.json", "research.md"),
    ("bench/serve.py", "docs/bench/serve-sim.json", "research.md"),
    ("bench/serve.py", "docs/bench/aging.json", "research.md"),
    ("bench/gateway_gain.py", "docs/bench/gateway-gain.json", "benchmarks.md"),
    ("bench/gateway_gain.py", "docs/bench/gateway-inflight.json", "benchmarks.md"),
    ("bench/gateway_gain.py", "docs/bench/gateway-gain-2026-12-07.json", "benchmarks.md"),
    ("bench/continuous.py", "docs/bench/continuous-sim.json", "benchmarks.md"),
    ("bench/continuous.py", "docs/bench/offload-fresh-seeds.json", "benchmarks.md"),
    ("bench/continuous.py", "docs/bench/shed-priced.json", "benchmarks.md"),
    ("bench/oracle.py", "docs/bench/oracle.json", "benchmarks.md"),
    ("bench/writer.py", "docs/bench/writer.json", "benchmarks.md"),
    ("bench/ray_serve.py", "docs/bench/ray-serve.json", "benchmarks.md"),
    ("bench/gather.py", "docs/bench/gather.json", "benchmarks.md"),
    ("bench/gateway_hop.py", "docs/bench/gateway-hop.json docs/bench/gateway-hop-paced-2ms.json", "benchmarks.md"),
    ("bench/gateway_paired.py", "docs/bench/gateway-paired.json", "benchmarks.md"),
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


def stamped(record: dict) -> dict:
    """Whether a raw record names the command, the revision and the date that made it: at its top
    level, or in every entry of its ``runs`` (one per invocation of a resumable benchmark)."""
    def own(x: dict) -> dict:
        prov = x.get("provenance") or {}
        return {"command": bool(x.get("command")),
                "revision": bool(x.get("git_revision") or prov.get("git_revision") or x.get("revisions")),
                "date": bool(x.get("started") or x.get("date"))}

    top = own(record)
    runs = [r for r in record.get("runs") or [] if isinstance(r, dict)]
    return {k: top[k] or (bool(runs) and all(own(r)[k] for r in runs)) for k in top}


def test_every_raw_record_names_its_command_revision_and_date():
    records = sorted((ROOT / "docs" / "bench").glob("*.json"))
    assert len(records) >= 20
    lacking = {p.name: [k for k, ok in stamped(json.loads(p.read_text())).items() if not ok] for p in records}
    lacking = {name: keys for name, keys in lacking.items() if keys}
    assert not lacking, f"raw records without their command, revision or date: {lacking}"


def test_every_record_the_results_pages_link_exists_and_every_record_is_linked():
    pages = "".join((ROOT / "docs" / page).read_text() for page in ("benchmarks.md", "research.md"))
    linked = set(re.findall(r"\(bench/([\w.-]+\.json)\)", pages))
    kept = {p.name for p in (ROOT / "docs" / "bench").glob("*.json")}
    assert linked <= kept, f"linked but not kept: {sorted(linked - kept)}"
    assert kept <= linked, f"kept but cited by no results page (retire them: git keeps them): {sorted(kept - linked)}"


def slugs(markdown_text: str) -> set[str]:
    """GitHub's anchors for a page's headings: lower case, punctuation but hyphens dropped, spaces
    to hyphens (a repeated heading gets -1, -2, ...)."""
    out, seen = set(), {}
    for title in re.findall(r"^#{1,6} (.+)$", markdown_text, re.M):
        slug = re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def test_every_link_to_a_section_of_a_page_finds_it():
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    broken = []
    for page in pages:
        for target, anchor in re.findall(r"\]\(([\w./-]*\.md)?#([\w-]+)\)", page.read_text()):
            path = (page.parent / target) if target else page
            if not path.is_file() or anchor not in slugs(path.read_text()):
                broken.append(f"{page.relative_to(ROOT)} -> {target or page.name}#{anchor}")
    assert not broken, broken
