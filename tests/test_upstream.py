"""The one way rtlm talks to a backend (``engines/upstream.py``): scripted streams read under an
injected clock (timings compared exactly), failures classified once, the one retry rule, scrubbed
errors, and the gateway service and a replay writing the same record for the same stream."""

import asyncio
import json

import aiohttp
import pytest
from aiohttp import web

from rtlm_cli.engines.openai import Client, ClientSettings
from rtlm_cli.engines.upstream import (
    BACKEND_DOWN,
    BACKEND_ERROR,
    MALFORMED,
    Upstream,
    scrub,
)
from rtlm_cli.engines.vllm import free_port
from rtlm_cli.formats.timing import load_timing_table
from rtlm_cli.gateway.config import ServiceConfig
from rtlm_cli.gateway.service import GatewayService
from rtlm_cli.serve.admit import Admission, Classed
from rtlm_cli.serve.costmodel import CostModel
from rtlm_cli.serve.decide.backend import Backend
from rtlm_cli.serve.decide.core import DecisionCore
from rtlm_cli.serve.decide.policies import make_policy
from rtlm_cli.serve.decide.request import Request
from rtlm_cli.serve.decide.slots import SlotQueue
from rtlm_cli.serve.live.streams import StreamDriver, run_gateway
from rtlm_cli.testing import ScriptedBackend, Ticks
from rtlm_cli.testing.scripted import chat_script

CHAT = {"model": "scripted", "messages": [{"role": "user", "content": "hello there, backend"}], "max_tokens": 8,
        "stream": True}
COST = CostModel.from_table(load_timing_table("vllm-cpu"), name="vllm-cpu")


async def send(url: str, body: dict = CHAT, retries: int = 0):
    async with Upstream(clock=Ticks(), retries=retries) as up:
        return await up.send(url + "/v1/chat/completions", body)


def test_a_scripted_stream_is_timed_exactly_under_the_injected_clock():
    with ScriptedBackend(chat_script(["a", "b", "c"])) as backend:
        o = asyncio.run(send(backend.url))
    # the send is tick 0; the role chunk (choices, no text) tick 1; "a" 2, "b" 3, "c" 4; finish 5; usage 6
    assert o.status == "finished" and o.failure == "" and o.finish_reason == "stop" and o.text == "abc"
    assert (o.first_chunk_s, o.first_text_s, o.itl_s, o.e2e_s) == (1.0, 2.0, [1.0, 1.0], 4.0)
    assert o.ttft_s == o.first_chunk_s  # the TTFT rule: vllm bench serve's first chunk with choices
    assert (o.prompt_tokens, o.output_tokens) == (7, 3)


def test_a_malformed_chunk_is_a_failure_and_a_relayed_stream_ends_with_an_error_event():
    script = chat_script(["a"])[:2] + [b"data: {not json\n\n"] + chat_script(["b"])[2:]
    with ScriptedBackend(script) as backend:
        async def relay():
            async with Upstream(clock=Ticks()) as up, up.exchange(backend.url + "/v1/chat/completions", CHAT) as ex:
                return [piece async for piece in ex.relay()], ex.outcome

        pieces, o = asyncio.run(relay())
    assert o.status == "failed" and o.failure == MALFORMED and not o.retryable  # it began: never sent again
    tail = b"".join(pieces[-1:])
    assert b'"type": "upstream_error"' in tail and tail.endswith(b"data: [DONE]\n\n")
    assert b"{not json" not in b"".join(pieces)  # the bad line is not passed on


def test_one_retry_rule_before_the_first_chunk_when_the_backend_is_down_or_overloaded():
    with ScriptedBackend([b'{"error": {"message": "overloaded"}}'], status=503) as busy:
        o = asyncio.run(send(busy.url, retries=2))
        assert o.retryable and o.retries == 2 and len(busy.bodies) == 3 and o.error == "HTTP 503: overloaded"
    with ScriptedBackend([b'{"error": {"message": "bad"}}'], status=500) as broken:
        o = asyncio.run(send(broken.url, retries=2))
        assert o.failure == BACKEND_ERROR and not o.retryable and o.retries == 0 and len(broken.bodies) == 1
    o = asyncio.run(send(f"http://127.0.0.1:{free_port()}", retries=1))  # nothing listens there
    assert o.failure == BACKEND_DOWN and o.retryable and o.retries == 1
    with ScriptedBackend(chat_script(["a", "b"])[:3]) as cut:  # the stream stops without a finish reason
        o = asyncio.run(send(cut.url, retries=3))
        assert o.failure == BACKEND_ERROR and not o.retryable and len(cut.bodies) == 1


def test_backend_errors_that_echo_the_request_are_scrubbed():
    body = {"messages": [{"role": "user", "content": "my secret question about taxes"}]}
    message = "This model's maximum context length is 2048: 'my secret question about taxes' is too long"
    assert "secret" not in scrub(message, body) and "<request text>" in scrub(message, body)
    assert scrub("x" * 500) == "x" * 200
    echoed = json.dumps({"error": {"message": f"bad request: {body['messages'][0]['content']}"}}).encode()
    with ScriptedBackend([echoed], status=400) as backend:
        o = asyncio.run(send(backend.url, {**CHAT, **body}))
    assert o.status == "failed" and "secret" not in o.error and o.error.startswith("HTTP 400")


class Records(list):
    def add(self, row):
        self.append(row)


async def through_the_gateway(url: str, body: dict) -> tuple[int, bytes, dict]:
    """One request through an in-process gateway service over ``url``, on a tick clock."""
    cfg = ServiceConfig(policy="fcfs", predictor=None, gather_ms=0)
    queue = SlotQueue(DecisionCore(Classed(make_policy("fcfs")), [Backend(0, url, COST, inflight=2)]))
    records = Records()
    async with Upstream(clock=Ticks()) as up:
        service = GatewayService(cfg, queue, {0: url}, {"scripted": {"id": "scripted"}}, Admission(None, COST, None),
                                 up, records)
        runner = web.AppRunner(service.app(), handler_cancellation=True)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        try:
            async with aiohttp.ClientSession() as s, s.post(f"http://127.0.0.1:{port}/v1/chat/completions",
                                                            json=body) as resp:
                status, data = resp.status, await resp.read()
        finally:
            await service.drain(1.0)
            await runner.cleanup()
    (row,) = records
    return status, data, row


async def through_a_replay(url: str) -> dict:
    r = Request(rid=0, arrival_s=0.0, prompt_id="p0", prompt=CHAT["messages"][0]["content"], prompt_tokens=7)
    core = DecisionCore(make_policy("fcfs"), [Backend(0, url, COST, inflight=2)])
    client = Client(ClientSettings(urls=(url,)))
    client.upstream.clock = Ticks()
    async with client:
        await client.check()
        (row,), _ = await run_gateway(StreamDriver([r], core, client, {0: url}, 8), SlotQueue(core))
    return row


TIMED = ["first_token_s", "first_chunk_s", "first_text_s", "last_token_s"]
SAME = ["status", "failure", "finish_reason", "ended", "retries", "output_tokens", "prompt_tokens", "itl_mean_s",
        "itl_max_s", "in_flight", "backend"]


def test_the_gateway_and_a_replay_write_the_same_record_for_the_same_stream():
    with ScriptedBackend(chat_script(["x", "y", "z", "w"], finish_reason="length")) as backend:
        status, data, gw = asyncio.run(through_the_gateway(backend.url, CHAT))
        replay = asyncio.run(through_a_replay(backend.url))
    assert status == 200 and data.count(b"data: ") == 8 - 1  # relayed whole, but for the usage chunk not asked
    assert {k: gw[k] for k in SAME} == {k: replay[k] for k in SAME}
    assert [gw[k] - gw["start_s"] for k in TIMED] == [replay[k] - replay["start_s"] for k in TIMED] == [1, 1, 2, 5]
    assert gw["ended"] is False and gw["finish_reason"] == "length" and gw["retries"] == 0


def test_a_malformed_stream_through_the_gateway_ends_with_an_error_event_and_a_failed_record():
    script = chat_script(["a"])[:2] + [b"data: {not json\n\n"]
    with ScriptedBackend(script) as backend:
        status, data, row = asyncio.run(through_the_gateway(backend.url, CHAT))
    assert status == 200 and data.rstrip().endswith(b"data: [DONE]")  # the client sees its stream end
    events = [json.loads(line[5:]) for line in data.splitlines() if line.startswith(b"data: {")]
    assert events[-1]["error"]["type"] == "upstream_error"
    assert row["status"] == "failed" and row["failure"] == MALFORMED


@pytest.mark.parametrize("stream", [False, True])
def test_a_backend_that_is_down_gets_the_client_a_502_and_a_failed_record(stream):
    status, data, row = asyncio.run(through_the_gateway(f"http://127.0.0.1:{free_port()}", {**CHAT, "stream": stream}))
    assert status == 502 and json.loads(data)["error"]["type"] == "upstream_error"
    assert row["status"] == "failed" and row["failure"] == BACKEND_DOWN


def test_an_answer_read_to_its_end_gives_its_connection_back_and_an_abandoned_one_is_closed(servers):
    server = servers(ms_per_token=1)

    async def go():
        async with Upstream() as up:
            for _ in range(3):  # one after another: the kept-alive connection each time
                assert (await up.send(server.url + "/v1/chat/completions", CHAT)).status == "finished"
            reused = len(server.transports)
            async with up.exchange(server.url + "/v1/chat/completions", {**CHAT, "max_tokens": 30}) as ex:
                async for _ in ex.relay():
                    break  # the caller stops reading: the request is aborted, its connection not reused
            assert (await up.send(server.url + "/v1/chat/completions", CHAT)).status == "finished"
            return reused, len(server.transports)

    reused, after = asyncio.run(go())
    assert reused == 1 and after == 2
