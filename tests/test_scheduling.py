"""Policies, consolidation, offloading and the static simulator, on hand-made requests (no model)."""

import dataclasses
import math

import pytest
from helpers import CPU, GPU
from hypothesis import given, settings
from hypothesis import strategies as st

from rtlm_cli.errors import RtlmError
from rtlm_cli.serve.costmodel import CostModel
from rtlm_cli.serve.decide.backend import Backend
from rtlm_cli.serve.decide.consolidate import Consolidator
from rtlm_cli.serve.decide.core import DecisionCore
from rtlm_cli.serve.decide.policies import POLICIES, make_policy
from rtlm_cli.serve.decide.request import Request
from rtlm_cli.serve.sim.static import simulate_batches


def req(rid, arrival=0.0, pred=100, true=None, prompt=50, unc=0.5, deadline=None):
    cost = CostModel(CPU)
    true = true if true is not None else pred
    return Request(rid=rid, arrival_s=arrival, prompt_id=f"p{rid}", prompt_tokens=prompt, predicted_tokens=pred,
                   p90_tokens=pred, uncertainty=unc, predicted_service_s=cost.service_s(prompt, pred),
                   deadline_s=deadline, true_tokens=true, true_service_s=cost.service_s(prompt, true))


def sched(policy="fcfs", workers=(CPU,), **kw):
    bs = [Backend(i, f"w{i}", CostModel(t), static=True) for i, t in enumerate(workers)]
    return DecisionCore(make_policy(policy), bs, **kw), bs


def order(policy, reqs, **kw):
    """The batches one worker runs, in order, for requests all waiting at t = 10."""
    s, (w,) = sched(policy, **kw)
    for r in reqs:
        s.add_request(r, r.arrival_s)
    out = []
    while batch := s.schedule(w, 10.0):
        out.append([r.rid for r in batch])
        s.update(w, 10.0, batch)
    return out


QUEUE = [req(0, 0.0, pred=300, true=50, prompt=10), req(1, 0.1, pred=20, true=400, prompt=500),
         req(2, 0.2, pred=100, true=100, prompt=100)]


def test_policy_orderings_on_a_hand_made_queue():
    assert order("fcfs", QUEUE) == [[0], [1], [2]]
    assert order("sjf-input", QUEUE) == [[0], [2], [1]]
    assert order("sjf-pred", QUEUE) == [[1], [2], [0]]
    assert order("oracle", QUEUE) == [[0], [2], [1]]
    assert order("rtlm", QUEUE) == [[1], [2], [0]]


def test_oracle_orders_by_true_length_then_prompt_and_its_variants_by_their_keys():
    # both run to the same cap; the shorter prompt breaks the tie, whatever came first
    capped_long_prompt, capped_short_prompt = req(0, 0.0, true=256, prompt=900), req(1, 0.1, true=256, prompt=40)
    assert order("oracle", [capped_long_prompt, capped_short_prompt]) == [[1], [0]]
    assert order("oracle-length", [capped_long_prompt, capped_short_prompt]) == [[0], [1]]  # arrival breaks it
    # a shorter answer goes first even behind a far longer prompt; priced at batch 1, the prompt's
    # prefill can outweigh the answer (oracle-service)
    short_answer_long_prompt, long_answer_short_prompt = req(0, 0.0, true=20, prompt=3000), req(1, 0.0, true=21, prompt=10)
    assert order("oracle", [long_answer_short_prompt, short_answer_long_prompt]) == [[0], [1]]
    service = order("oracle-service", [long_answer_short_prompt, short_answer_long_prompt])
    assert service == [[1], [0]]


def test_rtlm_uncertainty_and_aging():
    certain, unsure = req(0, 0.0, pred=100, unc=0.0), req(1, 0.0, pred=100, unc=1.0)
    assert order("rtlm", [unsure, certain]) == [[0], [1]]
    # aging: a long request goes before a short one that arrives more than w x (its inflated
    # service - the short one's) later, and after one arriving sooner (w = 512, u = 0.5)
    old_long = req(0, 0.0, pred=200)
    lead = 512 * (old_long.predicted_service_s * 1.25 - req(1, pred=10).predicted_service_s * 1.25)
    assert order("rtlm", [old_long, req(1, lead + 1.0, pred=10)]) == [[0], [1]]
    assert order("rtlm", [old_long, req(1, lead - 1.0, pred=10)]) == [[1], [0]]


def test_rtlm_deadline_slack_wins():
    relaxed, urgent = req(0, 0.0, pred=10), req(1, 0.0, pred=300, deadline=13.0)
    assert order("rtlm", [relaxed, urgent]) == [[1], [0]]


def test_unknown_policy_did_you_mean():
    with pytest.raises(RtlmError, match="did you mean 'rtlm'"):
        make_policy("rtml")
    assert set(POLICIES.names()) == {"fcfs", "sjf-input", "sjf-pred", "rtlm", "oracle", "oracle-service",
                                    "oracle-length", "oracle-mean", "rtlm-dist", "tail"}


def test_consolidation_groups_alike_lengths():
    reqs = [req(i, 0.0, pred=p) for i, p in enumerate([100, 400, 110, 390, 95, 405])]
    batches = order("sjf-pred", reqs, max_batch=3)
    assert [sorted(b) for b in batches] == [[0, 2, 4], [1, 3, 5]]
    # fcfs batches in arrival order, alike or not
    assert order("fcfs", reqs, max_batch=3) == [[0, 1, 2], [3, 4, 5]]


def test_consolidation_avoids_padding_to_a_long_prompt():
    # equal predicted lengths: the head (shortest) joins the short prompts, not the 900-token one
    reqs = [req(0, 0.0, pred=100, prompt=40), req(1, 0.0, pred=101, prompt=900),
            req(2, 0.0, pred=102, prompt=60), req(3, 0.0, pred=103, prompt=50)]
    assert [sorted(b) for b in order("sjf-pred", reqs, max_batch=3)][0] == [0, 2, 3]


def test_consolidation_runs_the_cheapest_batch_per_member_among_the_first_heads(monkeypatch):
    # The shortest predicted answer comes with a 1,000-token prompt: a batch led by it pads every
    # member's prefill to 1,000 tokens. The batch of the three short prompts behind it is cheaper
    # per member, so it runs first; the long prompt follows alone.
    reqs = [req(0, 0.0, pred=100, prompt=1000), req(1, 0.0, pred=101, prompt=40),
            req(2, 0.0, pred=102, prompt=40), req(3, 0.0, pred=103, prompt=40)]
    assert [sorted(b) for b in order("sjf-pred", reqs, max_batch=3)] == [[1, 2, 3], [0]]
    monkeypatch.setattr(Consolidator, "HEADS", 1)  # the head always leads: it takes two short prompts
    assert [sorted(b) for b in order("sjf-pred", reqs, max_batch=3)] == [[0, 1, 2], [3]]


def mix(rid, p, ended):
    """A request from a mixture predictor: P(capped at 256) and its length if it ends."""
    return dataclasses.replace(req(rid, 0.0, pred=p * 256 + (1 - p) * ended), capped_prob=p, ended_tokens=ended)


def test_consolidation_prices_a_mixture_batch_by_its_expected_longest_answer():
    # B's expected length (77.5) is a hair below A's (78), but B runs to the 256-token cap 30% of
    # the time: with the head it makes a batch whose expected longest answer is 126 tokens, A 87.
    head, a, b = mix(0, 0.05, 60.0), mix(1, 0.0, 78.0), mix(2, 0.3, 1.0)
    assert order("sjf-pred", [head, a, b], max_batch=2, cap_tokens=256)[0] == [0, 1]
    assert order("sjf-pred", [head, a, b], max_batch=2)[0] == [0, 2]  # by predictions alone


def test_consolidation_admits_a_member_only_while_it_pays_its_way():
    # A batch likely to end early (P(capped) 0.05) keeps out a request 60% likely to run to the cap:
    # joining would make both wait for an expected 174 tokens instead of 53, (1 + 1) x 121 tokens
    # of waiting against 221 for a batch of its own kind. A batch likely to run to the cap anyway
    # (0.7) takes it: the expected longest answer grows by 49 tokens only.
    assert order("sjf-pred", [mix(0, 0.05, 40.0), mix(1, 0.6, 40.0)], max_batch=2, cap_tokens=256) == [[0], [1]]
    assert order("sjf-pred", [mix(0, 0.7, 40.0), mix(1, 0.75, 40.0)], max_batch=2, cap_tokens=256) == [[0, 1]]


def test_consolidation_stops_when_a_member_would_cost_more_than_it_gains():
    # joining a 10-token request to a 500-token one makes everyone wait for the long one
    reqs = [req(0, 0.0, pred=10), req(1, 0.0, pred=500)]
    assert order("sjf-pred", reqs, max_batch=8) == [[0], [1]]


def test_offloading_sends_long_uncertain_requests_to_the_slow_worker_only_under_congestion():
    s, (gpu, cpu) = sched("rtlm", workers=(GPU, CPU), offload=True)
    s.add_request(req(0, 0.0, pred=50), 0.0)
    assert s.schedule(cpu, 0.0) == []  # not congested: the CPU stays idle
    assert [r.rid for r in s.schedule(gpu, 0.0)] == [0]
    for i in range(1, 40):
        s.add_request(req(i, 0.0, pred=400 if i == 7 else 100, unc=0.9 if i == 7 else 0.1), 0.0)
    assert [r.rid for r in s.schedule(cpu, 0.0)] == [7]  # the longest, most uncertain one
    assert s.schedule(gpu, 0.0) == []  # busy with its batch until it is told the batch left


def test_a_batch_ending_at_an_arrivals_instant_frees_its_worker_for_that_arrival():
    # the worker frees exactly when a new, shorter request arrives: both are seen before dispatch
    cost = CostModel(CPU)
    first = req(0, 0.0, pred=100)
    t_end = cost.batch_times([50], [100])[2]
    reqs = [first, req(1, 0.0, pred=300), req(2, t_end, pred=5)]
    s, _ = sched("sjf-pred")
    recs = simulate_batches(reqs, s)
    assert recs[2]["start_s"] == pytest.approx(t_end)  # the new short one goes before the waiting long one
    assert recs[1]["start_s"] > recs[2]["start_s"]


def test_simulation_is_deterministic():
    reqs = [req(i, i * 0.5, pred=50 + 37 * i % 200) for i in range(50)]
    a = simulate_batches(reqs, sched("rtlm", max_batch=4)[0])
    b = simulate_batches(reqs, sched("rtlm", max_batch=4)[0])
    assert repr(a) == repr(b)  # NaN deadlines compare unequal as floats; their text does not


request_lists = st.lists(
    st.tuples(st.floats(0, 50, allow_nan=False), st.integers(1, 400), st.integers(1, 400), st.integers(1, 600)),
    min_size=1, max_size=40)


@settings(max_examples=60, deadline=None)
@given(request_lists, st.sampled_from(sorted(POLICIES.names())), st.integers(1, 8), st.booleans(), st.booleans())
def test_simulator_properties(items, policy, max_batch, two_workers, offload):
    reqs = [req(i, round(t, 3), pred=p, true=n, prompt=pr) for i, (t, p, n, pr) in enumerate(items)]
    s, ws = sched(policy, workers=(GPU, CPU) if two_workers else (CPU,), max_batch=max_batch, offload=offload)
    recs = simulate_batches(reqs, s)
    # every request finishes exactly once
    assert sorted(r["rid"] for r in recs) == list(range(len(reqs)))
    assert all(r["status"] == "finished" for r in recs)
    for r in recs:  # time never runs backwards
        assert r["arrival_s"] <= r["start_s"] <= r["first_token_s"] <= r["last_token_s"] <= r["finish_s"]
    batches = {}
    for r in recs:
        batches.setdefault(r["batch_id"], []).append(r)
    for members in batches.values():
        assert len(members) <= max_batch and all(m["batch_size"] == len(members) for m in members)
        assert len({m["backend"] for m in members}) == 1 and len({m["start_s"] for m in members}) == 1
        assert len({m["finish_s"] for m in members}) == 1  # a batch's responses complete together
    # no worker runs two batches at once
    for w in ws:
        spans = sorted((m[0]["start_s"], max(x["finish_s"] for x in m)) for m in batches.values() if m[0]["backend"] == w.name)
        assert all(a_end <= b_start + 1e-9 for (_, a_end), (b_start, _) in zip(spans, spans[1:]))


def test_cost_model_interpolates_and_extrapolates():
    c = CostModel(CPU)
    assert c.step(1, 128) == pytest.approx(0.04)
    assert 0.045 < c.step(3, 500) < 0.055
    assert c.step(16, 128) > c.step(8, 128)  # linear beyond the last measured batch
    ttft, fins, end = c.batch_times([100, 50], [10, 30])
    assert ttft < fins[0] < fins[1] == end
    assert math.isclose(fins[1] - fins[0], 20 * c.step(2, 128), rel_tol=0.2)
