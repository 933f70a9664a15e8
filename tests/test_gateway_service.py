"""``rtlm gateway`` as its users meet it: a process on 127.0.0.1 in front of fake OpenAI-compatible
servers, driven by the official ``openai`` client and by raw HTTP. Each gateway is started by the
test that uses it and stopped by it (SIGTERM; SIGKILL if it does not exit), also when it fails."""

import asyncio
import json
import signal
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from helpers import GatewayProcess as Gateway
from helpers import metric, post, until, wait_until

from rtlm_cli.formats.run import load_run
from rtlm_cli.testing import tokens_for

ROOT = Path(__file__).parent.parent


@pytest.fixture
def start(servers):
    """(start a gateway, start a fake server): every one stopped when the test ends, also on failure."""
    made = []

    def gateway(*args, env=None):
        made.append(Gateway(*args, env=env))
        return made[-1]

    yield gateway, servers
    for g in made:
        g.stop()


def test_the_openai_client_streamed_and_not_through_the_gateway(start, tmp_path):
    from openai import OpenAI

    gateway, fake = start
    server = fake(ms_per_token=2, api_key="backend-secret")
    g = gateway("--url", server.url, "--backend-api-key", "backend-secret", "--out", tmp_path / "run")
    client = OpenAI(base_url=g.url + "/v1", api_key="the-clients-own-key")
    assert [m.id for m in client.models.list().data] == ["smollm2"]
    prompt = "Say something short."
    n, reason = tokens_for(prompt, 64)
    whole = client.chat.completions.create(model="smollm2", messages=[{"role": "user", "content": prompt}],
                                           max_tokens=64)
    assert whole.choices[0].message.content == "".join(f"t{i} " for i in range(n))
    assert whole.usage.completion_tokens == n and whole.choices[0].finish_reason == reason
    chunks = list(client.chat.completions.create(model="smollm2", messages=[{"role": "user", "content": prompt}],
                                                 max_tokens=64, stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "".join(f"t{i} " for i in range(n))
    assert all(c.usage is None for c in chunks)  # rtlm asked for usage; the client did not: stripped
    with_usage = list(client.completions.create(model="smollm2", prompt=prompt, max_tokens=64, stream=True,
                                                stream_options={"include_usage": True}))
    n_completion = tokens_for(json.dumps(prompt), 64)[0]  # the fake server hashes a completion's prompt as JSON
    assert with_usage[-1].usage.completion_tokens == n_completion  # asked for: kept
    # the client's Authorization never reaches the backend; rtlm's own key does
    assert all(h.get("Authorization") == "Bearer backend-secret" for h in server.seen_headers)
    assert server.bodies[1]["stream_options"] == {"include_usage": True}  # set by rtlm for its records
    code, log = g.stop()
    assert code == 0, log
    meta, df = load_run(tmp_path / "run")
    assert meta["complete"] and meta["service"] and meta["dispatch"] == "gateway" and len(df) == 3
    assert meta["policy"] == "rtlm" and meta["predictor"] == "reference"  # the defaults: rtlm's own decisions
    assert (df["status"] == "finished").all() and list(df["output_tokens"]) == [n, n, n_completion]


def test_at_most_k_in_flight_and_the_policys_order_under_200_clients(start):
    gateway, fake = start
    server = fake(ms_per_token=1, max_running=1000)
    g = gateway("--url", server.url, "--inflight", 3, "--policy", "sjf-input")

    async def burst():
        import aiohttp

        async with aiohttp.ClientSession() as s:
            async def one(i):
                body = {"model": "smollm2", "messages": [{"role": "user", "content": f"q{i} " + "w " * (i % 17)}],
                        "max_tokens": 8, "stream": i % 2 == 0}
                async with s.post(g.url + "/v1/chat/completions", json=body) as r:
                    await r.read()
                    return r.status

            return await asyncio.gather(*(one(i) for i in range(200)))

    assert asyncio.run(burst()) == [200] * 200
    assert server.peak_streams <= 3  # the backend's own count of open streams: K, never more
    assert len(server.started) == 200


def test_bad_requests_get_openai_style_errors_and_a_full_queue_429(start):
    gateway, fake = start
    server = fake(ms_per_token=200, max_running=1)
    g = gateway("--url", server.url, "--inflight", 1, "--max-queue", 1, "--max-body-kib", 4)
    chat = g.url + "/v1/chat/completions"
    code, body = post(chat, None, raw=b"{not json")
    assert code == 400 and "not valid JSON" in body["error"]["message"]
    assert post(chat, {"model": "smollm2"})[0] == 400  # no messages
    code, body = post(chat, {"messages": [{"role": "user", "content": "hi"}], "n": 2})
    assert code == 400 and "n > 1" in body["error"]["message"]
    code, body = post(chat, {"messages": [{"role": "user", "content": "x" * 10_000}]})
    assert code == 413 and "--max-body-kib" in body["error"]["message"]
    code, body = post(chat, {"messages": [{"role": "user", "content": "hi"}]}, headers={"x-rtlm-priority": "soon"})
    assert code == 400 and "x-rtlm-priority" in body["error"]["message"]

    async def crowd():  # one in flight, one waiting: the third is refused
        import aiohttp

        async with aiohttp.ClientSession() as s:
            async def one(i):
                async with s.post(chat, json={"messages": [{"role": "user", "content": f"q{i}"}], "max_tokens": 4}) as r:
                    return r.status, r.headers.get("Retry-After")

            calls = [asyncio.create_task(one(0))]
            await until(lambda: server.open_streams == 1, what="the first request at the backend")
            calls.append(asyncio.create_task(one(1)))
            await until(lambda: metric(g.url, "rtlm:num_requests_waiting") == 1, what="the second one waiting")
            calls.append(asyncio.create_task(one(2)))
            return await asyncio.gather(*calls)

    assert asyncio.run(crowd()) == [(200, None), (200, None), (429, "1")]


def test_a_client_that_leaves_while_queued_never_reaches_the_backend(start):
    gateway, fake = start
    server = fake(ms_per_token=100, max_running=1)
    g = gateway("--url", server.url, "--inflight", 1)

    async def run():
        import aiohttp

        async with aiohttp.ClientSession() as s:
            body = {"messages": [{"role": "user", "content": "first, long"}], "max_tokens": 30}
            first = asyncio.create_task(s.post(g.url + "/v1/chat/completions", json=body))
            await until(lambda: server.started, what="the first request running at the backend")
            leaver = asyncio.create_task(s.post(g.url + "/v1/chat/completions",
                                                json={"messages": [{"role": "user", "content": "LEAVER"}]}))
            await until(lambda: metric(g.url, "rtlm:num_requests_waiting") == 1, what="the leaver in rtlm's queue")
            leaver.cancel()  # gone while waiting in rtlm's queue
            r = await first
            await r.read()

    asyncio.run(run())
    wait_until(lambda: metric(g.url, 'rtlm:requests_total{outcome="cancelled"}') == 1, what="the leaver counted")
    assert metric(g.url, "rtlm:num_requests_waiting") == 0
    assert not any("LEAVER" in b["messages"][0]["content"] for b in server.bodies)


def test_metrics_parse_with_prometheus_clients_own_parser(start):
    from prometheus_client.parser import text_string_to_metric_families

    gateway, fake = start
    server = fake(ms_per_token=1)
    g = gateway("--url", server.url)
    assert post(g.url + "/v1/completions", {"prompt": "hello", "max_tokens": 5})[0] == 200
    families = {f.name: f for f in text_string_to_metric_families(urllib.request.urlopen(g.url + "/metrics").read().decode())}
    assert {"rtlm:num_requests_waiting", "rtlm:num_requests_in_flight", "rtlm:requests",
            "rtlm:e2e_request_latency_seconds", "rtlm:prediction_time_seconds", "rtlm:backend_pace"} <= set(families)
    assert [s.value for s in families["rtlm:backend_pace"].samples] == [1.0]  # no --shed: priced as the table says
    finished = [s for s in families["rtlm:requests"].samples if s.labels.get("outcome") == "finished"
                and s.name.endswith("_total")]
    assert finished[0].value == 1.0


def test_a_gateway_never_replaces_an_existing_run_and_says_what_to_do(run_cli, tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "meta.json").write_text("{}")
    r = run_cli("gateway", "--url", "http://127.0.0.1:9", "--out", tmp_path / "run")
    text = " ".join(r.output.split())
    assert r.exit_code != 0 and "already exists" in text and "move that run away" in text
    assert "--overwrite" not in text and "Traceback" not in text  # the gateway has no --overwrite
    assert (tmp_path / "run" / "meta.json").read_text() == "{}"


def test_a_non_loopback_bind_needs_a_key_and_a_key_is_checked(start, run_cli):
    r = run_cli("gateway", "--url", "http://127.0.0.1:9", "--host", "0.0.0.0")
    assert r.exit_code == 2 and "--api-key" in r.output and "Traceback" not in r.output
    gateway, fake = start
    server = fake(ms_per_token=1)
    g = gateway("--url", server.url, "--api-key", "s3cret")
    code, body = post(g.url + "/v1/completions", {"prompt": "hi", "max_tokens": 3})
    assert code == 401 and body["error"]["type"] == "authentication_error"
    assert post(g.url + "/v1/completions", {"prompt": "hi", "max_tokens": 3},
                headers={"Authorization": "Bearer s3cret"})[0] == 200
    assert all("s3cret" not in str(h.get("Authorization")) for h in server.seen_headers)


def test_sigterm_drains_what_is_in_flight_and_a_killed_backend_leaves_the_others(start, tmp_path):
    gateway, fake = start
    dying, alive = fake(ms_per_token=5, die_at_answer=1), fake(ms_per_token=5)
    g = gateway("--url", dying.url, "--url", alive.url, "--inflight", 2, "--retry-failed", "--out", tmp_path / "run")

    async def run():
        import aiohttp

        async with aiohttp.ClientSession() as s:
            async def one(i):
                body = {"messages": [{"role": "user", "content": f"q{i}"}], "max_tokens": 20}
                async with s.post(g.url + "/v1/chat/completions", json=body) as r:
                    await r.read()
                    return r.status

            return await asyncio.gather(*(one(i) for i in range(12)))

    # the first backend dies once it has sent its first answer; what it held then goes once more to
    # the other (--retry-failed), and the gateway stops sending there
    assert asyncio.run(run()) == [200] * 12
    health = json.loads(urllib.request.urlopen(g.url + "/health").read())
    assert health == {"status": "ok", "live_backends": 1}
    # SIGTERM while a slow request streams: it finishes, then the gateway exits 0
    slow = fake(ms_per_token=40)
    g2 = gateway("--url", slow.url, "--out", tmp_path / "drained")

    async def in_flight_then_term():
        import aiohttp

        async with aiohttp.ClientSession() as s:
            body = {"messages": [{"role": "user", "content": "a slow one"}], "max_tokens": 30}
            task = asyncio.create_task(s.post(g2.url + "/v1/chat/completions", json=body))
            await until(lambda: slow.started, what="the slow one running")
            g2.proc.send_signal(signal.SIGTERM)
            r = await task
            return r.status, await r.json()

    status, body = asyncio.run(in_flight_then_term())
    assert status == 200 and body["usage"]["completion_tokens"] == tokens_for("a slow one", 30)[0]
    assert g2.proc.wait(30) == 0
    meta, df = load_run(tmp_path / "drained")
    assert meta["complete"] and list(df["status"]) == ["finished"]
    code, log = g.stop()
    assert code == 0, log
    meta, df = load_run(tmp_path / "run")
    assert (df["status"] == "finished").all() and (df["backend"] == dying.url).sum() == dying.answered == 1
    assert (df["backend"] == alive.url).sum() == 11


def test_a_client_that_leaves_mid_stream_closes_its_upstream_request(start):
    gateway, fake = start
    server = fake(ms_per_token=50)
    g = gateway("--url", server.url)

    async def leave_after_two_chunks():
        import aiohttp

        async with aiohttp.ClientSession() as s:
            body = {"messages": [{"role": "user", "content": "a long answer"}], "max_tokens": 60, "stream": True,
                    "ignore_eos": True}
            async with s.post(g.url + "/v1/chat/completions", json=body) as r:
                seen = 0
                async for line in r.content:
                    seen += line.startswith(b"data:")
                    if seen == 2:
                        return  # the connection closes here

    asyncio.run(leave_after_two_chunks())
    wait_until(lambda: server.open_streams == 0, 5, "the backend's stream to close")
    assert server.answered == 0  # the backend saw it go, long before 3 s of answer


def test_a_dead_backend_is_taken_out_and_put_back_when_healthy(start):
    gateway, fake = start
    server = fake(ms_per_token=1)
    g = gateway("--url", server.url)
    assert post(g.url + "/v1/completions", {"prompt": "one", "max_tokens": 3})[0] == 200
    port = server.port
    server.close()
    code, body = post(g.url + "/v1/completions", {"prompt": "two", "max_tokens": 3})
    assert code == 502 and body["error"]["type"] == "upstream_error"
    with pytest.raises(urllib.error.HTTPError) as down:
        urllib.request.urlopen(g.url + "/health")
    assert down.value.code == 503
    fake(ms_per_token=1, port=port)  # the same backend, back
    wait_until(lambda: metric(g.url, f'rtlm:backend_live{{backend="{server.url}"}}') == 1, timeout_s=10,
               what="the backend put back")
    assert post(g.url + "/v1/completions", {"prompt": "three", "max_tokens": 3})[0] == 200


def flushed(run) -> int:
    """Requests a growing run's meta.json counts as completed so far (0 before its first flush). The
    writer writes its parts, then the meta: a meta that counts them all was written after them."""
    try:
        meta, df = load_run(run)
    except Exception:  # noqa: BLE001 - not written yet
        return 0
    return min((meta.get("summary") or {}).get("completed", 0), len(df))


def served_after_a_blocker(g, server, requests, max_tokens: int = 60) -> list[str]:
    """Hold the backend's one slot (K = 1) with a blocker the paused server does not start, queue
    ``requests`` (prompt, headers) behind it in this order, each counted in rtlm's queue before the
    next is sent, then let the server go: the status of each, and the prompts in the order the
    backend started them. No request's place depends on the clock."""
    async def run():
        import aiohttp

        async with aiohttp.ClientSession() as s:
            async def one(prompt, headers):
                body = {"messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens}
                async with s.post(g.url + "/v1/chat/completions", json=body, headers=headers) as r:
                    await r.read()
                    return r.status

            server.pause()
            blocker = {"messages": [{"role": "user", "content": "blocker"}], "max_tokens": 60, "ignore_eos": True}
            first = asyncio.create_task(s.post(g.url + "/v1/chat/completions", json=blocker))
            await until(lambda: server.open_streams == 1, what="the blocker held at the backend")
            calls = []
            for i, (prompt, headers) in enumerate(requests):
                calls.append(asyncio.create_task(one(prompt, headers)))
                await until(lambda: metric(g.url, "rtlm:num_requests_waiting") == i + 1, what=f"{prompt!r} queued")
            server.resume()
            statuses = await asyncio.gather(*calls)
            await (await first).read()
            return statuses

    statuses = asyncio.run(run())
    return statuses, [p for p in server.started if p != "blocker"]


def test_priority_classes_come_before_the_policy_and_shed_requests_get_429(start):
    gateway, fake = start
    server = fake(ms_per_token=5, max_running=1)
    g = gateway("--url", server.url, "--inflight", 1, "--policy", "sjf-input", "--shed")
    statuses, order = served_after_a_blocker(g, server, [
        ("a batch job", {"x-rtlm-priority": "batch"}), ("a default one with more words", {}),
        ("hi", {"x-rtlm-priority": "batch"}), ("an interactive one, the longest prompt of all", {"x-rtlm-priority": "interactive"}),
        ("too late", {"x-rtlm-deadline-ms": "50"})])  # waits behind the held blocker: its deadline is gone
    assert statuses == [200, 200, 200, 200, 429]
    # interactive first, then default, then the batch class; within a class, sjf-input's order
    assert order == ["an interactive one, the longest prompt of all", "a default one with more words", "hi", "a batch job"]


def test_a_gateway_killed_with_sigkill_leaves_a_run_that_report_reads(start, run_cli, tmp_path):
    gateway, fake = start
    server = fake(ms_per_token=1)
    g = gateway("--url", server.url, "--out", tmp_path / "run", "--flush", 0.2)
    for i in range(3):
        assert post(g.url + "/v1/completions", {"prompt": f"p{i}", "max_tokens": 4})[0] == 200
    wait_until(lambda: flushed(tmp_path / "run") == 3, what="a flush of the three records and their summary")
    g.proc.kill()
    g.proc.wait()
    meta, df = load_run(tmp_path / "run")
    assert not meta["complete"] and len(df) == 3 and meta["summary"]["completed"] == 3
    r = run_cli("report", tmp_path / "run", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["runs"][0]["completed"] == 3


def test_each_request_is_predicted_when_it_arrives_and_served_in_the_predicted_order(start, tmp_path):
    from rtlm_cli.predict.model import Predictor

    prompts = ["Write a long essay on the history of Rome.", "What is 2+2?", "List ten fruits and describe each one.",
               "Say yes or no.", "Explain quantum computing to a child, step by step, with examples."]
    expected = Predictor.load("reference").predict(prompts)["predicted"]  # the shipped predictor, the default
    gateway, fake = start
    server = fake(ms_per_token=5, max_running=1)
    g = gateway("--url", server.url, "--inflight", 1, "--policy", "sjf-pred", "--out", tmp_path / "run")
    statuses, order = served_after_a_blocker(g, server, [(p, {}) for p in prompts], max_tokens=256)
    assert statuses == [200] * 5
    assert order == [prompts[i] for i in sorted(range(5), key=lambda i: expected[i])]
    assert len(set(expected.round(3))) == 5 and order != prompts  # distinct predictions, not arrival order
    g.stop()
    _, df = load_run(tmp_path / "run")
    by_prompt = dict(zip(prompts, expected))
    rows = df[df["rid"] > 0].sort_values("rid")  # rid 0: the blocker
    assert [round(x, 3) for x in rows["predicted_tokens"]] == [round(by_prompt[p], 3) for p in prompts]
    assert (rows["prediction_cost_s"] > 0).all()  # made on arrival, on the clock


@pytest.mark.parametrize("gather_ms", [0, 50])
def test_a_burst_is_gathered_and_ordered_whole(start, gather_ms):
    gateway, fake = start
    server = fake(ms_per_token=5, max_running=1)
    g = gateway("--url", server.url, "--inflight", 1, "--policy", "sjf-input", "--gather-ms", gather_ms)
    prompts = [" ".join(["w"] * (20 - 3 * i)) + f" r{i}" for i in range(6)]  # the last to come is the shortest

    async def burst():
        import aiohttp

        async with aiohttp.ClientSession() as s:
            async def one(i):
                body = {"messages": [{"role": "user", "content": prompts[i]}], "max_tokens": 4}
                async with s.post(g.url + "/v1/chat/completions", json=body) as r:
                    await r.read()

            server.pause()  # what reaches the backend waits there: its one slot stays taken
            calls = [asyncio.create_task(one(0))]
            if not gather_ms:  # the first goes at once, the rest queue behind it
                await until(lambda: server.open_streams == 1, what="the first request sent")
            calls += [asyncio.create_task(one(i)) for i in range(1, 6)]  # within the window, when there is one
            await until(lambda: metric(g.url, "rtlm:num_requests_waiting") + server.open_streams == 6,
                        what="the burst in the queue and at the backend")
            server.resume()
            await asyncio.gather(*calls)

    asyncio.run(burst())
    if gather_ms:
        assert server.started == prompts[::-1]  # gathered whole: shortest prompt first, from the first send
    else:
        assert server.started[0] == prompts[0] and server.started[1:] == prompts[:0:-1]  # the first went at once


def test_a_backend_that_dies_mid_stream_sends_an_error_event_and_is_recorded_failed(start, tmp_path):
    gateway, fake = start
    server = fake(ms_per_token=2)
    g = gateway("--url", server.url, "--policy", "fcfs", "--predictor", "none", "--out", tmp_path / "run")
    body = {"messages": [{"role": "user", "content": "CUT this answer"}], "max_tokens": 30, "stream": True}
    code, text = post(g.url + "/v1/chat/completions", body)
    events = [json.loads(line[5:]) for line in text.splitlines() if line.startswith("data:") and "[DONE]" not in line]
    assert code == 200 and len(events) == 3  # two tokens, then the error event (the backend dropped the stream)
    assert events[-1]["error"]["type"] == "upstream_error"
    assert post(g.url + "/v1/completions", {"prompt": "after it", "max_tokens": 4})[0] == 200  # still serving
    code, log = g.stop()
    assert code == 0, log
    _, df = load_run(tmp_path / "run")
    assert sorted(df["status"]) == ["failed", "finished"]


def test_backends_priced_by_their_own_tables(start, run_cli, tmp_path):
    gateway, fake = start
    a, b = fake(ms_per_token=1), fake(ms_per_token=1)
    r = run_cli("gateway", "--url", a.url, "--backend", "http://127.0.0.1:1=h200")
    assert r.exit_code == 2 and "--backend http://127.0.0.1:1=h200: give URL=TIMING with URL one of" in r.output
    r = run_cli("gateway", "--url", a.url, "--url", b.url, "--offload")
    assert r.exit_code == 2 and "--offload needs the backends' own speeds" in r.output
    g = gateway("--url", a.url, "--url", b.url, "--backend", f"{a.url}=h200", "--backend", f"{b.url}=vllm-cpu",
                "--offload", "--out", tmp_path / "run")
    for i in range(4):
        assert post(g.url + "/v1/completions", {"prompt": f"p{i}", "max_tokens": 4})[0] == 200
    assert g.stop()[0] == 0
    meta, df = load_run(tmp_path / "run")
    assert meta["offload"] and [w["spec"] for w in meta["workers"]] == [f"{a.url}=h200", f"{b.url}=vllm-cpu"]
    assert set(df["backend"]) == {a.url}  # one at a time: the fast backend (h200's table) is free for each


def test_the_predictor_in_use_and_how_well_it_ranks_the_served_requests_are_on_metrics(start, tmp_path):
    """The shipped predictor's version, and its rolling Kendall tau and absolute error, as the run's own
    records give them (predicted against realised tokens of every finished request)."""
    from prometheus_client.parser import text_string_to_metric_families
    from scipy.stats import kendalltau

    from rtlm_cli.predict.model import Predictor

    gateway, fake = start
    server = fake()
    g = gateway("--url", server.url, "--out", tmp_path / "run")
    for i in range(24):  # answers of 3-40 tokens by the prompt's hash (rtlm_cli.testing.tokens_for)
        assert post(g.url + "/v1/completions", {"prompt": f"question {i}: " + "why " * i, "max_tokens": 256})[0] == 200
    text = urllib.request.urlopen(g.url + "/metrics").read().decode()
    g.stop()
    samples = {s.name: s for f in text_string_to_metric_families(text) for s in f.samples}
    version = Predictor.load("reference").version
    assert samples["rtlm:predictor_info"].labels == {"version": version} and samples["rtlm:predictor_info"].value == 1
    meta, df = load_run(tmp_path / "run")
    assert meta["predictor_version"] == version and len(df) == 24
    assert samples["rtlm:predictor_window_requests"].value == 24
    tau = kendalltau(df["predicted_tokens"], df["output_tokens"]).statistic
    assert samples["rtlm:predictor_kendall_tau"].value == pytest.approx(tau, abs=1e-9)
    error = (df["predicted_tokens"] - df["output_tokens"]).abs().mean()
    assert samples["rtlm:predictor_abs_error_tokens"].value == pytest.approx(error, rel=1e-9)


def test_every_metric_the_grafana_dashboard_queries_is_served():
    """docs/grafana/rtlm-gateway.json queries only what a gateway's /metrics serves (with a predictor)."""
    import re

    from rtlm_cli.gateway.metrics import ServiceMetrics

    dashboard = json.loads((ROOT / "docs" / "grafana" / "rtlm-gateway.json").read_text())
    queried = {name for panel in dashboard["panels"] for target in panel["targets"]
               for name in re.findall(r"rtlm:[a-z0-9_]+", target["expr"])}
    metrics = ServiceMetrics(["http://b:8000"], "reference-0123456789")
    metrics.observe_state(0.0, 0, {"http://b:8000": (0, False)})  # what a scrape does first
    served = {line.split("{")[0].split(" ")[0] for line in metrics.exposition().decode().splitlines()
              if line and not line.startswith("#")}
    assert len(queried) >= 12 and queried <= served, sorted(queried - served)
