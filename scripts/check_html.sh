#!/usr/bin/env bash
# Open an rtlm HTML report in headless Chromium (Debian package `chromium`) and save a screenshot,
# to check that the page renders with its embedded figures.
# Usage: bash scripts/check_html.sh REPORT.html SCREENSHOT.png
set -euo pipefail
html=$(realpath "$1"); png=$(realpath -m "$2")
command -v chromium >/dev/null || { echo "error: chromium is not installed: apt-get install chromium" >&2; exit 2; }
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking \
  --disable-component-update --disable-sync --user-data-dir="$profile" --window-size=1280,2400 \
  --screenshot="$png" "file://$html" >/dev/null 2>&1
test -s "$png" && echo "screenshot: $png ($(stat -c %s "$png") bytes)"
