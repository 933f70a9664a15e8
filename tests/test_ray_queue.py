"""rtlm's central capacity queue for Ray Serve, without Ray: tokens in the policy's order, at most K
per replica, least-loaded placement, replicas that come and go, cancels and deadlines."""

import asyncio

import pytest

from rtlm_cli.formats.timing import load_timing_table
from rtlm_cli.integrations.ray_serve.queue import SHED, TokenQueue, describe
from rtlm_cli.serve.costmodel import CostModel
from rtlm_cli.serve.decide.request import Request

COST = CostModel.from_table(load_timing_table("vllm-cpu"), name="vllm-cpu")


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class Calls:
    """Routers' calls to one queue, made in the test's own loop: ``ask`` starts an acquire, ``given``
    says which replica each finished one got."""

    def __init__(self, policy="sjf-input", **kw):
        self.clock = Clock()
        self.q = TokenQueue(policy, COST, clock=self.clock, **kw)
        self.tasks: dict[str, asyncio.Task] = {}

    async def ask(self, token: str, fields: dict | None = None, at: float | None = None) -> None:
        if at is not None:
            self.clock.t = at
        self.tasks[token] = asyncio.get_running_loop().create_task(self.q.acquire(token, fields or {}))
        await settle()

    async def release(self, token: str, at: float) -> None:
        self.clock.t = at
        self.q.release(token)
        await settle()

    def given(self) -> dict[str, str]:
        return {t: task.result() for t, task in self.tasks.items() if task.done() and not task.cancelled()}


async def settle() -> None:
    for _ in range(5):  # the woken acquires run to their end
        await asyncio.sleep(0)


def test_tokens_go_in_the_policy_order_at_most_k_per_replica_least_loaded_first():
    async def go():
        c = Calls()
        c.q.add_replica("a", 2)
        c.q.add_replica("b", 2)
        for i, words in enumerate([50, 40, 30, 20, 10, 5, 60]):
            await c.ask(f"t{i}", {"prompt_tokens": words, "arrival_s": float(i)}, at=float(i))
        # the first four take the four free slots as they come, alternating (least loaded); the rest wait
        assert c.given() == {"t0": "a", "t1": "b", "t2": "a", "t3": "b"}
        assert c.q.in_flight() == {"a": (2, 2), "b": (2, 2)} and len(c.q.waiting) == 3
        # a slot that frees takes the shortest prompt waiting (sjf-input), on the replica that freed it
        await c.release("t1", 10.0)
        assert c.given()["t5"] == "b" and "t4" not in c.given()
        await c.release("t0", 11.0)
        assert c.given()["t4"] == "a"
        await c.release("t5", 12.0)
        assert c.given()["t6"] == "b"
        await c.release("t5", 13.0)  # twice: nothing changes
        assert c.q.handed == 7 and not c.q.waiting and c.q.in_flight() == {"a": (2, 2), "b": (2, 2)}

    asyncio.run(go())


def test_a_replica_that_goes_away_has_its_tokens_reclaimed_and_one_that_joins_takes_what_waits():
    async def go():
        c = Calls("fcfs")
        c.q.add_replica("a", 1)
        await c.ask("x", at=1.0)
        await c.ask("y", at=2.0)
        assert c.given() == {"x": "a"}
        assert c.q.remove_replica("a") == ["x"] and c.q.reclaimed == 1
        await c.release("x", 3.0)  # its late release changes nothing
        c.clock.t = 4.0
        c.q.add_replica("b", 1)
        await settle()
        assert c.given() == {"x": "a", "y": "b"}
        assert c.q.remove_replica("nobody") == []

    asyncio.run(go())


def test_a_cancelled_waiting_request_leaves_and_its_turn_goes_to_the_next():
    async def go():
        c = Calls("fcfs")
        c.q.add_replica("a", 1)
        for i, token in enumerate("xyz"):
            await c.ask(token, at=1.0 + i)
        c.tasks["y"].cancel()  # its caller went away while it waited
        await settle()
        assert c.q.cancelled == 1 and "y" not in c.q.waiting
        await c.release("x", 4.0)
        assert c.given() == {"x": "a", "z": "a"}

    asyncio.run(go())


def test_gathering_orders_what_arrives_together_and_the_window_release_sends_it():
    async def go():
        c = Calls(gather_s=0.005)
        c.q.add_replica("a", 1)
        await c.ask("long", {"prompt_tokens": 90}, at=1.0)
        await c.ask("short", {"prompt_tokens": 3}, at=1.001)
        assert c.given() == {} and c.q.slots.holding_until == pytest.approx(1.005)
        c.clock.t = 1.005
        await asyncio.sleep(0.05)  # the window's end (the driver sleeps until the clock reads it)
        await settle()
        assert c.given() == {"short": "a"}

    asyncio.run(go())


def test_a_request_whose_deadline_cannot_be_met_is_shed_with_shed():
    async def go():
        c = Calls("fcfs", shed=True)
        c.q.add_replica("a", 1)
        await c.ask("busy", {"prompt_tokens": 10, "predicted_tokens": 50}, at=0.0)
        await c.ask("late", {"prompt_tokens": 10, "predicted_tokens": 500, "deadline_s": 1.5}, at=0.1)
        await c.release("busy", 1.0)
        assert c.given() == {"busy": "a", "late": SHED} and not c.q.waiting

    asyncio.run(go())


def test_describe_carries_the_prediction_not_the_text():
    r = Request(rid=3, arrival_s=1.0, prompt_id="p", prompt="secret text", prompt_tokens=7, predicted_tokens=12.5,
                deadline_s=9.0, priority_class=2)
    d = describe(r)
    assert "prompt" not in d and "rid" not in d
    assert d["predicted_tokens"] == 12.5 and d["deadline_s"] == 9.0 and d["priority_class"] == 2

    async def go():
        c = Calls("rtlm")
        c.q.add_replica("a", 1)
        await c.ask("t", dict(d, unknown_key=1), at=2.0)
        assert c.given() == {"t": "a"}
        assert c.q.placed["t"][0].arrival_s == 1.0  # the time it entered Ray, not the time it reached the queue

    asyncio.run(go())


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
