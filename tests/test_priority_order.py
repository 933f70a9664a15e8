"""Every mode serves the policy's order under either engine priority order, and direct dispatch's
priorities come from the decision core.

One burst of requests with distinct predicted lengths, one place to run at a time (one worker and
batches of one; an engine running one request; a gateway with K = 1), the policy sjf-pred: each
mode must serve the shortest prediction first whether its engine runs lower priorities first
(vLLM) or higher ones first (SGLang). Before the serving floor's fix the simulated engine always
served the lowest value first, so ``--priority-order higher-first`` reversed the policy there.
"""

import asyncio

import pytest
from helpers import NoBoard, SyncWorkers, TableEngine, VirtualClock

from rtlm_cli.engines.openai import Client, ClientSettings
from rtlm_cli.serve.costmodel import CostModel
from rtlm_cli.serve.decide.backend import Backend
from rtlm_cli.serve.decide.core import PRIORITY_ORDERS, DecisionCore
from rtlm_cli.serve.decide.policies import make_policy
from rtlm_cli.serve.decide.request import Request
from rtlm_cli.serve.decide.slots import GATHER_MS, SlotQueue
from rtlm_cli.serve.live.streams import StreamDriver, run_direct, run_gateway
from rtlm_cli.serve.live.workers import run_batches
from rtlm_cli.serve.mode import Mode
from rtlm_cli.serve.sim.continuous import simulate_direct, simulate_gateway
from rtlm_cli.serve.sim.server import ServerLimits, SimulatedServer, StepCost
from rtlm_cli.serve.sim.static import simulate_batches
from rtlm_cli.testing import FakeOpenAI, tokens_for

FLAT = CostModel([{"batch": b, "context": c, "prefill_s": 0.01, "decode_step_s": 0.002} for b in (1, 8) for c in (16, 4096)])
N = 8
MODES = [("simulated", "static", "batches"), ("simulated", "continuous", "direct"),
         ("simulated", "continuous", "gateway"), ("real", "static", "batches"),
         ("real", "continuous", "direct"), ("real", "continuous", "gateway")]


def burst() -> list[Request]:
    """N requests at t = 0, predicted lengths in an order unlike the ids' (rid 1 shortest, then 6, 3, 0, ...)."""
    prompts = [f"say {' '.join(['w'] * (1 + i))} r{i}" for i in range(N)]
    preds = [(5 * i + 3) % N * 10.0 + 5.0 for i in range(N)]  # 35, 5, 55, 25, 75, 45, 15, 65
    return [Request(rid=i, arrival_s=0.0, prompt_id=f"p{i}", prompt=p, prompt_tokens=30 + len(p.split()),
                    predicted_tokens=preds[i], true_tokens=tokens_for(p, 64)[0]) for i, p in enumerate(prompts)]


def served_order(mode: Mode, order: str, requests: list[Request], fake) -> list[int]:
    """The ids in the order they started running on the one place to run."""
    static = mode.batching == "static"
    backend = Backend(0, "b0", FLAT, static=static, inflight={"batches": 1, "direct": None, "gateway": 1}[mode.dispatch])
    core = DecisionCore(make_policy("sjf-pred"), [backend], priority_order=order)
    if mode.simulated:
        server = SimulatedServer(ServerLimits(max_num_seqs=1), StepCost(FLAT), priority_order=order)
        if mode.dispatch == "batches":
            recs = simulate_batches(requests, core)
        elif mode.dispatch == "direct":
            recs = simulate_direct(requests, core, backend, server)
        else:
            recs = simulate_gateway(requests, SlotQueue(core, gather_s=GATHER_MS / 1000), {0: server})
        return [r["rid"] for r in sorted(recs, key=lambda r: (r["start_s"], r["first_token_s"]))]
    if static:
        clock = VirtualClock()
        recs, _ = run_batches(requests, core, SyncWorkers({0: TableEngine(FLAT, requests)}, clock), clock, NoBoard())
        return [r["rid"] for r in sorted(recs, key=lambda r: r["start_s"])]
    server = fake(ms_per_token=2, max_running=1, gate=N if mode.dispatch == "direct" else 0, priorities=order)

    async def go():
        async with Client(ClientSettings(urls=(server.url,))) as client:
            await client.check()
            driver = StreamDriver(requests, core, client, {0: server.url}, 64)
            return await (run_direct(driver, backend) if mode.dispatch == "direct" else run_gateway(driver, SlotQueue(core, gather_s=GATHER_MS / 1000)))

    recs, interrupted = asyncio.run(go())
    assert not interrupted and all(r["status"] == "finished" for r in recs)
    by_prompt = {r.prompt: r.rid for r in requests}
    return [by_prompt[p] for p in server.started]


@pytest.fixture
def fake():
    made = []
    yield lambda **kw: made.append(FakeOpenAI(**kw)) or made[-1]
    for s in made:
        s.close()


@pytest.mark.parametrize("order", PRIORITY_ORDERS)
@pytest.mark.parametrize("where,batching,dispatch", MODES)
def test_every_mode_serves_the_policys_order(where, batching, dispatch, order, fake):
    mode = Mode(where, batching, dispatch)
    assert Mode.resolve(where == "simulated", batching, dispatch, "openai" if batching == "continuous" and where == "real"
                        else "hf") == mode  # one of the six modes the options can name
    requests = burst()
    shortest_first = [r.rid for r in sorted(requests, key=lambda r: r.predicted_tokens)]
    assert shortest_first != list(range(N))  # arrival order would not pass
    assert served_order(mode, order, requests, fake) == shortest_first


class StubCore(DecisionCore):
    """The decision core with another priority for each request: 100 + its id."""

    def priority(self, r: Request) -> int | None:
        return 100 + r.rid


@pytest.mark.parametrize("where", ["simulated", "real"])
def test_direct_dispatch_sends_the_cores_priorities(where, fake):
    requests = burst()
    backend = Backend(0, "b0", FLAT, inflight=None)
    for core_type in (DecisionCore, StubCore):
        core = core_type(make_policy("sjf-pred"), [backend])
        expected = {r.rid: core.priority(r) for r in requests}
        if where == "simulated":
            server = SimulatedServer(ServerLimits(max_num_seqs=1), StepCost(FLAT))
            sent = {r["rid"]: r["priority"] for r in simulate_direct(requests, core, backend, server)}
        else:
            server = fake(ms_per_token=1, max_running=1, gate=N)

            async def go():
                async with Client(ClientSettings(urls=(server.url,))) as client:
                    await client.check()
                    return await run_direct(StreamDriver(requests, core, client, {0: server.url}, 64), backend)

            asyncio.run(go())
            by_prompt = {r.prompt: r.rid for r in requests}  # what the server was sent
            sent = {by_prompt[b["messages"][0]["content"]]: b.get("priority") for b in server.bodies}
        assert sent == expected
        if core_type is StubCore:
            assert set(sent.values()) == {100 + i for i in range(N)}  # not the policy's keys: the stub's
