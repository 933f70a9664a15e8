"""The simulator's output pinned: every request's times for fixed workloads and seeds.

A change that moves these numbers must say why; regenerate with
``RTLM_REGEN_GOLDEN=1 pytest tests/test_golden.py``.
"""


import pandas as pd
import pytest
from helpers import H200, REFERENCE, check_frame, hand_made

from rtlm_cli.formats.run import load_run
from rtlm_cli.formats.timing import load_timing_table
from rtlm_cli.serve.costmodel import CostModel
from rtlm_cli.serve.decide.backend import Backend
from rtlm_cli.serve.decide.core import DecisionCore
from rtlm_cli.serve.decide.policies import make_policy
from rtlm_cli.serve.sim.static import simulate_batches

COLUMNS = ["rid", "prompt_id", "arrival_s", "start_s", "first_token_s", "last_token_s", "finish_s", "backend",
           "batch_id", "batch_size", "prompt_tokens", "output_tokens", "predicted_tokens", "predicted_service_s",
           "deadline_s", "status"]


def check(name: str, df: pd.DataFrame) -> None:
    check_frame(name, df[COLUMNS])


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


@pytest.mark.parametrize("policy,max_batch", [("rtlm", 1), ("rtlm", 8), ("sjf-pred", 16), ("oracle", 8)])
def test_scheduler_simulation_is_pinned(policy, max_batch):
    table = load_timing_table(REFERENCE)
    backends = [Backend(0, "cpu", CostModel.from_table(table, "cpu"), static=True)]
    core = DecisionCore(make_policy(policy), backends, max_batch=max_batch, cap_tokens=256.0)
    check(f"lib-{policy}-b{max_batch}", pd.DataFrame(simulate_batches(hand_made(), core)))
