"""Every path's decisions pinned: which request ran where, in which batch or send, and when.

Three simulated paths over 2,000 requests (static batches; a continuous-batching engine fed
directly; rtlm's gateway in front of two such engines) and three real ones over a short burst (the
hf executor's dispatcher on a table-priced fake engine with an injected clock; direct dispatch and
the gateway against fake OpenAI-compatible servers, as the servers saw it). Recorded before the
serving floor was restructured, and identical after it; a change that moves them says why.
Regenerate with ``RTLM_REGEN_GOLDEN=1 pytest tests/test_decisions.py``.
"""

import asyncio

import pandas as pd
import pytest
from helpers import GOLDEN, NoBoard, SyncWorkers, TableEngine, VirtualClock, check_frame, decided, workload

from rtlm_cli.engines.openai import Client, ClientSettings
from rtlm_cli.formats.timing import load_timing_table
from rtlm_cli.paths import source_path
from rtlm_cli.serve.costmodel import CostModel
from rtlm_cli.serve.decide.backend import Backend
from rtlm_cli.serve.decide.core import DecisionCore
from rtlm_cli.serve.decide.policies import make_policy
from rtlm_cli.serve.decide.request import Request
from rtlm_cli.serve.decide.slots import GATHER_MS, SlotQueue
from rtlm_cli.serve.live.streams import StreamDriver, run_direct, run_gateway
from rtlm_cli.serve.live.workers import run_batches
from rtlm_cli.serve.sim.continuous import simulate_direct, simulate_gateway
from rtlm_cli.serve.sim.server import ServerLimits, SimulatedServer, StepCost
from rtlm_cli.serve.sim.static import simulate_batches
from rtlm_cli.testing import tokens_for

TIMES = ["start_s", "first_token_s", "finish_s"]
FLAT1 = [{"batch": 1, "context": 16, "prefill_s": 0.01, "decode_step_s": 0.01}]


def table(name: str) -> CostModel:
    return CostModel.from_table(load_timing_table(source_path(name)), name)


def frame(records, extra=()) -> pd.DataFrame:
    return pd.DataFrame(records)[["rid", "backend", "batch_id", *TIMES, "status", *extra]]


# -- the three simulated paths, 2,000 requests each ------------------------------------------------
def test_simulated_static_batches():
    cpu, gpu = table("reference"), table("h200")
    backends = [Backend(0, "gpu", gpu, static=True), Backend(1, "cpu", cpu, static=True)]
    core = DecisionCore(make_policy("rtlm"), backends, max_batch=8, offload=True, cap_tokens=256.0)
    recs = simulate_batches(workload(2000, 21, 0.6, cpu), core)
    check_frame("decisions-sim-static", frame(recs))


@pytest.mark.parametrize("policy", ["rtlm", "sjf-pred", "fcfs"])
def test_simulated_continuous_direct(policy):
    cost = table("vllm-cpu")
    backend = Backend(0, "engine", cost, inflight=None)
    core = DecisionCore(make_policy(policy), [backend])
    server = SimulatedServer(ServerLimits(max_num_seqs=8), StepCost(cost))
    recs = simulate_direct(workload(2000, 22, 3.0, cost), core, backend, server)
    check_frame(f"decisions-sim-direct-{policy}", frame(recs, ["priority", "preemptions"]))


def test_simulated_gateway_offload_and_shed():
    cpu, gpu = table("vllm-cpu"), table("h200")
    backends = [Backend(0, "cpu", cpu, inflight=8), Backend(1, "gpu", gpu, inflight=8)]
    core = DecisionCore(make_policy("rtlm"), backends, offload=True, shed=True, cap_tokens=256.0)
    servers = {b.bid: SimulatedServer(ServerLimits(max_num_seqs=8), StepCost(b.cost), b.bid, b.name) for b in backends}
    recs = simulate_gateway(workload(2000, 23, 0.35, cpu, slack_s=12.0), SlotQueue(core), servers)
    check_frame("decisions-sim-gateway", frame(recs))


# -- the three real paths, a short burst each -----------------------------------------------------
def test_real_hf_executor_batches():
    """The hf executor's dispatcher (injected clock, table-priced fake engines): its batches, in order."""
    cpu, gpu = table("reference"), table("h200")
    reqs = [r for r in workload(60, 24, 0.3, cpu)]
    backends = [Backend(0, "gpu", gpu, static=True), Backend(1, "cpu", cpu, static=True)]
    core = DecisionCore(make_policy("rtlm"), backends, max_batch=4, offload=True, cap_tokens=256.0)
    clock = VirtualClock()
    engines = {b.bid: TableEngine(b.cost, reqs) for b in backends}
    recs, _ = run_batches(reqs, core, SyncWorkers(engines, clock), clock, NoBoard())
    check_frame("decisions-real-hf", frame(recs).sort_values(["batch_id", "rid"], kind="stable"))


def burst(n: int) -> list[Request]:
    prompts = [" ".join(["word"] * (3 + (7 * i) % 13)) + f" q{i}" for i in range(n)]
    return [Request(rid=i, arrival_s=0.0, prompt_id=f"p{i}", prompt=p, prompt_tokens=30 + len(p.split()),
                    predicted_tokens=tokens_for(p, 64)[0] + (5 * i) % 9 + i / 100,
                    true_tokens=tokens_for(p, 64)[0]) for i, p in enumerate(prompts)]


@pytest.mark.parametrize("policy", ["sjf-pred", "fcfs"])
def test_real_direct_dispatch(servers, policy):
    """Direct dispatch: the priority each request carried, and the order one-at-a-time server ran them
    (it starts nothing until the whole burst has arrived, so connection order cannot matter)."""
    reqs = burst(12)
    server = servers(ms_per_token=2, max_running=1, gate=len(reqs))

    backend = Backend(0, server.url, CostModel(FLAT1), inflight=None)
    core = DecisionCore(make_policy(policy), [backend])

    async def go():
        async with Client(ClientSettings(urls=(server.url,))) as client:
            await client.check()
            return await run_direct(StreamDriver(reqs, core, client, {0: server.url}, 64), backend)

    recs, _ = asyncio.run(go())
    prompt_rid = {r.prompt: r.rid for r in reqs}
    started = {prompt_rid[p]: i for i, p in enumerate(server.started)}
    df = pd.DataFrame([{"rid": r["rid"], "priority": r["priority"], "served": started[r["rid"]]} for r in recs])
    if policy == "fcfs":  # no priority: a server's own arrival order, which is the connections'
        assert df["priority"].isna().all()
        df = df.drop(columns="served")
    check_frame(f"decisions-real-direct-{policy}", df)


def test_real_gateway(servers):
    """The gateway over two fake servers of different speeds, two slots each: which request went to
    which server, in the order decided (one group per decision that sent anything, by id), read off
    the slot queue itself (``helpers.decided``), not off the send times."""
    fast, slow = servers(ms_per_token=30), servers(ms_per_token=60)
    reqs = burst(14)
    backends = [Backend(0, "b0", CostModel([{"batch": 1, "context": 16, "prefill_s": 0.03, "decode_step_s": 0.03}]), inflight=2),
                Backend(1, "b1", CostModel([{"batch": 1, "context": 16, "prefill_s": 0.06, "decode_step_s": 0.06}]), inflight=2)]
    core = DecisionCore(make_policy("sjf-pred"), backends)
    queue = SlotQueue(core, gather_s=GATHER_MS / 1000)  # the burst gathered whole
    log = decided(queue)

    async def go():
        async with Client(ClientSettings(urls=(fast.url, slow.url))) as client:
            await client.check()
            driver = StreamDriver(reqs, core, client, {0: fast.url, 1: slow.url}, 64)
            return await run_gateway(driver, queue)

    recs, _ = asyncio.run(go())
    assert all(r["status"] == "finished" for r in recs) and sum(map(len, log)) == len(reqs)
    assert {r["rid"]: r["backend"] for r in recs} == {rid: {"b0": fast.url, "b1": slow.url}[b] for g in log for rid, b in g}
    df = pd.DataFrame([{"send": i, "rid": rid, "backend": b} for i, g in enumerate(log) for rid, b in sorted(g)])
    assert max(fast.peak_streams, slow.peak_streams) <= 2
    check_frame("decisions-real-gateway", df)


def test_golden_files_exist():
    assert len(list(GOLDEN.glob("decisions-*.csv.gz"))) == 9
