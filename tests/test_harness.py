"""The test harness itself: a test that needs vLLM skips with its reason where vLLM is missing, and
fails when CI=true, so that CI proves the real-engine tests rather than skipping them."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).parent


@pytest.mark.parametrize("ci,outcome", [("", "skipped"), ("true", "error")])
def test_a_vllm_test_without_vllm_skips_or_fails_in_ci(ci, outcome):
    env = {**os.environ, "CI": ci, "RTLM_VLLM_PYTHON": str(TESTS / "no-such-python")}
    one = "test_vllm.py::test_direct_dispatch_priorities_reorder_a_burst"
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rsf", str(TESTS / one)],
                       capture_output=True, text=True, timeout=120, cwd=TESTS.parent, env=env)
    assert f"1 {outcome}" in r.stdout, r.stdout[-2000:]
    assert "the vllm engine" in r.stdout or "RTLM_VLLM_PYTHON" in r.stdout  # the reason is given
    assert r.returncode == (0 if outcome == "skipped" else 1)  # an error at setup fails the run
