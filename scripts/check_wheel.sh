#!/usr/bin/env bash
# Build rtlm's wheel, install it (not editable) into a fresh venv and run it from a directory outside
# the checkout, so that nothing is imported or read from the source tree by accident: the package
# must carry every module and its reference data. CI runs this (.ci/run). About a minute.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
pip() { "$tmp/venv/bin/python" -m pip --disable-pip-version-check -q "$@"; }
echo "check-wheel: building the wheel" >&2
"$PY" -m pip --disable-pip-version-check -q wheel --no-deps . -w "$tmp/dist"
"$PY" -m venv "$tmp/venv"
pip install "torch==2.13.0"  # the local CPU build first, as scripts/setup.sh does
pip install "$tmp"/dist/rtlm-*.whl
cd "$tmp"  # outside the checkout
rtlm="$tmp/venv/bin/rtlm"
"$rtlm" --version
"$tmp/venv/bin/python" - <<'PY'
import rtlm_cli
assert "site-packages" in rtlm_cli.__file__, rtlm_cli.__file__  # the installed copy, not the source tree
PY
"$rtlm" serve-local --simulate --profile reference --policy fcfs,oracle --load 0.9 -n 500 --max-batch 4 \
  --out "$tmp/runs" --json > "$tmp/runs.json"
"$rtlm" serve-local --simulate --profile reference-64 --timing h200 --policy sjf-input --load 0.8 -n 200 --out "$tmp/h200"
"$rtlm" report "$tmp/runs" "$tmp/h200" reference --html "$tmp/report.html" > /dev/null
"$tmp/venv/bin/python" - "$tmp" <<'PY'
import json, sys
from pathlib import Path
runs = json.loads((Path(sys.argv[1]) / "runs.json").read_text())
assert [r["policy"] for r in runs] == ["fcfs", "oracle"] and all(r["completed"] == 500 for r in runs), runs
assert runs[1]["e2el_s"]["mean"] < runs[0]["e2el_s"]["mean"]  # the oracle beats FCFS near capacity
assert (Path(sys.argv[1]) / "report.html").stat().st_size > 10_000
PY
echo "check-wheel: the installed wheel runs outside the checkout" >&2
