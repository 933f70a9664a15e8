"""The real executor's dispatcher against the simulator, with the clock injected (no wall clock):
given an engine whose batches take what the timing table says, it makes the simulator's batches in
the simulator's order. Also its failure handling, decided by the test (not by chance)."""


import pytest
from helpers import CPU, GPU, NoBoard, SyncWorkers, TableEngine, VirtualClock, hand_made

from rtlm_cli.serve.costmodel import CostModel
from rtlm_cli.serve.decide.backend import Backend
from rtlm_cli.serve.decide.core import DecisionCore
from rtlm_cli.serve.decide.policies import POLICIES, make_policy
from rtlm_cli.serve.live.workers import run_batches
from rtlm_cli.serve.sim.static import simulate_batches


def batches(records):
    out = {}
    for r in records:
        out.setdefault(r["batch_id"], (r["backend"], r["start_s"], []))[2].append(r["rid"])
    return [(bid, w, s, sorted(m)) for bid, (w, s, m) in sorted(out.items())]


def core(policy, tables, max_batch):
    backends = [Backend(i, f"w{i}", CostModel(t), static=True) for i, t in enumerate(tables)]
    return DecisionCore(make_policy(policy), backends, max_batch=max_batch, offload=len(tables) > 1, cap_tokens=256.0)


@pytest.mark.parametrize("policy", sorted(POLICIES.names()))
@pytest.mark.parametrize("max_batch,tables", [(1, (CPU,)), (8, (CPU,)), (4, (GPU, CPU))])
def test_the_executor_makes_the_simulators_batches_in_its_order(policy, max_batch, tables):
    requests = hand_made(n=300, seed=5)
    sim = simulate_batches(requests, core(policy, tables, max_batch))
    clock = VirtualClock()
    c = core(policy, tables, max_batch)
    engines = {b.bid: TableEngine(b.cost, requests) for b in c.backends}
    real, interrupted = run_batches(requests, c, SyncWorkers(engines, clock), clock, NoBoard())
    assert not interrupted and len(batches(sim)) > 20
    assert batches(real) == batches(sim)
    for a, b in zip(real, sim):  # and every request's first and last token at the same instants
        assert (a["first_token_s"], a["last_token_s"], a["finish_s"]) == (b["first_token_s"], b["last_token_s"], b["finish_s"])


def test_a_failing_batch_is_recorded_failed_and_the_run_goes_on():
    requests = hand_made(n=120, seed=2)
    doomed = {requests[i].prompt_id for i in (3, 40, 77)}  # chosen here, not by the prompts' wording
    clock = VirtualClock()
    c = core("rtlm", (CPU,), 4)
    real, _ = run_batches(requests, c, SyncWorkers({0: TableEngine(c.backends[0].cost, requests, doomed)}, clock),
                          clock, NoBoard())
    failed = [r for r in real if r["status"] == "failed"]
    by_batch = {}
    for r in real:
        by_batch.setdefault(r["batch_id"], []).append(r)
    assert {r["prompt_id"] for r in failed} >= doomed
    # a batch fails whole, and only a batch holding a doomed prompt fails
    assert all(any(m["prompt_id"] in doomed for m in by_batch[r["batch_id"]]) for r in failed)
    assert all(r["error"] == "RuntimeError: boom" and r["output_tokens"] == 0 for r in failed)
    finished = [r for r in real if r["status"] == "finished"]
    assert len(finished) + len(failed) == len(requests) and len(finished) >= len(requests) - 3 * 4
