"""The continuous-batching simulator on hand-made cases with the arithmetic in comments, and its
invariants under Hypothesis (no model, no clock)."""

import pytest
from helpers import FLAT
from hypothesis import given, settings
from hypothesis import strategies as st

from rtlm_cli.serve.costmodel import CostModel
from rtlm_cli.serve.decide.policies import POLICIES, make_policy
from rtlm_cli.serve.decide.request import Request
from rtlm_cli.serve.sim.continuous import serve_directly
from rtlm_cli.serve.sim.server import ServerLimits


# Flat prices: a decode step 10 ms at any batch and context, prefilling alone 20 ms, so a step that
# decodes and also prefills costs 10 + (20 - 10) = 20 ms.
def req(rid, arrival, tokens, prompt=100, pred=None):
    return Request(rid=rid, arrival_s=arrival, prompt_id=f"p{rid}", prompt_tokens=prompt,
                   predicted_tokens=float(pred if pred is not None else tokens), true_tokens=tokens)


def run(requests, policy="fcfs", table=FLAT, order="lower-first", **limits):
    """Every request sent to one simulated engine at its arrival, with the core's priority."""
    recs, server = serve_directly(requests, make_policy(policy), CostModel(table), ServerLimits(**limits), order)
    return {r["rid"]: r for r in recs}, server


def running_at_once(recs) -> int:
    """The most requests running together, from the records of those never preempted (each ran
    without a break from its start to its end)."""
    edges = sorted([(r["start_s"], 1) for r in recs if r["preemptions"] == 0 and r["status"] == "finished"]
                   + [(r["finish_s"], -1) for r in recs if r["preemptions"] == 0 and r["status"] == "finished"],
                   key=lambda e: (e[0], e[1]))  # at one instant, leaving before starting
    most = now = 0
    for _, d in edges:
        now += d
        most = max(most, now)
    return most


def test_two_requests_share_steps():
    # A arrives at 0: its prefill step (20 ms) yields its first token at 0.02; it decodes alone until
    # B arrives (3 steps, to 0.05); B's prefill shares a step with A's decode (20 ms, to 0.07: B's
    # first token); both decode 4 steps (to 0.11: B's fifth and last); A's last alone (0.12).
    recs, _ = run([req(0, 0.0, 10), req(1, 0.05, 5)])
    a, b = recs[0], recs[1]
    assert (a["first_token_s"], a["finish_s"]) == pytest.approx((0.02, 0.12))
    assert (b["start_s"], b["first_token_s"], b["finish_s"]) == pytest.approx((0.05, 0.07, 0.11))
    assert a["output_tokens"] == 10 and b["output_tokens"] == 5
    assert a["last_token_s"] == a["finish_s"]  # each leaves at its own last token


def test_a_small_kv_cache_preempts_the_least_urgent_running_request():
    # Blocks of 16 tokens, 4 in all. A and B each take 2 blocks for their 20-token prompts; A (first)
    # needs a third block at its 13th generated token: none is free, so B (the later arrival, larger
    # (priority, arrival)) is preempted, recomputes later, and finishes after A.
    recs, engine = run([req(0, 0.0, 40, prompt=20), req(1, 0.001, 40, prompt=20)], block_size=16, kv_cache_tokens=64)
    assert recs[0]["preemptions"] == 0 and recs[1]["preemptions"] >= 1
    assert recs[1]["finish_s"] > recs[0]["finish_s"]
    assert recs[0]["output_tokens"] == recs[1]["output_tokens"] == 40


def test_the_priority_heap_never_evicts_a_running_request():
    # One slot. A long request runs; a short one arrives with a smaller key (sjf-pred): it waits for
    # A to end, then goes before the medium one that arrived before it.
    recs, _ = run([req(0, 0.0, 50), req(1, 0.05, 30), req(2, 0.06, 3)], policy="sjf-pred", max_num_seqs=1)
    assert recs[2]["start_s"] == pytest.approx(recs[0]["finish_s"])  # after A, not before
    assert recs[2]["finish_s"] < recs[1]["start_s"] + 1e-12
    fcfs, _ = run([req(0, 0.0, 50), req(1, 0.05, 30), req(2, 0.06, 3)], policy="fcfs", max_num_seqs=1)
    assert fcfs[1]["start_s"] < fcfs[2]["start_s"]


def test_chunked_prefill_spreads_a_long_prompt_over_steps():
    # A budget of 64 tokens a step: a 200-token prompt takes 4 steps (64 + 64 + 64 + 8) before its
    # first token, each a prefill-only step of 20 ms.
    recs, _ = run([req(0, 0.0, 2, prompt=200)], max_num_batched_tokens=64)
    assert recs[0]["first_token_s"] == pytest.approx(0.08) and recs[0]["finish_s"] == pytest.approx(0.09)


requests_st = st.lists(st.tuples(st.floats(0, 5, allow_nan=False), st.integers(1, 120), st.integers(1, 300)),
                       min_size=1, max_size=30)


@settings(max_examples=60, deadline=None)
@given(requests_st, st.sampled_from(POLICIES.names()), st.integers(1, 6), st.integers(8, 64), st.sampled_from([16, 32]))
def test_continuous_invariants(items, policy, seqs, blocks, block_size):
    reqs = [req(i, round(t, 3), n, prompt=p, pred=(n * 7) % 200 + 1) for i, (t, n, p) in enumerate(items)]
    table = [{"batch": b, "context": c, "prefill_s": 0.001 * c / 16, "decode_step_s": 0.01 + 0.002 * b}
             for b in (1, 8) for c in (64, 1024)]
    by_rid, engine = run(reqs, policy, table, max_num_seqs=seqs, max_num_batched_tokens=256, block_size=block_size,
                         kv_cache_tokens=blocks * block_size)
    recs = [by_rid[q.rid] for q in reqs]
    assert sorted(by_rid) == list(range(len(reqs)))  # every request once
    assert running_at_once(recs) <= seqs  # the running set never exceeds its limit
    assert engine.free == engine.m.kv_blocks  # every KV block back at the end
    for r, q in zip(recs, reqs):
        if r["status"] == "failed":  # only a request that cannot fit in the whole cache
            assert q.prompt_tokens + q.true_tokens > blocks * block_size - block_size
            continue
        assert r["output_tokens"] == q.true_tokens  # leaves at its own last token
        assert r["arrival_s"] <= r["start_s"] <= r["first_token_s"] <= r["last_token_s"] == r["finish_s"]


def test_serve_local_continuous_batching_end_to_end(run_cli, tmp_path):
    from rtlm_cli.formats.run import load_run, with_latencies

    base = ("serve-local", "--simulate", "--batching", "continuous", "--profile", "reference", "--load", 0.9,
            "-n", 800, "--max-num-seqs", 8)
    r = run_cli(*base, "--policy", "fcfs", "--out", tmp_path / "refused")
    assert r.exit_code == 2 and "measured with static batches" in " ".join(r.output.split())
    r = run_cli(*base, "--allow-static-timing", "--policy", "fcfs,oracle", "--goodput", "ttft:3000 tpot:500",
                "--out", tmp_path / "runs")
    assert r.exit_code == 0, r.output
    fcfs, df = load_run(tmp_path / "runs" / "fcfs-load0.9")
    oracle, _ = load_run(tmp_path / "runs" / "oracle-load0.9")
    assert fcfs["batching"] == "continuous" and fcfs["engine_model"]["max_num_seqs"] == 8
    assert fcfs["workload"]["offered_load"] == pytest.approx(0.9) and (df["status"] == "finished").all()
    assert (df["output_tokens"] == df["true_tokens"]).all() and (df["batch_size"] == 0).all()  # no static batches
    # in_flight: what the engine held at the arrival, itself included: waiting ones too, so a queue shows
    assert df["in_flight"].min() >= 1 and df["in_flight"].max() > 8
    s = fcfs["summary"]
    lat = with_latencies(df)
    good = ((lat["ttft_s"] <= 3.0) & (lat["tpot_s"] <= 0.5)).sum()  # every request finished: good ones over all
    assert 0 < good < len(df) and s["slo_attainment"] == pytest.approx(good / len(df))
    assert s["slo_goodput"] == {"ttft_s": 3.0, "tpot_s": 0.5}
    assert oracle["summary"]["e2el_s"]["mean"] < s["e2el_s"]["mean"]
    assert "METRIC:MILLISECONDS" in " ".join(run_cli(*base, "--goodput", "ttft=3", "--out", tmp_path / "x").output.split())
