"""rtlm's central capacity queue for Ray Serve, without Ray: tokens in the policy's order, at most K
per replica, least-loaded placement, replicas that come and go, cancels and deadlines."""

import pytest

from rtlm_cli.formats.timing import load_timing_table
from rtlm_cli.integrations.ray_serve.queue import TokenQueue, describe
from rtlm_cli.serve.costmodel import CostModel
from rtlm_cli.serve.decide.request import Request

COST = CostModel.from_table(load_timing_table("vllm-cpu"), name="vllm-cpu")


def queue(policy="sjf-input", **kw) -> TokenQueue:
    return TokenQueue(policy, COST, **kw)


def test_tokens_go_in_the_policy_order_at_most_k_per_replica_least_loaded_first():
    q = queue()
    assert q.add_replica("a", 2, 0.0) == [] and q.add_replica("b", 2, 0.0) == []
    sends = []
    for i, words in enumerate([50, 40, 30, 20, 10, 5, 60]):
        sends += q.arrive(f"t{i}", {"prompt_tokens": words, "arrival_s": float(i)}, float(i))
    # the first four take the four free slots as they come, alternating (least loaded); the rest wait
    assert sends == [("t0", "a"), ("t1", "b"), ("t2", "a"), ("t3", "b")]
    assert q.in_flight() == {"a": (2, 2), "b": (2, 2)} and len(q.waiting) == 3
    # a slot that frees takes the shortest prompt waiting (sjf-input), on the replica that freed it
    assert q.release("t1", 10.0) == [("t5", "b")]
    assert q.release("t0", 11.0) == [("t4", "a")]
    assert q.release("t5", 12.0) == [("t6", "b")]
    assert q.release("t5", 13.0) == []  # twice: nothing changes
    assert q.handed == 7 and not q.waiting


def test_a_replica_that_goes_away_has_its_tokens_reclaimed_and_one_that_joins_takes_what_waits():
    q = queue("fcfs")
    q.add_replica("a", 1, 0.0)
    assert q.arrive("x", {}, 1.0) == [("x", "a")]
    assert q.arrive("y", {}, 2.0) == []
    assert q.remove_replica("a") == ["x"] and q.reclaimed == 1
    assert q.release("x", 3.0) == []  # its late release changes nothing
    assert q.add_replica("b", 1, 4.0) == [("y", "b")]
    assert q.remove_replica("nobody") == []


def test_a_cancelled_waiting_request_leaves_and_its_turn_goes_to_the_next():
    q = queue("fcfs")
    q.add_replica("a", 1, 0.0)
    q.arrive("x", {}, 1.0)
    q.arrive("y", {}, 2.0)
    q.arrive("z", {}, 3.0)
    assert q.withdraw("y") and not q.withdraw("y") and not q.withdraw("x")  # x is placed, not waiting
    assert q.release("x", 4.0) == [("z", "a")]


def test_gathering_orders_what_arrives_together_and_the_window_release_sends_it():
    q = queue(gather_s=0.005)
    q.add_replica("a", 1, 0.0)
    assert q.arrive("long", {"prompt_tokens": 90}, 1.0) == []
    assert q.arrive("short", {"prompt_tokens": 3}, 1.001) == []
    assert q.gateway.holding_until == pytest.approx(1.005)
    assert q.release_window(1.005) == [("short", "a")]


def test_a_request_whose_deadline_cannot_be_met_is_shed_with_shed():
    q = queue("fcfs", shed=True)
    q.add_replica("a", 1, 0.0)
    q.arrive("busy", {"prompt_tokens": 10, "predicted_tokens": 50}, 0.0)
    q.arrive("late", {"prompt_tokens": 10, "predicted_tokens": 500, "deadline_s": 1.5}, 0.1)
    assert q.release("busy", 1.0) == [] and q.take_shed() == ["late"] and not q.waiting


def test_describe_carries_the_prediction_not_the_text():
    r = Request(rid=3, arrival_s=1.0, prompt_id="p", prompt="secret text", prompt_tokens=7, predicted_tokens=12.5,
                deadline_s=9.0, priority_class=2)
    d = describe(r)
    assert "prompt" not in d and "rid" not in d
    assert d["predicted_tokens"] == 12.5 and d["deadline_s"] == 9.0 and d["priority_class"] == 2
    q = queue("rtlm")
    q.add_replica("a", 1, 0.0)
    assert q.arrive("t", dict(d, unknown_key=1), 2.0) == [("t", "a")]
    assert q.placed["t"][0].arrival_s == 1.0  # the time it entered Ray, not the time it reached the queue



def test_a_call_without_a_prediction_is_predicted_from_its_own_body():
    from rtlm_cli.integrations.ray_serve.ingress import Predicting

    class ChatRequest:  # what Ray Serve LLM's ingress passes: a pydantic model
        def model_dump(self):
            return {"messages": [{"role": "user", "content": "Write a long story about dragons"}], "max_tokens": 40,
                    "temperature": None}

    predict = Predicting("reference")
    chat = predict.from_args([ChatRequest(), None])
    assert 0 < chat["predicted_tokens"] <= 40  # predicted, capped by the body's own max_tokens
    assert predict.from_args([{"prompt": "hi", "max_tokens": 3}])["predicted_tokens"] <= 3
    assert predict.from_args(["/v1/completions", 3]) == {}  # nothing that looks like a body
    assert predict.from_args([{"messages": []}]) == {}  # a body it cannot use: no prediction, not an error
