"""serve-local end to end: the simulator and the real executor on the fake engine, bad inputs."""

import json

import numpy as np
import pandas as pd
import pytest
from helpers import one_line_error
from typer.testing import CliRunner

from rtlm_cli.cli import app
from rtlm_cli.engines.fake import FakeEngine
from rtlm_cli.formats.profile import load_profile
from rtlm_cli.formats.run import load_run


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("serve")
    run = CliRunner().invoke
    r = run(app, ["profile", "--model", "fake", "-n", "120", "--max-new-tokens", "128", "--calibrate",
                  "--calibration-batches", "1,2,4,8", "--calibration-contexts", "64,512", "--out", str(d / "prof")])
    assert r.exit_code == 0, r.output
    r = run(app, ["train-predictor", str(d / "prof"), "--out", str(d / "pred"), "--threads", "1", "--no-ablation", "--rounds", "50"])
    assert r.exit_code == 0, r.output
    return d


def test_simulated_run_format_and_summary(setup, run_cli, tmp_path):
    out = tmp_path / "run"
    r = run_cli("serve-local", "--simulate", "--profile", setup / "prof", "--predictor", setup / "pred",
                "--policy", "rtlm", "--load", 0.8, "-n", 300, "--slo-factor", 5, "--out", out, "--json")
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout)
    meta, df = load_run(out)
    assert meta["mode"] == "simulated" and meta["policy"] == "rtlm" and meta["complete"]
    assert meta["workload"]["offered_load"] == pytest.approx(0.8)
    assert len(df) == 300 and (df["status"] == "finished").all()
    assert summary["completed"] == 300
    # each deadline is arrival + 5 x its predicted service time; the miss rate is what the rows show
    assert np.allclose(df["deadline_s"], df["arrival_s"] + 5 * df["predicted_service_s"])
    assert summary["deadline_miss_rate"] == pytest.approx((df["finish_s"] > df["deadline_s"]).mean())
    assert summary["e2el_s"]["p50"] <= summary["e2el_s"]["p95"] <= summary["e2el_s"]["p99"]
    assert (df["true_tokens"] == df["output_tokens"]).all()
    assert pd.read_parquet(out / "requests.parquet").equals(df)


def test_replaying_the_training_profile_uses_out_of_fold_predictions(setup, run_cli, tmp_path):
    r = run_cli("serve-local", "--simulate", "--profile", setup / "prof", "--predictor", setup / "pred",
                "--policy", "rtlm", "--load", 0.8, "-n", 50, "--out", tmp_path / "run")
    assert r.exit_code == 0, r.output
    meta, df = load_run(tmp_path / "run")
    assert meta["out_of_fold_predictions"] == 120  # every prompt of the profile
    oof = pd.read_parquet(setup / "pred" / "crossfit.parquet").set_index("prompt_id")
    assert df["predicted_tokens"].to_numpy() == pytest.approx(oof.loc[df["prompt_id"], "predicted"].to_numpy())
    # a predictor trained without them says that its own prompts are predicted in sample
    r = run_cli("train-predictor", setup / "prof", "--out", tmp_path / "p0", "--threads", "1", "--no-ablation",
                "--rounds", "50", "--cross-fit", "0")
    assert r.exit_code == 0, r.output
    r = run_cli("serve-local", "--simulate", "--profile", setup / "prof", "--predictor", tmp_path / "p0",
                "--policy", "rtlm", "--load", 0.8, "-n", 50, "--out", tmp_path / "run0")
    assert r.exit_code == 0 and "no out-of-fold predictions" in " ".join(r.output.split())
    assert load_run(tmp_path / "run0")[0]["out_of_fold_predictions"] == 0


def test_sweep_writes_one_run_per_point(setup, run_cli, tmp_path):
    r = run_cli("serve-local", "--simulate", "--profile", setup / "prof", "--predictor", setup / "pred",
                "--policy", "fcfs,oracle", "--loads", "0.5,0.9", "-n", 200, "--out", tmp_path / "sweep")
    assert r.exit_code == 0, r.output
    names = sorted(p.name for p in (tmp_path / "sweep").iterdir())
    assert names == ["fcfs-load0.5", "fcfs-load0.9", "oracle-load0.5", "oracle-load0.9"]
    means = {n: load_run(tmp_path / "sweep" / n)[0]["summary"]["e2el_s"]["mean"] for n in names}
    assert means["oracle-load0.9"] < means["fcfs-load0.9"]
    assert means["fcfs-load0.5"] < means["fcfs-load0.9"]


def test_real_executor_on_the_fake_engine_records_failures_and_goes_on(setup, run_cli, tmp_path, monkeypatch):
    # The same workload simulated first names its requests; three of them are made to fail for real.
    common = ("--profile", setup / "prof", "--predictor", setup / "pred", "--policy", "sjf-pred", "--arrivals", "burst",
              "-n", 40, "--max-batch", 4)
    assert run_cli("serve-local", "--simulate", *common, "--out", tmp_path / "sim").exit_code == 0
    doomed = set(load_run(tmp_path / "sim")[1]["prompt_id"][[0, 17, 33]])
    prompt_of = {pid: text for pid, text in zip(*(load_profile(setup / "prof")[1][c] for c in ("prompt_id", "prompt")))}
    doomed_text = {prompt_of[pid] for pid in doomed}
    real = FakeEngine.generate

    def fails_on_doomed(self, prompts, settings):
        if doomed_text & set(prompts):
            raise RuntimeError("boom")
        return real(self, prompts, settings)

    monkeypatch.setattr(FakeEngine, "generate", fails_on_doomed)
    out = tmp_path / "real"
    r = run_cli("serve-local", *common, "--model", "fake:ms_per_token=0.2", "--no-dashboard", "--out", out)
    assert r.exit_code == 0, r.output
    meta, df = load_run(out)
    assert meta["mode"] == "real" and meta["engine"] == "fake" and len(df) == 40
    failed = df[df["status"] == "failed"]
    assert doomed <= set(failed["prompt_id"]) and (failed["error"] == "RuntimeError: boom").all()
    # a batch fails whole, and only a batch that holds a doomed prompt fails
    doomed_batches = set(df[df["prompt_id"].isin(doomed)]["batch_id"])
    assert set(failed["batch_id"]) == doomed_batches
    done = df[df["status"] == "finished"]
    assert len(done) == 40 - len(failed) > 0
    assert (done["start_s"] >= done["arrival_s"]).all() and (done["finish_s"] >= done["first_token_s"]).all()
    assert (done["prediction_cost_s"] > 0).all()  # paid on arrival, on the clock
    assert f"{len(done)}/40" in r.output  # the summary table's done column


def test_ctrl_c_keeps_finished_records(setup, run_cli, tmp_path, monkeypatch):
    from rtlm_cli.serve.live import dashboard

    calls = {"n": 0}
    original = dashboard.Dashboard.update

    def interrupt_later(self, now, arrived, queued, running, records, server=None):
        calls["n"] += 1
        if len(records) >= 3:
            raise KeyboardInterrupt
        return original(self, now, arrived, queued, running, records)

    monkeypatch.setattr(dashboard.Dashboard, "update", interrupt_later)
    out = tmp_path / "cut"
    r = run_cli("serve-local", "--profile", setup / "prof", "--model", "fake:ms_per_token=0.5", "--policy", "fcfs",
                "--arrivals", "burst", "-n", 30, "--no-dashboard", "--out", out)
    assert r.exit_code == 130
    meta, df = load_run(out)
    assert not meta["complete"]
    assert (df["status"] == "finished").sum() >= 3 and (df["status"] == "cancelled").sum() >= 1


def test_bad_inputs(setup, run_cli, tmp_path, prompt_file):
    def bad(*args):
        r = run_cli("serve-local", *args)
        assert r.exit_code == 2, r.output
        return one_line_error(r)

    prof, pred = setup / "prof", setup / "pred"
    base = ("--simulate", "--profile", prof, "--out", tmp_path / "x")
    assert "--rate must be > 0" in bad(*base, "--rate", 0)
    assert "--rate must be > 0" in bad(*base, "--rate", -1)
    assert "did you mean 'rtlm'" in bad(*base, "--policy", "rtml", "--rate", 1)
    assert "needs --predictor" in bad(*base, "--policy", "rtlm", "--rate", 1)
    assert "needs --rate or --load" in bad(*base)
    assert "--gather-ms go with --dispatch gateway" in bad(*base, "--rate", 1, "--gather-ms", 5)
    assert "--simulate needs --profile" in bad("--simulate", "--prompts", prompt_file, "--rate", 1, "--out", tmp_path / "y")
    other = tmp_path / "other"
    assert run_cli("profile", "--model", "fake:ms_prefill=1", "--prompts", prompt_file, "-n", 6, "--max-new-tokens", 128,
                   "--calibrate", "--calibration-batches", "1", "--calibration-contexts", "64", "--out", other).exit_code == 0
    assert "another model hash" in bad("--simulate", "--profile", other, "--predictor", pred, "--policy", "rtlm",
                                       "--rate", 1, "--out", tmp_path / "z")
    nocal = tmp_path / "nocal"
    assert run_cli("profile", "--model", "fake", "--prompts", prompt_file, "-n", 3, "--out", nocal).exit_code == 0
    assert "no timing table" in bad("--simulate", "--profile", nocal, "--rate", 1, "--out", tmp_path / "w")
    assert "comma-separated numbers" in bad(*base, "--loads", "0.5,x")
    assert "is not a device" in bad("--profile", prof, "--model", "fake", "--backend", "gpu", "--rate", 1, "--out", tmp_path / "v")


def test_arrival_processes_are_seeded_and_shaped():

    from rtlm_cli.serve.workload import WorkloadConfig, arrival_times

    def times(**kw):
        cfg = WorkloadConfig(num_requests=20000, **kw)
        return arrival_times(cfg, 2.0, np.random.default_rng(5))

    p = times(arrivals="poisson", rate=2.0)
    assert np.array_equal(p, times(arrivals="poisson", rate=2.0))
    gaps = np.diff(p)
    assert abs(gaps.mean() - 0.5) < 0.02 and abs(gaps.std() / gaps.mean() - 1.0) < 0.05
    g = np.diff(times(arrivals="gamma", rate=2.0, cv=3.0))
    assert abs(g.mean() - 0.5) < 0.05 and abs(g.std() / g.mean() - 3.0) < 0.3
    assert np.allclose(np.diff(times(arrivals="constant", rate=2.0)), 0.5)
    assert (times(arrivals="burst") == 0).all()


def test_trace_replay_and_offloading_to_a_slow_worker(setup, run_cli, tmp_path):
    _, prof = load_profile(setup / "prof")
    trace = tmp_path / "trace.csv"
    pd.DataFrame({"time_s": [0.0, 0.0, 0.01, 0.5] * 10, "prompt_id": prof["prompt_id"][:40]}).to_csv(trace, index=False)
    out = tmp_path / "t"
    r = run_cli("serve-local", "--simulate", "--profile", setup / "prof", "--predictor", setup / "pred", "--policy", "rtlm",
                "--arrivals", "trace", "--trace", trace, "--backend", "gpu=h200",
                "--worker", f"cpu={setup / 'prof'}", "--offload", "--out", out)  # --worker: --backend's old spelling
    assert r.exit_code == 0, r.output
    meta, df = load_run(out)
    assert len(df) == 40 and sorted(df["arrival_s"].unique()) == [0.0, 0.01, 0.5]
    assert set(df["backend"]) <= {"gpu", "cpu"} and [w["name"] for w in meta["workers"]] == ["gpu", "cpu"]
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"time_s": [0.0], "prompt_id": ["nope"]}).to_csv(bad, index=False)
    r = run_cli("serve-local", "--simulate", "--profile", setup / "prof", "--arrivals", "trace", "--trace", bad, "--out", tmp_path / "b")
    assert r.exit_code == 2 and "not in the profile" in one_line_error(r)


def test_direct_latency_target(setup, run_cli, tmp_path):
    r = run_cli("train-predictor", setup / "prof", "--out", tmp_path / "e2e", "--target", "e2e_s", "--rounds", 30,
                "--no-ablation", "--json")
    assert r.exit_code == 0, r.output
    from rtlm_cli.predict.model import Predictor

    p = Predictor.load(tmp_path / "e2e")
    assert p.meta["target"] == "e2e_s" and p.meta["cap"] is None
    out = p.predict(["Explain everything about the universe in detail.", "Hi"])
    assert (out["e2e_s"] == out["predicted"]).all() and (out["predicted"] > 0).all()


def test_the_shipped_predictors_are_named_and_replay_with_their_out_of_fold_predictions(run_cli, tmp_path):
    for profile in ("reference", "reference-64"):
        r = run_cli("serve-local", "--simulate", "--profile", profile, "--predictor", profile, "--policy", "rtlm",
                    "-n", 200, "--load", 0.9, "--out", tmp_path / profile)
        assert r.exit_code == 0, r.output
        meta, _ = load_run(tmp_path / profile)
        # every prompt of the profile was trained on: each is predicted out of fold
        assert meta["predictor"] == profile and meta["out_of_fold_predictions"] == {"reference": 1000, "reference-64": 300}[profile]
    r = run_cli("serve-local", "--simulate", "--profile", "reference-64", "--predictor", "reference", "-n", 10,
                "--policy", "rtlm", "--load", 0.9, "--out", tmp_path / "mismatch")
    assert r.exit_code == 2 and "use a predictor trained at the same cap" in r.output
