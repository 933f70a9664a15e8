"""The real gateway benchmark's bookkeeping, without a server: a paced block (three arms paired on one
fresh server at a share of the day's capacity) resumes within a day and starts again on another, and
the capacity is always the day's own (this VM's speed changes by day)."""

import importlib.util
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from helpers import wait_until

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def gain(monkeypatch, tmp_path):
    """bench_gateway_gain with its server, warm-up, clock and arms replaced; ``log`` says what ran."""
    spec = importlib.util.spec_from_file_location("bench_gateway_gain", ROOT / "scripts" / "bench" / "gateway_gain.py")
    mod = importlib.util.module_from_spec(spec)
    monkeypatch.setattr(sys, "path", list(sys.path))  # the script puts scripts/ on the path for benchlib
    spec.loader.exec_module(mod)
    log = {"servers": 0, "arms": [], "bursts": 0, "day": "2026-12-07"}

    @contextmanager
    def server(*args, **kwargs):
        log["servers"] += 1
        yield type("Server", (), {"url": "http://127.0.0.1:1"})()

    def rate_arm(url, policy, prompts, n, path, rate, pred, seed=0, bench_extra=(), gateway_extra=()):
        log["arms"].append((policy, rate, gateway_extra))
        return {"mean_e2el_ms": 1000.0, "request_goodput": 0.5, "completed": n}

    def bench(url, prompts, n, out, *args, **kwargs):
        log["bursts"] += 1
        return {"completed": 32, "duration": 64.0}

    monkeypatch.setattr(mod, "VLLMServer", server)
    monkeypatch.setattr(mod, "warm_up", lambda url: None)
    monkeypatch.setattr(mod, "rate_arm", rate_arm)
    monkeypatch.setattr(mod, "bench", bench)
    monkeypatch.setattr(mod, "load_profile", lambda path: ({}, [None] * 32))
    monkeypatch.setattr(mod, "now", lambda: log["day"] + "T03:00:00+00:00")
    out = {"bursts": {"8": {"fcfs": [{"started": "2026-12-06T20:00:00+00:00", "completed": 32, "duration": 32.0}]}}}
    saved = []
    ctx = {"out": out, "draws": [tmp_path / "d0", tmp_path / "d1"], "work": tmp_path, "pred": tmp_path / "pred",
           "save": lambda: saved.append(1), "fixed_order": False}
    return mod, log, ctx


ARMS = {"direct fcfs": None, "gateway rtlm": "rtlm", "gateway oracle": "oracle"}


def test_capacity_is_todays_own_measured_when_the_bursts_are_from_another_day(gain):
    mod, log, ctx = gain
    # yesterday's bursts ran at 1 req/s; today's FCFS bursts (measured now, one per draw) at 0.5
    assert mod.capacity(ctx["out"], ctx["draws"], ctx["work"], ctx["save"]) == pytest.approx(0.5)
    assert (log["servers"], log["bursts"]) == (1, 2)
    assert [r["draw"] for r in ctx["out"]["capacity"]["2026-12-07"]] == [0, 1]
    assert mod.capacity(ctx["out"], ctx["draws"], ctx["work"], ctx["save"]) == pytest.approx(0.5)
    assert log["bursts"] == 2  # kept: not measured twice in a day
    ctx["out"]["bursts"]["8"]["fcfs"].append({"started": "2026-12-07T01:00:00+00:00", "completed": 32, "duration": 16.0})
    assert mod.capacity(ctx["out"], ctx["draws"], ctx["work"], ctx["save"]) == pytest.approx(2.0)  # today's bursts


def test_a_paced_block_resumes_within_its_day_and_runs_again_whole_on_another(gain):
    mod, log, ctx = gain
    block = {}
    mod.paced_block(block, ARMS, 0.9, Path("p.jsonl"), 300, 0, "poisson-0.9-s0", ctx,
                    gateway_extra={"oracle": ("--profile", "X")})
    assert block["day"] == "2026-12-07" and block["rate_rps"] == pytest.approx(0.45)
    assert sorted(block["arms"]) == sorted(ARMS) and sorted(a["position"] for a in block["arms"].values()) == [0, 1, 2]
    assert sorted(log["arms"], key=str) == sorted([(None, 0.45, ()), ("rtlm", 0.45, ()), ("oracle", 0.45, ("--profile", "X"))],
                                                  key=str)
    # complete: another day leaves it alone (no server started)
    servers, log["day"] = log["servers"], "2026-12-08"
    mod.paced_block(block, ARMS, 0.9, Path("p.jsonl"), 300, 0, "poisson-0.9-s0", ctx)
    assert log["servers"] == servers and block["day"] == "2026-12-07"
    # incomplete, same day: only the missing arm, at the block's own rate
    del block["arms"]["gateway rtlm"]
    log["day"], log["arms"] = "2026-12-07", []
    mod.paced_block(block, ARMS, 0.9, Path("p.jsonl"), 300, 0, "poisson-0.9-s0", ctx)
    assert log["arms"] == [("rtlm", 0.45, ())]
    # incomplete, begun another day: all three again, at the new day's capacity
    del block["arms"]["gateway oracle"]
    log["day"], log["arms"] = "2026-12-08", []
    ctx["out"]["capacity"] = {"2026-12-08": [{"completed": 10, "duration": 40.0}] * 2}
    mod.paced_block(block, ARMS, 0.9, Path("p.jsonl"), 300, 0, "poisson-0.9-s0", ctx)
    assert block["day"] == "2026-12-08" and block["rate_rps"] == pytest.approx(0.225) and len(log["arms"]) == 3


def test_the_overload_and_poisson_tables_read_the_blocks(gain):
    mod, log, ctx = gain
    arms = lambda names, goodput: {a: {"completed": 400, "rtlm_shed": i, "request_goodput": g, "duration": 1000.0, "mean_e2el_ms": 2e4,
                                       "rtlm_mean_e2el_ms": 2e4 * (1 - 1e-3), "p99_e2el_ms": 4e4}
                                   for i, (a, g) in enumerate(zip(names, goodput))}
    block = lambda goodput, names=mod.OVERLOAD_ARMS: {"day": "2026-12-07", "rate_rps": 0.6, "arms": arms(names, goodput)}
    record = {"overload": {"requests": 400, "deadline_s": 30, "seeds": {"7": block((0.3, 0.45, 0.48)),
                                                                          "8": block((0.4, 0.52, 0.6))}},
              "poisson": {"0.9": {"requests": 300, "seeds": {"0": block((0, 0, 0), mod.POISSON_ARMS),
                                                              "1": {"day": "2026-12-07", "arms": {}}}}}}
    text = mod.overload_markdown(record)
    assert "| 7 (2026-12-07, 0.600 req/s) | gateway rtlm + shed | 400 | 2 | 0.480 (1000 s) | 1.60 | 480 | 1.60 |" in text
    assert "| over seeds | gateway rtlm + shed |  |  |  | 1.55 ± " in text
    poisson = mod.poisson_markdown(record)
    assert poisson.count("| 0.90 (0.600 req/s) |") == 3 and "+0.10% to +0.10%" in poisson  # the incomplete seed left out
    assert "nan" not in poisson and "| 1 | 20.00 | 20.00 | +0.00 |" in poisson  # one seed: no interval printed


def test_a_bench_stopped_with_sigterm_stops_what_it_started(tmp_path):
    """A long benchmark is stopped with SIGTERM (nohup leaves SIGINT ignored): the load generator it
    runs with `subprocess.run` goes with it, and its `finally` blocks run."""
    child_pid, cleaned = tmp_path / "child.pid", tmp_path / "cleaned"
    script = (f"import sys, subprocess; sys.path.insert(0, {str(ROOT / 'scripts' / 'bench')!r}); import benchlib\n"
              "benchlib.exit_on_sigterm()\n"
              "try:\n"
              f"    subprocess.run(['sh', '-c', 'echo $$ > {child_pid}; exec sleep 60'])\n"
              "finally:\n"
              f"    open({str(cleaned)!r}, 'w').close()\n")
    proc = subprocess.Popen([sys.executable, "-c", script])
    try:
        pid = int(wait_until(lambda: child_pid.exists() and child_pid.read_text().strip(), 30, "the child's pid"))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 143
        assert cleaned.exists()
        time.sleep(0.2)
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # the child was killed and reaped by subprocess.run
    finally:
        proc.kill()


def test_bench_continuous_refuses_an_unknown_slo_run():
    """A misspelt --slo-runs name is an error, not a deadlines part that quietly runs FCFS alone."""
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench" / "continuous.py"), "--gateway", "--fast",
                           "reference", "--slo-runs", "rtlm gateway+shed"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "unknown run 'rtlm gateway+shed'" in done.stderr and "'rtlm gateway + shed'" in done.stderr
    assert "Traceback" not in done.stderr


def test_arms_run_in_a_latin_square_over_blocks():
    sys.path.insert(0, str(ROOT / "scripts" / "bench"))
    try:
        from benchlib import arm_order
    finally:
        sys.path.remove(str(ROOT / "scripts" / "bench"))
    arms = ["fcfs", "rtlm", "oracle"]
    rows = [arm_order(arms, b) for b in range(3)]
    assert all(sorted(r) == sorted(arms) for r in rows)
    assert all(sorted(r[i] for r in rows) == sorted(arms) for i in range(3))  # each arm once in each position
    assert arm_order(arms, 3) == rows[0] and arm_order(arms, 5, fixed=True) == arms
