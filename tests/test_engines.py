"""Engines over HTTP against a fake OpenAI-compatible server (fast; the real vLLM is in test_vllm.py):
profiling with requests in flight, direct dispatch with priorities, the preflight, faults, limits."""

import json
import os
import signal
import time

import pandas as pd
import pytest
from helpers import in_group, left_in_group, one_line_error, wait_until

from rtlm_cli.formats.profile import MEASURED_COLUMNS, load_profile
from rtlm_cli.formats.run import load_run
from rtlm_cli.testing import tokens_for


@pytest.fixture(scope="module")
def predictor():
    """The shipped predictor of reference-64 (training is tested in test_predictor; here it only orders)."""
    return "reference-64"


def serve(run_cli, url, out, *extra, policy="fcfs", n=8):
    return run_cli("serve-local", "--engine", "openai", "--url", url, "--profile", "reference-64", "--policy", policy,
                   "--arrivals", "burst", "-n", n, "--no-dashboard", "--out", out, *extra)


def test_profile_through_a_server_with_requests_in_flight(servers, run_cli, tmp_path, prompt_file):
    a, b = servers(max_running=2), servers(max_running=2)
    out = tmp_path / "prof"
    r = run_cli("profile", "--engine", "openai", "--url", a.url, "--url", b.url, "--prompts", prompt_file, "-n", 6,
                "--max-new-tokens", 16, "--max-concurrency", 3, "--calibrate", "--calibration-batches", "1,2",
                "--calibration-contexts", 16, "--out", out)
    assert r.exit_code == 0, r.output
    meta, df = load_profile(out)
    assert len(df) == 6 and set(MEASURED_COLUMNS) <= set(df.columns)
    for _, row in df.iterrows():
        n, reason = tokens_for(row["prompt"], 16)
        assert (row["output_tokens"], row["finish_reason"], row["ended"]) == (n, reason, reason == "stop")
    assert (df["batch_id"] == -1).all() and df["batch_size"].between(1, 3).all()
    assert (df["ttft_s"] > 0).all() and (df["e2e_s"] >= df["ttft_s"]).all() and (df["service_s"] == df["e2e_s"]).all()
    assert max(a.peak_streams, b.peak_streams) <= 3 and len(a.started) >= 3 and len(b.started) >= 3  # shared in turn
    assert meta["engine"]["name"] == "openai" and meta["engine"]["max_concurrency"] == 3
    assert meta["calibration"]["engine"] == "openai" and len(pd.read_parquet(out / "timing.parquet")) == 2


def test_every_url_must_serve_the_same_model(servers, run_cli, tmp_path, prompt_file):
    a, b = servers(), servers(model="another")
    r = run_cli("profile", "--engine", "openai", "--url", a.url, "--url", b.url, "--prompts", prompt_file, "-n", 2,
                "--out", tmp_path / "p")
    assert r.exit_code == 2 and "every URL must serve the same model" in one_line_error(r)
    assert not (tmp_path / "p").exists()


def test_unreachable_url_is_a_one_line_error(run_cli, tmp_path):
    r = serve(run_cli, "http://127.0.0.1:9", tmp_path / "run")
    assert r.exit_code == 2 and "cannot reach http://127.0.0.1:9" in one_line_error(r)
    assert "needs --url" in one_line_error(run_cli("serve-local", "--engine", "openai", "--profile", "reference-64",
                                                   "--arrivals", "burst", "--out", tmp_path / "x"))


def test_direct_dispatch_passes_the_policy_key_as_priority(servers, run_cli, tmp_path, predictor):
    server = servers(max_running=1, ms_per_token=10)
    r = serve(run_cli, server.url, tmp_path / "sjf", "--predictor", predictor, policy="sjf-pred", n=10)
    assert r.exit_code == 0, r.output
    meta, df = load_run(tmp_path / "sjf")
    assert meta["mode"] == "real" and meta["engine"] == "openai" and meta["batching"] == "continuous"
    assert (df["status"] == "finished").all() and df["priority"].notna().all()
    # priced by the profile's own table, measured with static batches: a warning, and the run says so
    assert "measured with static batches" in meta["timing_warning"] and "--timing vllm-cpu" in meta["timing_warning"]
    assert "warning:" in r.output and meta["timing"] == [{"backend": server.url, "table": "reference-64",
                                                          "measured_by": "hf"}]
    # one runs at a time: after the first, the server starts them in priority order, i.e. by predicted length
    order = df.sort_values("first_token_s")
    assert order["predicted_tokens"].iloc[1:].is_monotonic_increasing
    assert order["priority"].iloc[1:].is_monotonic_increasing
    assert (df["prediction_cost_s"] > 0).all() and (df["start_s"] >= df["arrival_s"]).all()
    # FCFS sends no priority: the engine's own order
    sent = len(server.bodies)
    r = serve(run_cli, server.url, tmp_path / "fcfs", "--timing", "vllm-cpu", policy="fcfs", n=6)
    assert r.exit_code == 0, r.output
    assert load_run(tmp_path / "fcfs")[0]["timing_warning"] is None and "warning:" not in r.output  # an engine's table
    assert all("priority" not in b for b in server.bodies[sent:])
    assert load_run(tmp_path / "fcfs")[1]["priority"].isna().all()


@pytest.mark.parametrize("behaviour,message", [("refuse", "refused a request with a priority"),
                                               ("ignore", "serves in arrival order")])
def test_the_preflight_refuses_a_server_without_priorities(servers, run_cli, tmp_path, predictor, behaviour, message):
    server = servers(max_running=1, ms_per_token=5, priorities=behaviour)
    r = serve(run_cli, server.url, tmp_path / "run", "--predictor", predictor, "--timing", "vllm-cpu", policy="rtlm")
    text = one_line_error(r)
    assert r.exit_code == 2 and message in text and "--scheduling-policy priority" in text
    assert not (tmp_path / "run").exists()
    assert serve(run_cli, server.url, tmp_path / "fcfs", policy="fcfs", n=3).exit_code == 0  # FCFS needs none


def test_a_server_dying_mid_run_leaves_failed_records_and_a_complete_run(servers, run_cli, tmp_path):
    # the server dies once its third answer is sent: the one running beside it and the 16 queued fail
    server = servers(max_running=2, ms_per_token=30, die_at_answer=3)
    r = serve(run_cli, server.url, tmp_path / "run", n=20)
    assert r.exit_code == 0, r.output
    meta, df = load_run(tmp_path / "run")
    assert meta["complete"] and len(df) == 20
    done, failed = df[df["status"] == "finished"], df[df["status"] == "failed"]
    assert len(done) == server.answered == 3 and len(failed) == 17
    assert failed["error"].str.len().gt(0).all()
    assert (done["finish_reason"].isin(["stop", "length"])).all()


def test_5xx_cut_streams_and_recorded_retries(servers, run_cli, tmp_path):
    server = servers(max_running=4, ms_per_token=5)
    prompts = tmp_path / "p.txt"
    prompts.write_text("Please FAIL500 now.\nAnswer, then CUT the line.\nFAIL503ONCE if you must.\nSay hello.\n")
    common = ("serve-local", "--engine", "openai", "--url", server.url, "--prompts", prompts, "--timing", "reference-64",
              "--arrivals", "burst", "-n", 4, "--seed", 1, "--no-dashboard")
    r = run_cli(*common, "--retries", 1, "--out", tmp_path / "run")
    assert r.exit_code == 0, r.output
    rows = load_run(tmp_path / "run")[1]
    assert (rows["status"] == "failed").sum() == 2 and (rows["status"] == "finished").sum() == 2
    assert (rows["error"] == "HTTP 500: internal failure").sum() == 1
    cut = rows[(rows["status"] == "failed") & (rows["error"] != "HTTP 500: internal failure")]
    assert len(cut) == 1 and cut["output_tokens"].iloc[0] == 0  # a cut stream is never recorded finished
    retried = rows[rows["retries"] == 1]
    assert len(retried) == 1 and retried["status"].iloc[0] == "finished"  # FAIL503ONCE, sent again
    r = run_cli(*common, "--out", tmp_path / "noretry")
    assert (load_run(tmp_path / "noretry")[1]["retries"] == 0).all()


def test_api_key_and_headers(servers, run_cli, tmp_path, monkeypatch):
    server = servers(api_key="s3cret")
    r = serve(run_cli, server.url, tmp_path / "no", n=2)
    assert r.exit_code == 2 and "HTTP 401" in one_line_error(r)
    monkeypatch.setenv("RTLM_API_KEY", "s3cret")
    r = serve(run_cli, server.url, tmp_path / "yes", "--header", "X-Team: rtlm", n=2)
    assert r.exit_code == 0, r.output
    assert all(h.get("X-Team") == "rtlm" for h in server.seen_headers)
    assert "is not 'Name: value'" in one_line_error(serve(run_cli, server.url, tmp_path / "bad", "--header", "no-colon", n=2))


def test_the_connection_pool_is_never_smaller_than_the_burst(servers, run_cli, tmp_path):
    server = servers(ms_per_token=40)  # runs everything at once: every stream stays open ~1 s
    r = serve(run_cli, server.url, tmp_path / "run", n=150)
    assert r.exit_code == 0, r.output
    assert server.peak_streams == 150  # aiohttp's default pool (100) would have queued 50 on the client


def test_ctrl_c_cancels_open_streams_and_keeps_the_finished(servers, run_cli, tmp_path):
    # Ctrl-C once the server has sent its third answer
    server = servers(max_running=1, ms_per_token=20, on_answer=(3, lambda: os.kill(os.getpid(), signal.SIGINT)))
    t0 = time.monotonic()
    r = serve(run_cli, server.url, tmp_path / "run", n=30)
    assert r.exit_code == 130 and time.monotonic() - t0 < 20
    meta, df = load_run(tmp_path / "run")
    assert not meta["complete"]
    assert (df["status"] == "finished").sum() >= 3 and (df["status"] == "cancelled").sum() >= 10
    assert set(df["status"]) <= {"finished", "cancelled"}


# the guard that ends a managed server's process group (engines/guard.py), with a stand-in server:
# a process that starts a child of its own, as vLLM starts its engine core
STAND_IN = "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)']); time.sleep(120)"
PARENT = """import subprocess, sys, time
guard = subprocess.Popen([sys.executable, '-m', 'rtlm_cli.engines.guard', '--', sys.executable, '-c', {stand_in!r}],
                         stderr=open({log!r}, 'w'), start_new_session=True)
print(guard.pid, flush=True)
time.sleep(120)
"""


@pytest.mark.parametrize("how", ["rtlm killed", "rtlm stops the server"])
def test_the_guard_ends_the_servers_whole_group_and_says_why(tmp_path, how):
    import subprocess
    import sys

    log = tmp_path / "server.log"
    parent = subprocess.Popen([sys.executable, "-c", PARENT.format(stand_in=STAND_IN, log=str(log))],
                              stdout=subprocess.PIPE, text=True)
    group = None
    try:
        group = int(parent.stdout.readline())  # the guard leads its own group
        wait_until(lambda: len(in_group(group, zombies=False)) >= 3, 30, "the guard, the server and its child")
        assert len(in_group(group, zombies=False)) == 3
        time.sleep(1.0)  # nothing ends the group while rtlm is there
        assert len(in_group(group, zombies=False)) == 3
        if how == "rtlm killed":
            parent.kill()  # SIGKILL: nothing of rtlm's own runs
        else:
            os.kill(group, signal.SIGTERM)  # what VLLMServer.stop sends the guard
        left = left_in_group(group, 30, zombies=False)  # a stopped guard waits for rtlm to reap it
        assert not left, left
        expected = "is gone" if how == "rtlm killed" else f"SIGTERM from another process (pid {os.getpid()}"
        assert expected in log.read_text()
    finally:
        parent.kill()
        parent.wait(10)
        if group is not None and in_group(group, zombies=False):
            os.killpg(group, signal.SIGKILL)



def replay_process(url, out, *extra):
    """serve-local through the fake server in a subprocess (so that it can be SIGKILLed)."""
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "rtlm_cli.cli", "serve-local", "--engine", "openai", "--url", url, "--profile",
           "reference-64", "--policy", "fcfs", "--arrivals", "burst", "-n", "30", "--no-dashboard", "--flush", "0.1",
           "--out", str(out), *map(str, extra)]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def test_a_replay_killed_with_sigkill_keeps_what_finished(servers, run_cli, tmp_path):
    procs = []
    # the fake server SIGKILLs the replay once it has sent its 10th answer
    server = servers(max_running=1, ms_per_token=10, on_answer=(10, lambda: os.kill(procs[0].pid, signal.SIGKILL)))
    procs.append(replay_process(server.url, tmp_path / "run"))
    assert procs[0].wait(120) == -signal.SIGKILL
    meta, df = load_run(tmp_path / "run")
    finished = (df["status"] == "finished").sum()
    # answers 1-9 were recorded by the replay before the kill; a 0.1 s flush holds at most ~1 more
    assert not meta["complete"] and 8 <= finished <= 10 and len(df) == finished
    r = run_cli("report", tmp_path / "run", "--json")
    assert r.exit_code == 0, r.output
    row = json.loads(r.stdout)["runs"][0]
    assert row["completed"] == finished and row["complete"] is False
    assert "is incomplete" in " ".join(r.stderr.split())


def test_a_killed_overwrite_leaves_the_previous_run_whole(servers, tmp_path):
    server = servers(max_running=2, ms_per_token=5)
    out = tmp_path / "run"
    first = replay_process(server.url, out)
    assert first.wait(120) == 0, first.stderr.read()
    before = load_run(out)
    procs = []
    slow = servers(max_running=1, ms_per_token=10, on_answer=(5, lambda: os.kill(procs[0].pid, signal.SIGKILL)))
    procs.append(replay_process(slow.url, out, "--overwrite"))
    assert procs[0].wait(120) == -signal.SIGKILL
    meta, df = load_run(out)  # the old run, untouched
    assert meta["complete"] and meta == before[0] and df.equals(before[1])
    partial = load_run(out.with_name("run.partial"))[0]  # the killed one beside it, readable
    assert not partial["complete"]


def test_the_fake_server_prices_its_tokens_by_a_timing_table_at_its_running_count(servers):
    import urllib.request

    from rtlm_cli.formats.timing import load_timing_table
    from rtlm_cli.serve.costmodel import CostModel, bucket

    server = servers(timing="vllm-cpu")
    cost = CostModel.from_table(load_timing_table("vllm-cpu"))
    context = bucket(30 + 2 + 5)
    server.running = 1
    assert server._step_s("a b", 5) == pytest.approx(cost.step(1, context))
    server.running = 8  # a fuller engine steps slower, as vLLM-CPU does
    assert server._step_s("a b", 5) == pytest.approx(cost.step(8, context))
    assert cost.step(8, context) > cost.step(1, context)
    assert server._step_s("a b", 0) == pytest.approx(cost.prefill(1, bucket(32)))  # the first token: its prefill
    server.running = 0
    body = json.dumps({"messages": [{"role": "user", "content": "a b"}], "max_tokens": 6, "stream": True}).encode()
    t0 = time.perf_counter()
    urllib.request.urlopen(urllib.request.Request(server.url + "/v1/chat/completions", data=body,
                                                  headers={"Content-Type": "application/json"})).read()
    expected = cost.prefill(1, bucket(32)) + sum(cost.step(1, bucket(32 + i)) for i in range(1, 6))
    assert time.perf_counter() - t0 == pytest.approx(expected, rel=0.5, abs=0.05)
