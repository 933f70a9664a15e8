"""The simulator's output pinned: every request's times for fixed workloads and seeds.

A change that moves these numbers must say why; regenerate with
``RTLM_REGEN_GOLDEN=1 pytest tests/test_golden.py``.
"""

import gzip
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rtlm_cli.formats.run import load_run
from rtlm_cli.formats.timing import load_timing_table
from rtlm_cli.paths import source_path
from rtlm_cli.serve.costmodel import CostModel
from rtlm_cli.serve.decide.backend import Backend
from rtlm_cli.serve.decide.core import DecisionCore
from rtlm_cli.serve.decide.policies import make_policy
from rtlm_cli.serve.decide.request import Request
from rtlm_cli.serve.sim.static import simulate_batches

GOLDEN = Path(__file__).parent / "golden"
REFERENCE = source_path("reference")  # the shipped reference profile
H200 = source_path("h200")
COLUMNS = ["rid", "prompt_id", "arrival_s", "start_s", "first_token_s", "last_token_s", "finish_s", "worker",
           "batch_id", "batch_size", "prompt_tokens", "output_tokens", "predicted_tokens", "predicted_service_s",
           "deadline_s", "status"]


def check(name: str, df: pd.DataFrame) -> None:
    check_frame(name, df[COLUMNS])


def check_frame(name: str, df: pd.DataFrame) -> None:
    """``df`` as CSV equals the golden file ``name`` (written instead with RTLM_REGEN_GOLDEN=1)."""
    text = df.to_csv(index=False, float_format="%.9g")
    path = GOLDEN / f"{name}.csv.gz"
    if os.environ.get("RTLM_REGEN_GOLDEN") == "1":
        path.write_bytes(gzip.compress(text.encode(), mtime=0))
    assert path.is_file(), f"{path} is missing: regenerate with RTLM_REGEN_GOLDEN=1"
    assert text == gzip.decompress(path.read_bytes()).decode(), f"{name}: the decisions moved"


CLI_CASES = {
    "cli-fcfs-b1": ("fcfs", 1, ()),
    "cli-sjf-input-b4": ("sjf-input", 4, ()),
    "cli-oracle-b8": ("oracle", 8, ()),
    "cli-oracle-offload": ("oracle", 4, ("--worker", f"gpu={H200}", "--worker", f"cpu={REFERENCE}", "--offload")),
}


@pytest.mark.parametrize("name", sorted(CLI_CASES))
def test_cli_simulation_is_pinned(name, run_cli, tmp_path):
    policy, max_batch, extra = CLI_CASES[name]
    out = tmp_path / name
    r = run_cli("serve-local", "--simulate", "--profile", REFERENCE, "--policy", policy, "--load", 0.9,
                "-n", 1500, "--seed", 3, "--max-batch", max_batch, "--slo-factor", 4, *extra, "--out", out)
    assert r.exit_code == 0, r.output
    check(name, load_run(out)[1])


def hand_made(n: int = 600, seed: int = 11) -> list[Request]:
    """Seeded requests with a mixture predictor's fields, priced on the reference CPU table."""
    cost = CostModel.from_table(load_timing_table(REFERENCE))
    rng = np.random.default_rng(seed)
    out = []
    t = 0.0
    for i in range(n):
        t += float(rng.exponential(1.6))
        prompt = int(rng.integers(30, 700))
        p = float(rng.uniform())
        ended = float(rng.integers(5, 250))
        pred = p * 256 + (1 - p) * ended
        true = 256 if rng.uniform() < p else int(ended)
        out.append(Request(rid=i, arrival_s=round(t, 6), prompt_id=f"p{i}", prompt_tokens=prompt, predicted_tokens=pred,
                           p90_tokens=pred, capped_prob=p, ended_tokens=ended, uncertainty=float(rng.uniform()),
                           predicted_service_s=cost.service_s(prompt, pred), deadline_s=t + 60.0 if i % 3 == 0 else None,
                           true_tokens=true, true_service_s=cost.service_s(prompt, true), prediction_cost_s=1e-4))
    return out


@pytest.mark.parametrize("policy,max_batch", [("rtlm", 1), ("rtlm", 8), ("sjf-pred", 16), ("oracle", 8)])
def test_scheduler_simulation_is_pinned(policy, max_batch):
    table = load_timing_table(REFERENCE)
    backends = [Backend(0, "cpu", CostModel.from_table(table, "cpu"), static=True)]
    core = DecisionCore(make_policy(policy), backends, max_batch=max_batch, cap_tokens=256.0)
    check(f"lib-{policy}-b{max_batch}", pd.DataFrame(simulate_batches(hand_made(), core)))
