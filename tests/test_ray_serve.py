"""rtlm's router inside Ray Serve, for real: a two-node Ray cluster on this machine
(``ray.cluster_utils.Cluster``), two replicas of the example app's forwarder (one per node) over two
fake OpenAI servers, the rtlm router and its capacity queue actor. What the fake servers saw is the
evidence (their own peaks of open streams, the order requests started), not rtlm's counters.

One cluster and one application for the module (Ray and Serve take ~10 s to start on 2 cores); each
test leaves the application healthy. Ray is shut down by the fixture that started it.
"""

import asyncio
import contextlib
import os

import aiohttp
import pytest
from helpers import wait_until

from rtlm_cli.engines.vllm import free_port
from rtlm_cli.testing import FakeOpenAI

pytestmark = pytest.mark.ray
K = 2  # max_ongoing_requests per replica
MS_PER_TOKEN = 10


@pytest.fixture(scope="module")
def ray_app():
    ray = pytest.importorskip("ray")
    from ray import serve
    from ray.cluster_utils import Cluster

    from rtlm_cli.integrations.ray_serve.app import build

    # the controller checks deployment actors every 10 s by default: a killed queue is replaced sooner here
    saved = os.environ.get("RAY_SERVE_DEPLOYMENT_ACTOR_HEALTH_CHECK_PERIOD_S")
    os.environ["RAY_SERVE_DEPLOYMENT_ACTOR_HEALTH_CHECK_PERIOD_S"] = "0.5"
    fakes = [FakeOpenAI(ms_per_token=MS_PER_TOKEN) for _ in range(2)]
    cluster = None
    try:
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False})
        cluster.add_node(num_cpus=2)
        ray.init(address=cluster.address, log_to_driver=False)
        port = free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        urls = [f"http://127.0.0.1:{f.port}" for f in fakes]
        serve.run(build(urls, policy="sjf-input", predictor=None, max_ongoing_requests=K,
                        replica_options={"max_replicas_per_node": 1, "ray_actor_options": {"num_cpus": 0.1}}),
                  name="rtlm", route_prefix="/")
        yield {"ray": ray, "fakes": fakes, "url": f"http://127.0.0.1:{port}"}
    finally:
        with contextlib.suppress(Exception):
            serve.shutdown()
        ray.shutdown()
        if cluster is not None:
            cluster.shutdown()
        for f in fakes:
            f.close()
        if saved is None:
            os.environ.pop("RAY_SERVE_DEPLOYMENT_ACTOR_HEALTH_CHECK_PERIOD_S", None)
        else:
            os.environ["RAY_SERVE_DEPLOYMENT_ACTOR_HEALTH_CHECK_PERIOD_S"] = saved


def named(ray, part: str) -> list[str]:
    return [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
            if a["namespace"] == "serve" and part in a["name"]]


def queue(ray):
    """The capacity queue actor (the live one: a killed one is replaced under the same name)."""
    name = wait_until(lambda: named(ray, "::rtlm_queue"), what="the capacity queue actor")[0]
    return ray.get_actor(name, namespace="serve")


def stats(ray) -> dict:
    return ray.get(queue(ray).stats.remote(), timeout=10)


def body(words: int, max_tokens: int = 3) -> dict:
    return {"model": "smollm2", "prompt": " ".join(["w"] * words), "max_tokens": max_tokens, "stream": True}


async def post(session, url: str, payload: dict, timeout_s: float = 60.0):
    try:
        async with session.post(url + "/v1/completions", json=payload,
                                timeout=aiohttp.ClientTimeout(total=timeout_s)) as r:
            return r.status, await r.text()
    except (aiohttp.ClientError, asyncio.TimeoutError) as e:
        return None, repr(e)


def begin(app):
    """Each fake server's count of started requests, and its peak reset to what is open now."""
    for f in app["fakes"]:
        f.peak_streams = f.open_streams
    return [len(f.started) for f in app["fakes"]]


def pause(app):
    for f in app["fakes"]:
        f.pause()


def resume(app):
    for f in app["fakes"]:
        f.resume()


def test_a_burst_of_64_is_served_whole_in_the_policys_order_at_most_k_per_replica(ray_app):
    ray = ray_app["ray"]
    before = begin(ray_app)
    pause(ray_app)
    words = list(range(1, 69))  # 4 take the free slots as they come; 64 wait in rtlm's queue

    async def burst():
        async with aiohttp.ClientSession() as s:
            tasks = [asyncio.create_task(post(s, ray_app["url"], body(w))) for w in reversed(words)]
            await asyncio.to_thread(wait_until, lambda: stats(ray)["waiting"] == 64, 30, "64 requests waiting")
            resume(ray_app)
            return await asyncio.gather(*tasks)

    try:
        results = asyncio.run(burst())
    finally:
        resume(ray_app)
    assert [status for status, _ in results] == [200] * 68, results[:3]
    assert all("[DONE]" in text for _, text in results)
    for f, n in zip(ray_app["fakes"], before):
        assert f.peak_streams <= K
        started = [len(p.split()) for p in f.started[n:]]
        assert len(started) >= 2 + 16  # both replicas took their share (least-loaded)
        # after the K requests placed before the burst queued, shortest prompt first (sjf-input); two
        # requests handed out together for one replica's K slots may race each other through Ray to
        # the server, so only swaps closer than K apart are allowed (FIFO would invert most pairs)
        tail = started[K:]
        far = [(i, j) for i in range(len(tail)) for j in range(i + K, len(tail)) if tail[i] > tail[j]]
        near = sum(a > b for a, b in zip(tail, tail[1:]))
        assert not far and near <= len(tail) // 4, started
    assert stats(ray)["placed"] == 0 and stats(ray)["waiting"] == 0


def test_a_client_that_goes_away_gives_its_token_back_waiting_or_placed(ray_app):
    ray = ray_app["ray"]
    begin(ray_app)
    pause(ray_app)
    cancelled0 = stats(ray)["cancelled"]

    async def scenario():
        async with aiohttp.ClientSession() as s:
            blockers = [asyncio.create_task(post(s, ray_app["url"], body(w))) for w in (1, 2, 3)]
            leaver = asyncio.create_task(post(s, ray_app["url"], body(4)))  # placed, then its client leaves
            await asyncio.to_thread(wait_until, lambda: stats(ray)["placed"] == 4, 30, "4 placed")
            waiter = asyncio.create_task(post(s, ray_app["url"], body(5), timeout_s=1.0))  # waits, then leaves
            assert (await waiter)[0] is None
            await asyncio.to_thread(wait_until, lambda: stats(ray)["cancelled"] == cancelled0 + 1, 30,
                                    "the waiting request withdrawn")
            leaver.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await leaver
            await asyncio.to_thread(wait_until, lambda: stats(ray)["placed"] == 3, 30, "the placed token back")
            late = asyncio.create_task(post(s, ray_app["url"], body(6)))  # takes the slot that was given back
            await asyncio.to_thread(wait_until, lambda: stats(ray)["placed"] == 4, 30, "the slot taken again")
            resume(ray_app)
            return await asyncio.gather(*blockers, late)

    try:
        results = asyncio.run(scenario())
    finally:
        resume(ray_app)
    assert [status for status, _ in results] == [200] * 4
    wait_until(lambda: stats(ray)["placed"] == 0, 30, "every token back")
    assert all(f.peak_streams <= K for f in ray_app["fakes"])


def burst_after(app, n: int = 16) -> list:
    async def go():
        async with aiohttp.ClientSession() as s:
            return await asyncio.gather(*[post(s, app["url"], body(w)) for w in range(1, n + 1)])

    return asyncio.run(go())


def test_a_replica_killed_mid_run_is_replaced_its_tokens_reclaimed_and_nothing_waits_forever(ray_app):
    ray = ray_app["ray"]
    begin(ray_app)
    pause(ray_app)
    old = set(named(ray, "#Forwarder#"))

    async def scenario():
        async with aiohttp.ClientSession() as s:
            tasks = [asyncio.create_task(post(s, ray_app["url"], body(w))) for w in range(1, 9)]
            await asyncio.to_thread(wait_until, lambda: stats(ray)["waiting"] == 4, 30, "4 placed, 4 waiting")
            ray.kill(ray.get_actor(sorted(old)[0], namespace="serve"), no_restart=True)
            await asyncio.sleep(0.5)
            resume(ray_app)
            return await asyncio.gather(*tasks)

    try:
        results = asyncio.run(scenario())  # each answered or failed, within its timeout: none hangs
    finally:
        resume(ray_app)
    assert all(status is not None for status, _ in results), results
    assert [status for status, _ in results].count(200) >= 6  # only what the killed replica held may fail
    wait_until(lambda: len(set(named(ray, "#Forwarder#")) - old) == 1, 60, "Ray's replacement replica")
    wait_until(lambda: len(stats(ray)["replicas"]) == 2 and stats(ray)["placed"] == 0, 60,
               "the queue to follow the new replica, every token back")
    begin(ray_app)
    assert [status for status, _ in burst_after(ray_app)] == [200] * 16
    assert all(f.peak_streams <= K for f in ray_app["fakes"])


def test_the_capacity_queue_killed_mid_run_is_replaced_and_nothing_waits_forever(ray_app):
    ray = ray_app["ray"]
    begin(ray_app)
    pause(ray_app)
    first = queue(ray)

    async def scenario():
        async with aiohttp.ClientSession() as s:
            tasks = [asyncio.create_task(post(s, ray_app["url"], body(w))) for w in range(1, 9)]
            await asyncio.to_thread(wait_until, lambda: stats(ray)["waiting"] == 4, 30, "4 placed, 4 waiting")
            ray.kill(first, no_restart=True)
            await asyncio.sleep(0.5)
            resume(ray_app)
            return await asyncio.gather(*tasks)

    try:
        results = asyncio.run(scenario())
    finally:
        resume(ray_app)
    assert [status for status, _ in results] == [200] * 8, results  # the waiting ones are routed anyway
    fresh = wait_until(lambda: _alive_stats(ray), 60, "the controller's new capacity queue")
    assert fresh["acquires"] < 8 + 16  # a new actor: it knows nothing of the old one's requests
    begin(ray_app)
    assert [status for status, _ in burst_after(ray_app)] == [200] * 16
    assert all(f.peak_streams <= K for f in ray_app["fakes"])
    assert stats(ray)["handed_out"] >= 16  # the new queue is the one handing out tokens again


def _alive_stats(ray):
    try:
        return stats(ray)
    except Exception:
        return None


def test_the_ingress_answers_bad_requests_openai_style_and_lists_the_backends_models(ray_app):
    async def go():
        async with aiohttp.ClientSession() as s:
            out = []
            for method, path, kw in (("POST", "/v1/completions", {"data": b"not json"}),
                                     ("POST", "/v1/completions", {"json": {"prompt": "hi"},
                                                                  "headers": {"x-rtlm-priority": "urgent"}}),
                                     ("POST", "/v1/chat/completions", {"json": {"messages": []}}),
                                     ("POST", "/v1/completions", {"json": {"prompt": "hi", "n": 2}}),
                                     ("GET", "/v1/models", {}), ("GET", "/nowhere", {})):
                async with s.request(method, ray_app["url"] + path, **kw) as r:
                    out.append((r.status, await r.json()))
            return out

    (bad_json, bad_header, no_messages, n2, models, nowhere) = asyncio.run(go())
    assert bad_json[0] == 400 and "not valid JSON" in bad_json[1]["error"]["message"]
    assert bad_header[0] == 400 and "x-rtlm-priority" in bad_header[1]["error"]["message"]
    assert no_messages[0] == 400 and n2[0] == 400
    assert models[0] == 200 and models[1]["data"][0]["id"] == "smollm2"
    assert nowhere[0] == 404


# -- without a cluster: the adapter's contract with the installed Ray, the ingress's limits, the router's count


def test_rays_private_names_that_rtlm_uses_are_where_the_adapter_expects_them():
    """Fails loudly when Ray moves what rtlm's router and queue actor stand on (adapter.py)."""
    import importlib
    import inspect

    from ray.serve.experimental.capacity_queue_router import CapacityQueueRouter

    from rtlm_cli.integrations.ray_serve import adapter

    for module, name in adapter.PRIVATE_IMPORTS:
        assert hasattr(importlib.import_module(module), name), f"Ray no longer has {module}.{name}"
    source = "".join(inspect.getsource(k) for k in CapacityQueueRouter.__mro__ if k.__module__.startswith("ray."))
    missing = [a for a in adapter.PRIVATE_ATTRIBUTES if f"self.{a}" not in source and f"def {a}(" not in source]
    assert not missing, f"Ray's capacity-queue router no longer has {missing}: update adapter.py"
    assert "is_retry" in inspect.signature(CapacityQueueRouter._choose_replica_for_request).parameters
    with pytest.raises(ImportError, match="RTLM_RAY_UNCHECKED"):
        adapter.check_version("9.9.9")


class FakeForwarder:
    """What the ingress calls: ``options(stream=True).remote(...)`` gives an async stream."""

    def __init__(self, gate: asyncio.Event | None = None):
        self.gate, self.calls = gate, 0

    def options(self, **kw):
        return self

    def remote(self, path, body, rtlm=None):
        self.calls += 1
        return self.stream()

    async def stream(self):
        if self.gate is not None:
            await self.gate.wait()
        yield {"status": 200}
        yield b'data: {"choices": []}\n\n'


def ingress_call(ingress, body: bytes, headers: dict | None = None):
    from starlette.requests import Request as HttpRequest

    raw = [(k.lower().encode(), v.encode()) for k, v in {"content-length": str(len(body)), **(headers or {})}.items()]
    scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": raw, "query_string": b""}

    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}

    return ingress(HttpRequest(scope, receive))


def test_the_ray_ingress_has_the_services_limits_auth_body_and_queue():
    from rtlm_cli.integrations.ray_serve.app import Ingress

    body = b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}'

    async def go():
        gate = asyncio.Event()
        forwarder = FakeForwarder(gate)
        ingress = Ingress.func_or_class(forwarder, predictor=None, api_key="k", max_body_kib=1, max_queue=1)
        assert (await ingress_call(ingress, body)).status_code == 401
        assert (await ingress_call(ingress, body, {"authorization": "Bearer wrong"})).status_code == 401
        auth = {"authorization": "Bearer k"}
        big = b'{"messages": [{"role": "user", "content": "' + b"x" * 2000 + b'"}]}'
        assert (await ingress_call(ingress, big, auth)).status_code == 413
        assert (await ingress_call(ingress, b"{not json", auth)).status_code == 400
        waiting = asyncio.create_task(ingress_call(ingress, body, auth))  # holds the one place in the queue
        await asyncio.sleep(0.01)
        full = await ingress_call(ingress, body, auth)
        assert full.status_code == 429 and full.headers["retry-after"] == "1"
        gate.set()
        assert (await waiting).status_code == 200 and forwarder.calls == 1

    asyncio.run(go())


def test_a_router_call_without_a_prediction_is_counted_and_logged_once(caplog):
    from rtlm_cli.integrations.ray_serve.router import RtlmRouter

    class Counter:
        value = 0

        def inc(self):
            self.value += 1

    class Pending:
        def __init__(self, kwargs):
            self.kwargs, self.args = kwargs, ()

    router = RtlmRouter.__new__(RtlmRouter)  # its Ray state is not needed to read a request's fields
    router.rtlm_predict, router.rtlm_unpredicted, router.rtlm_unpredicted_metric = None, 0, Counter()
    with caplog.at_level("WARNING", logger="ray.serve"):
        assert router.fields(Pending({"rtlm": {"predicted_tokens": 5.0}})) == {"predicted_tokens": 5.0}
        assert router.fields(Pending({})) == {} and router.fields(Pending({})) == {}
    assert router.stats() == {"unpredicted": 2} and router.rtlm_unpredicted_metric.value == 2
    assert sum("no prediction" in r.message for r in caplog.records) == 1
