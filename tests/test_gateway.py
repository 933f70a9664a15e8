"""--dispatch gateway: rtlm's own queue in front of serving engines, at most K in flight per backend;
in the continuous-batching simulator and for real against fake OpenAI-compatible servers."""

import asyncio

import pytest
from helpers import FLAT, decided, one_line_error

from rtlm_cli.engines.openai import Client, ClientSettings
from rtlm_cli.formats.run import load_run
from rtlm_cli.serve.costmodel import CostModel
from rtlm_cli.serve.decide.backend import Backend
from rtlm_cli.serve.decide.core import DecisionCore
from rtlm_cli.serve.decide.offload import Offloader
from rtlm_cli.serve.decide.policies import make_policy
from rtlm_cli.serve.decide.request import Request
from rtlm_cli.serve.decide.slots import GATHER_MS, SlotQueue
from rtlm_cli.serve.live.streams import StreamDriver, run_gateway
from rtlm_cli.serve.sim.continuous import simulate_direct, simulate_gateway
from rtlm_cli.serve.sim.server import ServerLimits, SimulatedServer, StepCost
from rtlm_cli.testing import tokens_for


def flat(step_s: float) -> list[dict]:
    """Every step, prefill or decode, at any batch: ``step_s`` (an answer of n tokens takes n steps)."""
    return [{"batch": b, "context": c, "prefill_s": step_s, "decode_step_s": step_s} for b in (1, 64) for c in (16, 4096)]


def servers_for(backends, seqs=8):
    return {b.bid: SimulatedServer(ServerLimits(max_num_seqs=seqs), StepCost(b.cost), b.bid, b.name) for b in backends}


def setup(tables, slots, policy="sjf-input", offload=False, shed=False, gather_s=0.0):
    """A gateway of K = ``slots`` per backend over simulated engines priced by ``tables``."""
    backends = [Backend(i, f"b{i}", CostModel(t), inflight=slots) for i, t in enumerate(tables)]
    core = DecisionCore(make_policy(policy), backends, offload=offload, shed=shed)
    return SlotQueue(core, gather_s=gather_s), servers_for(backends)


def req(rid, arrival, tokens, prompt=50, unc=0.5, deadline=None, pred=None):
    cost = CostModel(FLAT)
    return Request(rid=rid, arrival_s=arrival, prompt_id=f"p{rid}", prompt=f"prompt {rid}", prompt_tokens=prompt,
                   predicted_tokens=float(pred or tokens), uncertainty=unc, true_tokens=tokens, deadline_s=deadline,
                   predicted_service_s=cost.service_s(prompt, pred or tokens))


def test_at_most_k_in_flight_and_rtlm_orders_what_waits():
    gateway, engines = setup([FLAT], slots=3)
    recs = simulate_gateway([req(i, 0.01 * i, 5 + (7 * i) % 40, prompt=20 + (13 * i) % 90) for i in range(40)],
                            gateway, engines)
    assert all(r["status"] == "finished" for r in recs)
    assert max(r["in_flight"] for r in recs) == 3  # what the engine held at each send: K, never more
    # rtlm's queue orders: of two requests waiting at a send, the shorter prompt (sjf-input) went first
    sent = sorted(recs, key=lambda r: (r["start_s"], r["rid"]))
    waited = 0
    for i, a in enumerate(sent):
        for b in sent[i + 1:]:
            if b["arrival_s"] < a["start_s"]:
                waited += 1
                assert (a["prompt_tokens"], a["rid"]) < (b["prompt_tokens"], b["rid"]) or a["start_s"] == b["start_s"]
    assert waited > 50  # the queue was deep enough for the order to matter


def test_fcfs_behind_a_gateway_of_k_max_num_seqs_is_the_engines_own_fcfs_request_by_request():
    # Same engine, arrival order, K = max_num_seqs: nothing may change, and no request may start
    # before it was sent, even while the engine is in the middle of a run of alike steps (an arrival
    # handed to an engine whose clock lags behind it starts at the arrival, not at the engine's clock)
    import random

    rng = random.Random(3)
    t, reqs = 0.0, []
    for i in range(300):
        t += rng.expovariate(1 / 0.09)
        reqs.append(req(i, t, rng.randint(2, 60), prompt=rng.randint(10, 400)))
    one = Backend(0, "engine", CostModel(FLAT), inflight=None)
    direct = simulate_direct(reqs, DecisionCore(make_policy("fcfs"), [one]), one, servers_for([one], 4)[0])
    k4 = Backend(0, "engine", CostModel(FLAT), inflight=4)
    behind = simulate_gateway(reqs, SlotQueue(DecisionCore(make_policy("fcfs"), [k4])), servers_for([k4], 4))
    assert all(r["start_s"] >= r["arrival_s"] for r in behind)
    assert [(r["start_s"], r["finish_s"]) for r in behind] == [(r["start_s"], r["finish_s"]) for r in direct]


def test_the_backend_that_frees_first_takes_the_next_request():
    # One slot each, a burst of 12 answers of 10 tokens: b0 takes 0.1 s a request, b1 0.27 s. Slots
    # free at 0.1 (b0), 0.2 (b0), 0.27 (b1), 0.3, 0.4, 0.5 (b0), 0.54 (b1), 0.6, 0.7, 0.8 (b0): each
    # takes the next request in FCFS order as it frees.
    gateway, engines = setup([flat(0.01), flat(0.027)], slots=1, policy="fcfs")
    recs = simulate_gateway([req(i, 0.0, 10) for i in range(12)], gateway, engines)
    assert [r["backend"] for r in recs] == ["b0", "b1", "b0", "b0", "b1", "b0", "b0", "b0", "b1", "b0", "b0", "b0"]


def mean_response(recs) -> float:
    return sum(r["finish_s"] - r["arrival_s"] for r in recs) / len(recs)


def test_offloading_to_a_slow_engine_only_under_congestion_and_only_what_saves_waiting():
    # b0 takes 0.01 s a token, b1 0.03 s, one slot each. A request that would wait behind b0 for
    # less than b1 would add stays for b0: b1 stays idle.
    gateway, engines = setup([flat(0.01), flat(0.03)], slots=1, policy="sjf-pred", offload=True)
    assert [r["backend"] for r in simulate_gateway([req(0, 0.0, 20), req(1, 0.01, 20)], gateway, engines)] == ["b0", "b0"]
    # A burst of 30 short answers (0.2 s on b0, 0.6 s on b1) and a long one (2 s on b0, 6 s on b1):
    # b1 takes short ones from deep enough in b0's queue that they finish no later there, and never
    # the long one, whose 4 s more on b1 would outweigh the 2 s it spares nobody behind it (it is
    # last in shortest-predicted-first order). The mean is no worse than first-free placement's
    # (which hands b1 the head of the queue) and far below b0 alone.
    burst = [req(i, 0.0, 20, unc=0.1) for i in range(30)] + [req(30, 0.05, 200, unc=0.9)]
    gateway, engines = setup([flat(0.01), flat(0.03)], slots=1, policy="sjf-pred", offload=True)
    recs = simulate_gateway(burst, gateway, engines)
    slow = [r["rid"] for r in sorted(recs, key=lambda r: r["start_s"]) if r["backend"] == "b1"]
    assert len(slow) >= 5 and 30 not in slow and slow[0] not in (0, 1, 2)
    first_free = simulate_gateway(burst, *setup([flat(0.01), flat(0.03)], slots=1, policy="sjf-pred"))
    alone = simulate_gateway(burst, *setup([flat(0.01)], slots=1, policy="sjf-pred"))
    assert mean_response(recs) <= mean_response(first_free) + 1e-9 < mean_response(alone) - 0.5


def test_offloading_takes_the_slow_engines_capacity_when_the_fast_one_alone_is_overloaded(monkeypatch):
    # 80 answers of 20 tokens every 0.15 s: 0.2 s of work each on b0, a load of 1.33 on it alone;
    # b1 is 10x slower (2 s a request). Waiting until a request would finish no later on b1 lets b0's
    # queue grow to ten first; read as overloaded, b1 takes work as soon as b0 is busy.
    arrivals = [req(i, 0.15 * i, 20) for i in range(80)]
    gateway, engines = setup([flat(0.01), flat(0.1)], slots=1, policy="sjf-pred", offload=True)
    needed = simulate_gateway(arrivals, gateway, engines)
    monkeypatch.setattr(Offloader, "OVERLOAD", float("inf"))  # never read as overloaded
    gateway, engines = setup([flat(0.01), flat(0.1)], slots=1, policy="sjf-pred", offload=True)
    only_paying = simulate_gateway(arrivals, gateway, engines)
    assert sum(r["backend"] == "b1" for r in needed) > sum(r["backend"] == "b1" for r in only_paying)
    assert mean_response(needed) < mean_response(only_paying)


def test_the_fast_sides_load_is_read_off_realised_lengths(monkeypatch):
    # Predictions half the true length (10 tokens expected, 20 realised): read off predictions, the
    # fast backend would look half loaded (0.67) and the slow one would take only what pays; scaled
    # by how the ended requests came out, the load reads 1.33 and the slow backend takes more, as it
    # does with exact predictions.
    def run(pred):
        arrivals = [req(i, 0.15 * i, 20, pred=pred) for i in range(80)]
        return simulate_gateway(arrivals, *setup([flat(0.01), flat(0.1)], slots=1, policy="sjf-pred", offload=True))

    def on_slow(recs):
        return sum(r["backend"] == "b1" for r in recs)

    exact, scaled = run(20), run(10)
    monkeypatch.setattr(Offloader, "length_bias", lambda self: 1.0)  # read off predictions alone
    unscaled = run(10)
    assert on_slow(unscaled) < on_slow(scaled) <= on_slow(exact)


def test_offloading_prices_the_slow_backend_at_the_concurrency_it_would_run_at():
    # b1's step slows with every request it holds (0.03 s x in flight: time-sliced, as a CPU engine
    # nearly is), b0 is fast with 2 slots. A burst of 20 answers of 20 tokens arriving one by one:
    # b1 takes a request once one waits behind enough of b0's queue (0.2 s each over 2 slots) to
    # finish no later on b1 at the concurrency it would then run at: 0.6 s alone (4 ahead: the 7th
    # request), 1.17 s as the second (10 ahead: the 14th), 1.74 s as the third, which the 16 that
    # ever wait (1.5 s ahead of the last) never reach. Priced alone, as a static worker is, b1 would
    # take a third and a fourth and serve them slowest of all.
    sliced = [{"batch": b, "context": c, "prefill_s": 0.03, "decode_step_s": 0.03 * b} for b in (1, 64) for c in (16, 4096)]
    backends = [Backend(0, "b0", CostModel(flat(0.01)), inflight=2), Backend(1, "b1", CostModel(sliced), inflight=4)]
    gateway = SlotQueue(DecisionCore(make_policy("sjf-pred"), backends, offload=True))
    recs = simulate_gateway([req(i, 0.0, 20) for i in range(20)], gateway, servers_for(backends))
    assert all(r["status"] == "finished" for r in recs)
    assert [r["rid"] for r in recs if r["backend"] == "b1" and r["start_s"] == 0.0] == [6, 13]


def test_shedding_records_requests_that_can_no_longer_meet_their_deadline():
    gateway, engines = setup([flat(0.01)], slots=1, policy="fcfs", shed=True)
    recs = simulate_gateway([req(i, 0.0, 50, deadline=1.2) for i in range(5)], gateway, engines)
    status = [r["status"] for r in recs]
    assert status[:2] == ["finished", "finished"] and set(status[2:]) == {"shed"}  # 0.5 s each: a third would end at 1.5
    assert all("deadline could no longer be met" in r["error"] for r in recs if r["status"] == "shed")


def by_batch(step_1: float, step_8: float) -> list[dict]:
    """Prefill 0.01 s; a decode step ``step_1`` s alone and ``step_8`` s at a batch of 8 (linear between)."""
    return [{"batch": b, "context": c, "prefill_s": 0.01, "decode_step_s": s} for b, s in ((1, step_1), (8, step_8))
            for c in (16, 4096)]


def test_shedding_prices_a_request_at_the_concurrency_it_joins():
    """101 tokens: 1.01 s alone, 2.21 s beside 4 others (a step of 0.022 s at 5): a 1.5 s deadline is
    met only on an empty backend."""
    backend = Backend(0, "b", CostModel(by_batch(0.01, 0.031)), inflight=8)
    core = DecisionCore(make_policy("fcfs"), [backend], shed=True)
    core.add_request(req(0, 0.0, 101, deadline=1.5), 0.0)
    assert [r.rid for r in core.schedule(backend, 0.0)] == [0] and not core.take_shed()  # alone: in time
    for rid in (1, 2, 3):
        core.add_request(req(rid, 0.0, 10), 0.0)  # no deadline: never shed
    core.add_request(req(4, 0.0, 101, deadline=1.5), 0.0)
    assert [r.rid for r in core.schedule(backend, 0.0)] == [1, 2, 3]
    assert [r.rid for r in core.take_shed()] == [4]  # it would run with 4 others: 2.21 s
    assert core.pace(backend) == 1.0  # nothing has finished


def test_shedding_reads_the_backends_pace_off_its_finished_requests():
    """A backend that runs its table's requests at twice their price: after PACE_MIN of them, a request
    that its table alone would serve in time is shed; the pace follows the backend back to its table."""
    from rtlm_cli.serve.decide.core import PACE_MIN, PACE_WINDOW

    backend = Backend(0, "b", CostModel(flat(0.01)), inflight=1)
    core = DecisionCore(make_policy("fcfs"), [backend], shed=True)
    now, rid = 0.0, 0

    def serve(took: float) -> None:  # one request of 50 tokens (priced 0.5 s), taking ``took`` of it
        nonlocal now, rid
        core.add_request(req(rid, now, 50), now)
        (r,) = core.schedule(backend, now)
        now += 0.5 * took
        core.update(backend, now, [r], [50])
        rid += 1

    for _ in range(PACE_MIN - 1):
        serve(2.0)
    assert core.pace(backend) == 1.0  # too few to read a pace off
    serve(2.0)
    assert core.pace(backend) == pytest.approx(2.0)
    core.add_request(req(rid, now, 50, deadline=now + 0.8), now)  # 0.5 s by the table, 1.0 s at this pace
    assert core.schedule(backend, now) == [] and [r.rid for r in core.take_shed()] == [rid]
    rid += 1
    for _ in range(PACE_WINDOW):
        serve(1.0)
    assert core.pace(backend) == pytest.approx(1.0)  # the window holds only the latest
    core.add_request(req(rid, now, 50, deadline=now + 0.8), now)
    assert [r.rid for r in core.schedule(backend, now)] == [rid] and not core.take_shed()
    core.update(backend, now, [req(rid, now, 50)], [None])  # failed: no pace read, nothing left behind
    assert not core._sent


def test_gateway_simulation_through_the_cli(run_cli, tmp_path):
    r = run_cli("serve-local", "--simulate", "--batching", "continuous", "--dispatch", "gateway", "--inflight", 4,
                "--profile", "reference", "--backend", "cpu=vllm-cpu", "--backend", "gpu=h200", "--offload",
                "--allow-static-timing", "--policy", "sjf-input", "--load", 0.9, "-n", 600, "--slo-factor", 3,
                "--shed", "--out", tmp_path / "gw", "--json")
    assert r.exit_code == 0, r.output
    meta, df = load_run(tmp_path / "gw")
    assert meta["dispatch"] == "gateway" and meta["inflight"] == 4 and set(df["backend"]) <= {"cpu", "gpu", ""}
    assert set(df["status"]) <= {"finished", "shed"} and meta["summary"]["shed"] == (df["status"] == "shed").sum()
    bad = run_cli("serve-local", "--simulate", "--profile", "reference", "--dispatch", "gateway", "--load", 0.5,
                  "--out", tmp_path / "x")
    assert bad.exit_code == 2 and "fronts serving engines" in one_line_error(bad)
    bad = run_cli("serve-local", "--simulate", "--batching", "continuous", "--allow-static-timing", "--profile",
                  "reference", "--dispatch", "gateway", "--shed", "--load", 0.5, "--out", tmp_path / "y")
    assert bad.exit_code == 2 and "--slo" in one_line_error(bad)


def test_the_real_gateway_makes_the_simulators_decisions(servers):
    # Two fake servers of fixed step times (30 and 60 ms a token, no queue of their own), two slots
    # each, a burst of 14 ordered by prompt length: the simulator, given the same step times, sends
    # the same requests to the same backends in the same order as the real gateway over HTTP. The
    # burst joins rtlm's queue whole in the gathering window before any of it is sent: the first
    # four out are the four shortest prompts, not the first four to arrive.
    fast, slow = servers(ms_per_token=30), servers(ms_per_token=60)
    prompts = [" ".join(["word"] * (3 + (7 * i) % 13)) + f" q{i}" for i in range(14)]
    reqs = [Request(rid=i, arrival_s=0.0, prompt_id=f"p{i}", prompt=p, prompt_tokens=30 + len(p.split()),
                    true_tokens=tokens_for(p, 64)[0]) for i, p in enumerate(prompts)]

    gather_s = GATHER_MS / 1000
    gateway, engines = setup([flat(0.03), flat(0.06)], slots=2, gather_s=gather_s)
    simulated = decided(gateway)  # the decisions themselves, read off the slot queue (no send-time windows)
    sim = simulate_gateway(reqs, gateway, engines)
    assert min(r["start_s"] for r in sim) == gather_s  # held for the window, then sent
    ends = sorted(r["finish_s"] for r in sim)
    # no two ends closer than 20 ms: wall-clock jitter (a few ms a request here) cannot reorder them
    assert min(b - a for a, b in zip(ends, ends[1:])) >= 0.02

    gateway, _ = setup([flat(0.03), flat(0.06)], slots=2, gather_s=gather_s)
    over_http = decided(gateway)
    real, interrupted = asyncio.run(real_gateway(reqs, gateway, (fast.url, slow.url)))
    assert not interrupted and all(r["status"] == "finished" for r in real)
    assert over_http == simulated and sum(map(len, simulated)) == len(reqs)
    assert {r["rid"]: r["backend"] for r in real} == {rid: {"b0": fast.url, "b1": slow.url}[b] for g in over_http
                                                     for rid, b in g}
    shortest = sorted(range(14), key=lambda i: (len(prompts[i].split()), i))[:4]
    assert sorted(rid for rid, _ in simulated[0]) == sorted(shortest)  # the window's first fill: the four shortest
    assert max(fast.peak_streams, slow.peak_streams) <= 2  # the servers' own count of open streams


async def real_gateway(requests, gateway, urls):
    async with Client(ClientSettings(urls=urls)) as client:
        await client.check()
        driver = StreamDriver(requests, gateway.core, client, dict(enumerate(urls)), 64)
        return await run_gateway(driver, gateway)


def test_real_gateway_k_in_flight_and_a_backend_killed_mid_run(servers, run_cli, tmp_path):
    a, b = servers(ms_per_token=20), servers(ms_per_token=20)
    common = ("serve-local", "--engine", "openai", "--url", a.url, "--url", b.url, "--dispatch", "gateway",
              "--profile", "reference-64", "--policy", "sjf-input", "--arrivals", "burst", "--no-dashboard")
    r = run_cli(*common, "--inflight", 3, "-n", 24, "--out", tmp_path / "k3")
    assert r.exit_code == 0, r.output
    df = load_run(tmp_path / "k3")[1]
    assert (df["status"] == "finished").all() and max(a.peak_streams, b.peak_streams) <= 3
    assert set(df["backend"]) == {a.url, b.url}
    # one backend dies when a request arrives after it answered 4: that request and the one in
    # flight there fail; with --retry-failed, one that failed before its first chunk goes once more
    # to the other (the one rule, upstream's Outcome.retryable); one cut mid-stream is recorded failed
    a, b = servers(ms_per_token=20, die_after=4), servers(ms_per_token=20)
    common = ("serve-local", "--engine", "openai", "--url", a.url, "--url", b.url, "--dispatch", "gateway",
              "--profile", "reference-64", "--policy", "sjf-input", "--arrivals", "burst", "--no-dashboard")
    r = run_cli(*common, "--inflight", 2, "-n", 30, "--retry-failed", "--out", tmp_path / "killed")
    assert r.exit_code == 0, r.output
    meta, df = load_run(tmp_path / "killed")
    failed = df[df["status"] != "finished"]
    assert meta["complete"] and len(failed) <= 1  # at most the one mid-stream there when it died
    assert (failed["failure"] == "backend_down").all() and (failed["backend"] == a.url).all()
    assert 4 <= (df["backend"] == a.url).sum() - len(failed) <= a.answered  # what the dead one finished, nothing after
    retried = df[df["retries"] == 1]
    assert 1 <= len(retried) <= 2 - len(failed) and (retried["backend"] == b.url).all()  # what it held when it died
    assert (retried["status"] == "finished").all()


def test_real_gateway_offloads_to_the_slow_server_only_under_congestion_and_sheds(servers):
    # A fast (10 ms a token) and a slow (20 ms) fake server, one slot each. A burst of 24 short
    # requests and, 50 ms later, one long one: the slow server takes work only once the fast one is
    # congested, short requests from deep enough in the queue to finish no later there, never the
    # long one (last in order, it would spare no one behind it what it loses there).
    fast, slow = servers(ms_per_token=10), servers(ms_per_token=20)
    words = {i: " ".join(["w"] * (2 + i % 3)) + f" r{i}" for i in range(24)}
    reqs = [req(i, 0.0, tokens_for(words[i], 64)[0], unc=0.1, pred=10) for i in range(24)]
    reqs = [Request(**{**r.__dict__, "prompt": words[r.rid]}) for r in reqs]
    long = Request(**{**req(24, 0.05, 30, unc=0.9, pred=30).__dict__, "prompt": "a long and uncertain one"})
    gateway, _ = setup([flat(0.01), flat(0.02)], slots=1, policy="sjf-pred", offload=True)
    recs, _ = asyncio.run(real_gateway(reqs + [long], gateway, (fast.url, slow.url)))
    on_slow = [r["rid"] for r in sorted(recs, key=lambda r: r["start_s"]) if r["backend"] == slow.url]
    assert all(r["status"] == "finished" for r in recs) and on_slow[0] != 0  # r0 went to the idle fast server
    assert len(on_slow) >= 3 and 24 not in on_slow
    # shedding: deadlines the queue cannot meet are dropped at the gateway, recorded, never served late.
    # Predictions are exact here, so a request sent is one the gateway expects to end in time: it ends
    # within what HTTP and the event loops add (0.25 s allowed: a loaded 2-core machine once took more
    # than 50 ms). Served in order without shedding, the last of the 24 would end about 4 s late.
    tight = [Request(**{**r.__dict__, "predicted_tokens": float(r.true_tokens), "deadline_s": 0.5}) for r in reqs]
    gateway, _ = setup([flat(0.01)], slots=1, policy="fcfs", shed=True)
    before = len(fast.started)
    recs, _ = asyncio.run(real_gateway(tight, gateway, (fast.url,)))
    shed = [r for r in recs if r["status"] == "shed"]
    done = [r for r in recs if r["status"] == "finished"]
    assert shed and done and all("deadline could no longer be met" in r["error"] for r in shed)
    assert all(r["finish_s"] <= r["deadline_s"] + 0.25 for r in done)
    assert len(fast.started) - before == len(done)  # the shed ones never reached the server


def test_a_request_at_an_idle_gateway_opens_a_gathering_window():
    gateway, _ = setup([FLAT], slots=1, policy="sjf-input", gather_s=0.02)
    long, short = req(0, 0.0, 5, prompt=90), req(1, 0.01, 5, prompt=10)
    out = gateway.arrive(long, 0.0)
    assert not out.sends and out.hold_until == gateway.holding_until == 0.02  # idle: held for the window
    assert not gateway.arrive(short, 0.01)  # joins the window
    assert [r.rid for r, _ in gateway.release(0.02).sends] == [1]  # the policy's first, not the first to come
    assert gateway.holding_until is None
    # busy (one in flight): no window, a freed slot fills at once
    assert not gateway.arrive(req(2, 0.03, 5, prompt=5), 0.03)  # K = 1 is taken: it waits
    assert [r.rid for r, _ in gateway.left(0, 0.05, short, 5).sends] == [2] and gateway.holding_until is None


def test_the_simulator_holds_an_idle_gateways_first_request_for_the_window():
    reqs = [req(0, 0.0, 5), req(1, 1.0, 5)]  # each reaches an idle gateway
    for gather_s in (0.0, 0.05):
        gateway, engines = setup([FLAT], slots=2, gather_s=gather_s)
        recs = simulate_gateway(reqs, gateway, engines)
        assert [r["start_s"] - r["arrival_s"] for r in recs] == pytest.approx([gather_s, gather_s])


def test_power_of_two_places_on_the_less_loaded_of_two_draws_never_beyond_k():
    backends = [Backend(i, f"b{i}", CostModel(flat(0.01)), inflight=2) for i in range(4)]
    gateway = SlotQueue(DecisionCore(make_policy("fcfs"), backends), placement="power-of-two")
    sends = []
    for i in range(10):
        sends += gateway.arrive(req(i, 0.0, 5), 0.0).sends
    assert len(sends) == 8 and len(gateway.core.queue) == 2  # 4 backends x K = 2; the rest wait
    assert [r.rid for r, _ in sends] == list(range(8))  # the order stays the policy's (FCFS here)
    assert all(b.outstanding == 2 for b in backends)
    # a freed slot of one backend: the next request lands on a free backend, whichever two were drawn
    more = gateway.left(1, 1.0, sends[0][0] if sends[0][1].bid == 1 else next(r for r, b in sends if b.bid == 1), 5).sends
    assert [(r.rid, b.bid) for r, b in more] == [(8, 1)]
    # seeded: the same arrivals are placed the same way; first-free fills backend 0 first instead
    again = SlotQueue(DecisionCore(make_policy("fcfs"), [Backend(i, f"b{i}", CostModel(flat(0.01)), inflight=2)
                                                     for i in range(4)]), placement="power-of-two")
    first = [b.bid for r, b in sum((again.arrive(req(i, 0.0, 5), 0.0).sends for i in range(3)), ())]
    assert first == [b.bid for _, b in sends[:3]] and first != [0, 0, 1]


def test_round_robin_places_in_turn_whatever_the_speeds():
    backends = [Backend(i, f"b{i}", CostModel(flat(0.01 * (i + 1))), inflight=2) for i in range(3)]
    gateway = SlotQueue(DecisionCore(make_policy("fcfs"), backends), placement="round-robin")
    sends = sum((gateway.arrive(req(i, 0.0, 5), 0.0).sends for i in range(7)), ())
    assert [b.bid for _, b in sends] == [0, 1, 2, 0, 1, 2] and len(gateway.core.queue) == 1


def test_least_loaded_spreads_requests_over_the_engines_fastest_first_among_equals():
    backends = [Backend(i, f"b{i}", CostModel(flat(0.01 * (2 - i))), inflight=2) for i in range(2)]  # b1 faster
    gateway = SlotQueue(DecisionCore(make_policy("fcfs"), backends), placement="least-loaded")
    sends = sum((gateway.arrive(req(i, 0.0, 5), 0.0).sends for i in range(3)), ())
    assert [(r.rid, b.bid) for r, b in sends] == [(0, 1), (1, 0), (2, 1)]  # first-free would give 1, 1, 0
    # b0 frees its one: the next goes there (1 in flight against b1's 2), not to the faster b1
    assert [(r.rid, b.bid) for r, b in gateway.left(0, 1.0, sends[1][0], 5).sends + gateway.arrive(req(3, 1.0, 5), 1.0).sends] \
        == [(3, 0)]
