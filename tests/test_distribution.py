"""Length distributions under sampling: quantile metrics on known distributions, the tail-aware
policies' keys, folds by prompt, and a distribution predictor trained on a sampled profile of the
fake engine (its sampled lengths are log-normal around each prompt's length) replayed in the simulator."""

import json

import numpy as np
import pandas as pd
import pytest
from helpers import one_line_error

from rtlm_cli.predict import distribution as D
from rtlm_cli.predict.crossfit import fold_of
from rtlm_cli.predict.data import split_by_prompt
from rtlm_cli.serve.decide.policies import make_policy
from rtlm_cli.serve.decide.request import Request

LEVELS = [0.1, 0.25, 0.5, 0.75, 0.9]


def test_coverage_pinball_and_calibration_on_a_known_distribution():
    rng = np.random.default_rng(0)
    mu = rng.uniform(2, 5, 20_000)  # each request its own log-normal (sigma 0.5): its quantiles known exactly
    from scipy.stats import norm

    Q = np.exp(mu[:, None] + 0.5 * norm.ppf(LEVELS)[None, :])
    y = np.exp(mu + 0.5 * rng.standard_normal(len(mu)))
    row = D.evaluate("truth", y, Q, LEVELS, [f"p{i}" for i in range(len(y))], np.ones(len(y), bool))
    assert row["coverage_80"] == pytest.approx(0.8, abs=0.015) and row["coverage_50"] == pytest.approx(0.5, abs=0.015)
    assert [c["observed"] for c in row["calibration"]] == pytest.approx(LEVELS, abs=0.015)
    assert all(f["coverage_80"] == pytest.approx(0.8, abs=0.03) for f in row["by_fifth"]) and len(row["by_fifth"]) == 5
    blind = D.prompt_blind(y, LEVELS, len(y))
    assert D.pinball(y, Q, LEVELS) < 0.8 * D.pinball(y, blind, LEVELS)  # knowing each request's distribution pays
    # the interval is closed and counted by hand on four answers
    assert D.coverage([1, 5, 10, 11], np.array([1, 2, 2, 2]), np.array([4, 5, 10, 10])) == 0.75
    # pinball at one level, by hand: level 0.9, y 10 under q 4 costs 0.9 x 6; over q 16 costs 0.1 x 6
    assert D.pinball([10, 10], np.array([[4.0], [16.0]]), [0.9]) == pytest.approx((5.4 + 0.6) / 2)


def test_mean_and_cvar_of_a_uniform_quantile_function():
    q = [100 * lv for lv in LEVELS]  # U(0, 100): the extension reaches 0 and 100
    assert D.mean(LEVELS, q) == pytest.approx(50, abs=0.01)
    assert D.cvar(LEVELS, q, 0.9) == pytest.approx(95, abs=0.01)
    assert D.cvar(LEVELS, q, 0.9, cap=92) == pytest.approx(91, abs=0.1)  # the top clipped to the cap
    assert D.spread(q) == pytest.approx(80 / 90)


def test_folds_and_splits_never_split_a_prompts_samples():
    ids = [f"p{i % 37}" for i in range(37 * 8)]  # 37 prompts x 8 answers
    fold = fold_of(ids, 5, seed=1)
    held = split_by_prompt(ids, 0.2, seed=1)
    by_prompt = pd.DataFrame({"p": ids, "fold": fold, "held": held}).groupby("p").nunique()
    assert (by_prompt["fold"] == 1).all() and (by_prompt["held"] == 1).all()
    assert len(set(fold)) == 5 and 0 < held.mean() < 0.5


def dist_request(rid, quantiles, predicted=100.0, arrival=0.0):
    return Request(rid=rid, arrival_s=arrival, prompt_id=f"p{rid}", predicted_tokens=predicted,
                   predicted_service_s=predicted * 0.01, quantiles=tuple(quantiles), quantile_levels=tuple(LEVELS),
                   cap_tokens=256.0, uncertainty=0.9 - 0.4 * rid)


def test_tail_policy_orders_as_its_formula_says():
    narrow = dist_request(0, [80, 90, 100, 110, 120])  # mean 100, short tail
    wide = dist_request(1, [20, 40, 80, 160, 240])  # mean ~103, long tail
    short_wide = dist_request(2, [10, 20, 40, 120, 200], predicted=60.0)
    reqs = [narrow, wide, short_wide]

    def ranked(policy):
        return [r.rid for r in sorted(reqs, key=policy.key)]

    expected = make_policy("tail", tail_weight=0.0)
    assert ranked(expected) == [2, 0, 1]  # by expected length alone: 2 (~65), then 0 (100), then 1 (~103)
    tail = make_policy("tail", tail_weight=2.0, tail_level=0.9, size_weight=1e6)
    score = {r.rid: D.mean(LEVELS, r.quantiles, 256) + 2.0 * D.cvar(LEVELS, r.quantiles, 0.9, 256) for r in reqs}
    assert ranked(tail) == sorted(score, key=score.get) == [0, 2, 1]  # the long tails go behind the narrow one
    for r in reqs:  # the key is the documented formula
        assert tail.key(r) == pytest.approx(r.arrival_s + 1e6 * r.predicted_service_s * score[r.rid] / (3.0 * r.predicted_tokens))
    # rtlm-dist reads the spread, not the lexical score (which says the opposite here)
    dist = make_policy("rtlm-dist", uncertainty_weight=5.0)
    assert dist.inflation(narrow) == pytest.approx(1 + 5 * D.spread(narrow.quantiles))
    assert [r.rid for r in sorted(reqs[:2], key=dist.key)] == [0, 1]
    assert [r.rid for r in sorted(reqs[:2], key=make_policy("rtlm", uncertainty_weight=5.0).key)] == [1, 0]


@pytest.fixture(scope="module")
def sampled(tmp_path_factory):
    from typer.testing import CliRunner

    from rtlm_cli.cli import app

    root = tmp_path_factory.mktemp("sampled")
    runner = CliRunner()
    r = runner.invoke(app, ["profile", "--model", "fake", "-n", "80", "--samples", "4", "--temperature", "1.0",
                            "--max-new-tokens", "256", "--out", str(root / "prof")])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["train-predictor", str(root / "prof"), "--out", str(root / "pred"), "--rounds", "150",
                            "--threads", "1", "--no-ablation", "--cross-fit", "3", "--json"])
    assert r.exit_code == 0, r.output
    return root


def test_a_sampled_profile_trains_a_distribution_predictor(sampled, run_cli, prompt_file):
    pred = sampled / "pred"
    meta = json.loads((pred / "meta.json").read_text())
    assert meta["quantiles"] == LEVELS and all((pred / f"q{round(lv * 100):02d}.txt").is_file() for lv in LEVELS)
    assert meta["rows"]["samples_per_prompt"] == 4 and meta["rows"]["train"] + meta["rows"]["test"] == 320
    dist = json.loads((pred / "distribution.json").read_text())
    for part in ("held_out", "out_of_fold"):
        model, blind, conformal, ceiling = dist[part]
        assert model["model"] == "quantile model" and blind["model"] == "prompt-blind"
        assert "conformal" in conformal["model"] and "ceiling" in ceiling["model"]
        assert model["pinball"] < blind["pinball"]  # the fake's lengths follow the prompt: learnable
        assert 0.5 < model["coverage_80"] <= 1.0 and len(model["by_fifth"]) == 5
    oof = pd.read_parquet(pred / "crossfit.parquet")
    assert len(oof) == 320 and oof.groupby("prompt_id")["fold"].nunique().max() == 1  # a prompt's answers in one fold
    q = oof[[f"q{round(lv * 100):02d}" for lv in LEVELS]].to_numpy()
    assert (np.diff(q, axis=1) >= 0).all()
    r = run_cli("predict", "--predictor", pred, "--prompts", prompt_file, "--out", sampled / "p.parquet")
    assert r.exit_code == 0, r.output
    out = pd.read_parquet(sampled / "p.parquet")
    cols = [f"q{round(lv * 100):02d}_tokens" for lv in LEVELS]
    assert (np.diff(out[cols].to_numpy(), axis=1) >= 0).all() and (out[cols[-1]] <= 256).all()
    # the report shows the distribution beside its baselines, as a table, a CSV and a calibration figure
    r = run_cli("report", pred, "--csv", sampled / "csv", "--plots", sampled / "figs")
    assert r.exit_code == 0 and "length distribution" in r.output, r.output
    rows = pd.read_csv(sampled / "csv" / "predictor_distributions.csv")
    assert set(rows["evaluated_on"]) == {"held_out", "out_of_fold"} and len(rows) == 8
    assert (sampled / "figs" / "calibration.png").is_file()


def test_the_sampled_world_in_the_simulator(sampled, run_cli, tmp_path):
    prof, pred = sampled / "prof", sampled / "pred"
    r = run_cli("serve-local", "--simulate", "--profile", prof, "--predictor", pred, "--policy",
                "fcfs,oracle,oracle-mean,tail,rtlm-dist", "--batching", "continuous", "--timing", "vllm-cpu",
                "--arrivals", "burst", "-n", "200", "--out", tmp_path / "runs", "--json")
    assert r.exit_code == 0, r.output
    means = {row["policy"]: row["e2el_s"]["mean"] for row in json.loads(r.stdout)}
    assert means["oracle"] < means["oracle-mean"] < means["fcfs"]  # knowing the answer beats knowing its prompt
    assert means["tail"] < means["fcfs"] and means["rtlm-dist"] < means["fcfs"]
    # each run's rows carry the predicted quantiles; the report scores them against the run's own answers
    rows = pd.read_parquet(tmp_path / "runs" / "tail" / "requests.parquet")
    cols = [f"q{round(lv * 100):02d}_tokens" for lv in LEVELS]
    assert (np.diff(rows[cols].to_numpy(), axis=1) >= 0).all() and (rows[cols[-1]] <= 256).all()
    r = run_cli("report", tmp_path / "runs", "--csv", tmp_path / "csv")
    assert r.exit_code == 0 and "predicted length quantiles against the answers" in r.output, r.output
    scored = pd.read_csv(tmp_path / "csv" / "run_distributions.csv").set_index("policy")
    assert set(scored.index) == {"fcfs", "oracle", "oracle-mean", "tail", "rtlm-dist"} and (scored["n"] == 200).all()
    by_hand = D.coverage(rows["output_tokens"], rows["q10_tokens"].to_numpy(), rows["q90_tokens"].to_numpy())
    assert scored.loc["tail", "coverage_80"] == pytest.approx(by_hand) and 0.3 < by_hand <= 1.0
    # a real replay of a sampled profile, and a tail policy without quantiles: one line each
    r = run_cli("serve-local", "--profile", prof, "--model", "fake", "-n", "4", "--arrivals", "burst", "--out", tmp_path / "real")
    assert "replay it in the simulator (--simulate)" in one_line_error(r)
    r = run_cli("serve-local", "--simulate", "--profile", "reference", "--predictor", "reference", "--policy", "tail",
                "-n", "4", "--arrivals", "burst", "--out", tmp_path / "t")
    assert "policy tail needs --predictor DIR that predicts quantiles" in one_line_error(r)


def test_a_served_replay_of_a_sampled_profile_sends_each_answers_seed(sampled, run_cli, tmp_path):
    from rtlm_cli.formats.profile import load_profile
    from rtlm_cli.testing import FakeOpenAI

    server = FakeOpenAI(ms_per_token=0.0)
    try:
        r = run_cli("serve-local", "--engine", "openai", "--url", f"http://127.0.0.1:{server.port}", "--profile",
                    sampled / "prof", "--timing", "vllm-cpu", "--policy", "fcfs", "-n", 6, "--arrivals", "burst",
                    "--max-new-tokens", 8,
                    "--no-dashboard", "--out", tmp_path / "run")
        assert r.exit_code == 0, r.output
        _, df = load_profile(sampled / "prof", samples_ok=True)
        answers = set(zip(df["prompt"], df["sample_seed"]))
        sent = [b for b in server.bodies if b.get("max_tokens") == 8]
        assert len(sent) == 6 and all((b["messages"][0]["content"], b["seed"]) in answers for b in sent)
        assert all(b["temperature"] == 1.0 and b["top_p"] == 1.0 for b in sent)
    finally:
        server.close()


def test_the_gateways_oracles_know_a_sampled_answer_by_its_prompt_and_seed(sampled):
    from rtlm_cli.formats.profile import load_profile
    from rtlm_cli.formats.timing import load_timing_table
    from rtlm_cli.serve.admit import Admission, true_lengths
    from rtlm_cli.serve.costmodel import CostModel

    _, df = load_profile(sampled / "prof", samples_ok=True)
    admit = Admission(None, CostModel.from_table(load_timing_table("vllm-cpu"), "vllm-cpu"), true_lengths(sampled / "prof"))
    row = df.iloc[5]
    others = df[(df["prompt"] == row["prompt"]) & (df["sample_seed"] != row["sample_seed"])]["output_tokens"]
    r = admit(0, 0.0, row["prompt"], {"max_tokens": 256, "seed": int(row["sample_seed"])}, {})
    assert r.true_tokens == row["output_tokens"] and len(others) == 3
    assert r.mean_tokens == pytest.approx(others.mean())  # what oracle-mean knows: the prompt's other answers
    assert make_policy("oracle-mean").size(r) == pytest.approx(others.mean())
    # capped by the request's own max_tokens; another seed, or none, is not known
    assert admit(1, 0.0, row["prompt"], {"max_tokens": 2, "seed": int(row["sample_seed"])}, {}).true_tokens == min(2, row["output_tokens"])
    assert admit(2, 0.0, row["prompt"], {"max_tokens": 256, "seed": 123456789}, {}).true_tokens is None
    assert admit(3, 0.0, row["prompt"], {"max_tokens": 256}, {}).true_tokens is None
