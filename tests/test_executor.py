"""The real executor's dispatcher against the simulator, with the clock injected (no wall clock):
given an engine whose batches take what the timing table says, it makes the simulator's batches in
the simulator's order. Also its failure handling, decided by the test (not by chance)."""

import heapq

import pytest
from test_golden import hand_made
from test_scheduling import CPU, GPU

from rtlm_cli.engines.base import BatchResult, Generation
from rtlm_cli.serve.costmodel import CostModel
from rtlm_cli.serve.decide.backend import Backend
from rtlm_cli.serve.decide.core import DecisionCore
from rtlm_cli.serve.decide.policies import POLICIES, make_policy
from rtlm_cli.serve.live.workers import run_batches
from rtlm_cli.serve.sim.static import simulate_batches


class VirtualClock:
    """Time jumps to the next finished batch or the next arrival, whichever comes first (a batch
    finishing at an arrival's instant is delivered first, as the simulator orders them)."""

    def __init__(self):
        self.t, self.heap, self.seq = 0.0, [], 0

    def now(self) -> float:
        return self.t

    def finish_at(self, t: float, item) -> None:
        heapq.heappush(self.heap, (t, self.seq, item))
        self.seq += 1

    def next_result(self, until):
        if self.heap and (until is None or self.heap[0][0] <= until):
            self.t, _, item = heapq.heappop(self.heap)
            return item
        assert until is not None, "nothing runs and nothing will arrive, yet requests are unfinished"
        self.t = until
        return None


class TableEngine:
    """Generates each request's true length in the time a worker's timing table gives the batch."""

    def __init__(self, cost: CostModel, requests, fail=()):
        self.cost, self.fail = cost, set(fail)
        self.by_prompt = {r.prompt_id: r for r in requests}

    def generate(self, batch) -> BatchResult:
        if self.fail & {r.prompt_id for r in batch}:
            raise RuntimeError("boom")
        true = [r.true_tokens for r in batch]
        ttft, finishes, end = self.cost.batch_times([r.prompt_tokens for r in batch], true)
        return BatchResult([Generation(r.prompt_tokens, n, n < 256, ttft, f) for r, n, f in zip(batch, true, finishes)],
                           wall_s=end)


class SyncWorkers:
    """Runs a batch at once and tells the virtual clock when it finishes."""

    def __init__(self, engines: dict, clock: VirtualClock):
        self.engines, self.clock = engines, clock

    def submit(self, bid, batch):
        try:
            res = self.engines[bid].generate(batch)
            self.clock.finish_at(self.clock.now() + res.wall_s, (bid, batch, res, None))
        except RuntimeError as e:
            self.clock.finish_at(self.clock.now() + 0.5, (bid, batch, None, f"RuntimeError: {e}"))


class NoBoard:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def update(self, *args):
        pass


def batches(records):
    out = {}
    for r in records:
        out.setdefault(r["batch_id"], (r["worker"], r["start_s"], []))[2].append(r["rid"])
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
