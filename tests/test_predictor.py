"""train-predictor and predict on profiles of the fake engine (its lengths follow the prompt's uncertainty)."""

import json

import numpy as np
import pandas as pd
import pytest
from helpers import one_line_error
from scipy import stats

from rtlm_cli.errors import RtlmError
from rtlm_cli.predict import metrics
from rtlm_cli.predict.data import split_by_prompt
from rtlm_cli.predict.model import Predictor


@pytest.fixture(scope="module")
def fake_profile(tmp_path_factory):
    from typer.testing import CliRunner

    from rtlm_cli.cli import app

    out = tmp_path_factory.mktemp("prof") / "fake"
    r = CliRunner().invoke(app, ["profile", "--model", "fake", "-n", "240", "--max-new-tokens", "256", "--out", str(out)])
    assert r.exit_code == 0, r.output
    return out


@pytest.fixture(scope="module")
def trained(fake_profile, tmp_path_factory):
    from typer.testing import CliRunner

    from rtlm_cli.cli import app

    out = tmp_path_factory.mktemp("pred") / "p"
    r = CliRunner().invoke(app, ["train-predictor", str(fake_profile), "--out", str(out), "--threads", "1", "--json"])
    assert r.exit_code == 0, r.output
    return out, json.loads(r.stdout)


def test_metrics_match_scipy_on_known_data():
    a = np.array([10, 20, 30, 40, 50, 50, 256, 256])
    p = np.array([12, 18, 35, 30, 60, 55, 200, 250])
    m = metrics.evaluate(a, p, edges=(32, 64, 256))
    assert m["kendall_tau"] == pytest.approx(stats.kendalltau(a, p).statistic)
    assert m["spearman"] == pytest.approx(stats.spearmanr(a, p).statistic)
    assert m["mae"] == pytest.approx(np.mean(np.abs(p - a)))
    assert m["rmse"] == pytest.approx(np.sqrt(np.mean((p - a) ** 2)))
    # 26 pairs differ in actual; (30, 40) vs (35, 30) is the one misordered
    assert m["pairwise_accuracy"] == pytest.approx(25 / 26)
    # buckets [0,32) [32,64) [64,256) [256,inf): 30 vs 35, 40 vs 30 and both capped 256s miss
    assert m["bucket_accuracy"] == pytest.approx(4 / 8)
    flat = metrics.evaluate(a, np.full(8, 5.0))
    assert flat["kendall_tau"] == 0 and flat["pairwise_accuracy"] == 0.5


def test_split_is_seeded_and_by_prompt():
    ids = [f"p{i % 50}" for i in range(100)]  # every prompt twice
    mask = split_by_prompt(ids, 0.2, seed=3)
    assert (mask == split_by_prompt(ids, 0.2, seed=3)).all()
    held = {i for i, m in zip(ids, mask) if m}
    assert len(held) == 10 and all(m == (i in held) for i, m in zip(ids, mask))


def test_training_beats_baselines_and_saves_documented_files(trained):
    out, result = trained
    rows = {r["model"]: r for r in result["evaluation"]}
    chosen = next(r for r in result["evaluation"] if r["kind"] == "chosen")
    assert chosen["kendall_tau"] > rows["prompt length only"]["kendall_tau"] + 0.1
    assert chosen["kendall_tau"] > rows["constant mean"]["kendall_tau"]
    assert {"only text", "without text", "only prompt", "without prompt"} <= set(rows)
    # the fake model has no tokenizer (its prompt family counts words): no tokenizer.json; the real
    # model's predictor carries one (test_model.py)
    files = {p.name for p in out.iterdir()}
    assert {"meta.json", "regressor.txt", "capped.txt", "p90.txt"} <= files and "tokenizer.json" not in files
    meta = json.loads((out / "meta.json").read_text())
    assert meta["kind"] == "rtlm.predictor" and meta["method"] == "mixture"
    assert meta["feature_names"][-1] == "prompt_tokens" and meta["training_profiles"][0]["sha256"]
    assert not list(out.glob("*.pkl")) and (out / "regressor.txt").read_text().startswith("tree")
    assert len(pd.read_parquet(out / "holdout.parquet")) == meta["rows"]["test"]
    assert pd.read_parquet(out / "importance.parquet")["gain"].iloc[0] > 0


def test_out_of_fold_predictions_cover_every_prompt_and_never_see_its_label(trained, fake_profile, run_cli, tmp_path):
    import shutil

    out, _ = trained
    meta = json.loads((out / "meta.json").read_text())
    oof = pd.read_parquet(out / meta["files"]["crossfit"])
    profile = pd.concat(pd.read_parquet(p) for p in sorted((fake_profile / "requests").glob("*.parquet")))
    assert sorted(oof["prompt_id"]) == sorted(profile["prompt_id"].unique())
    assert sorted(oof["fold"].value_counts()) == [48] * 5  # 240 prompts, 5 folds
    assert (oof["p90"] >= oof["predicted"]).all() and oof["capped_prob"].between(0, 1).all()
    assert oof["ended_tokens"].between(1, 256).all()
    cv = next(r for r in json.loads((out / "evaluation.json").read_text()) if r["kind"] == "cross-validated")
    assert cv["n"] == 240 and cv["kendall_tau"] == pytest.approx(stats.kendalltau(oof["actual"], oof["predicted"]).statistic)
    # Change one prompt's recorded length: its own out-of-fold prediction must not move.
    changed = tmp_path / "changed"
    shutil.copytree(fake_profile, changed)
    shard = sorted((changed / "requests").glob("*.parquet"))[0]
    df = pd.read_parquet(shard)
    pid = df["prompt_id"].iloc[0]
    df.loc[0, ["output_tokens", "ended"]] = (256 if df["output_tokens"].iloc[0] < 128 else 3, df["output_tokens"].iloc[0] >= 128)
    df.to_parquet(shard)
    r = run_cli("train-predictor", changed, "--out", tmp_path / "p", "--threads", "1", "--no-ablation")
    assert r.exit_code == 0, r.output
    again = pd.read_parquet(tmp_path / "p" / "crossfit.parquet").set_index("prompt_id")
    before = oof.set_index("prompt_id")
    assert again.loc[pid, "predicted"] == before.loc[pid, "predicted"]
    same_fold = before.index[(before["fold"] == before.loc[pid, "fold"]) & (before.index != pid)]
    others = before.index[before["fold"] != before.loc[pid, "fold"]]
    assert np.array_equal(again.loc[same_fold, "predicted"], before.loc[same_fold, "predicted"])
    assert not np.array_equal(again.loc[others, "predicted"], before.loc[others, "predicted"])


def test_round_trip_predictions_are_identical_and_fast(trained):
    out, _ = trained
    texts = ["Explain in detail how a compiler works, step by step.", "What is 2+2? One word."]
    a = Predictor.load(out).predict(texts)
    b = Predictor.load(out).predict(texts)
    assert np.array_equal(a["predicted"], b["predicted"])
    assert a["predicted"][0] > a["predicted"][1]
    assert (a["p90"] >= a["predicted"]).all() and (a["e2e_s"] > 0).all()
    assert ((0 <= a["capped_prob"]) & (a["capped_prob"] <= 1)).all()


def test_predict_command_writes_each_format(trained, run_cli, tmp_path, prompt_file):
    out, _ = trained
    for suffix, read in ((".parquet", pd.read_parquet), (".csv", pd.read_csv), (".json", pd.read_json)):
        dest = tmp_path / f"preds{suffix}"
        r = run_cli("predict", "--predictor", out, "--prompts", prompt_file, "--out", dest)
        assert r.exit_code == 0, r.output
        df = read(dest)
        assert len(df) == 6 and {"prompt_id", "predicted_tokens", "p90_tokens", "predicted_e2e_s", "uncertainty_score"} <= set(df.columns)
    assert "unknown type" in one_line_error(run_cli("predict", "--predictor", out, "--prompts", prompt_file, "--out", tmp_path / "x.xlsx"))
    # an existing output is kept unless --overwrite
    before = (tmp_path / "preds.csv").read_bytes()
    assert "--overwrite" in one_line_error(run_cli("predict", "--predictor", out, "--prompts", prompt_file, "--out", tmp_path / "preds.csv"))
    assert (tmp_path / "preds.csv").read_bytes() == before
    assert run_cli("predict", "--predictor", out, "--prompts", prompt_file, "--out", tmp_path / "preds.csv", "--overwrite").exit_code == 0


def test_predict_keeps_every_input_row_in_order_with_its_id(trained, run_cli, tmp_path):
    out, _ = trained
    rng = np.random.default_rng(0)
    base = [f"Question {i}: why is {w} important? Explain." for i, w in enumerate(rng.choice(["water", "sleep", "code"], 160))]
    texts = base + [base[i] for i in rng.integers(0, 160, 40)] + [""]  # 40 exact duplicates, one empty row
    order = rng.permutation(len(texts))
    src = pd.DataFrame({"id": [f"row-{i}" for i in range(len(texts))], "question": [texts[i] for i in order]})
    src.to_csv(tmp_path / "in.csv", index=False)
    r = run_cli("predict", "--predictor", out, "--prompts", tmp_path / "in.csv", "--out", tmp_path / "p.parquet")
    assert r.exit_code == 0, r.output
    df = pd.read_parquet(tmp_path / "p.parquet")
    assert len(df) == len(src) == 201 and df["id"].tolist() == src["id"].tolist()  # one row per input row, in order
    assert df["prompt"].tolist() == src["question"].fillna("").tolist()
    dup = df[df.duplicated("prompt", keep=False) & (df["prompt"] != "")]
    assert len(dup) >= 40 and dup.groupby("prompt")["predicted_tokens"].nunique().eq(1).all()
    assert df.loc[df["prompt"] == "", "predicted_tokens"].isna().all() and df["predicted_tokens"].notna().sum() == 200
    assert "without a prompt text" in " ".join(r.output.split())
    # a named id column must exist; a sample keeps input order
    assert "no id column 'key'" in one_line_error(run_cli("predict", "--predictor", out, "--prompts", tmp_path / "in.csv",
                                                          "--id-column", "key", "--out", tmp_path / "q.csv"))
    r = run_cli("predict", "--predictor", out, "--prompts", tmp_path / "in.csv", "-n", 50, "--out", tmp_path / "s.parquet")
    sample = pd.read_parquet(tmp_path / "s.parquet")
    assert r.exit_code == 0 and len(sample) == 50
    assert sample["id"].map(src["id"].tolist().index).is_monotonic_increasing


def test_feature_set_mismatch_is_a_clear_error(trained, tmp_path, run_cli, prompt_file):
    import shutil

    out, _ = trained
    old = tmp_path / "old"
    shutil.copytree(out, old)
    meta = json.loads((old / "meta.json").read_text())
    meta["feature_set_version"] = "0"
    (old / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(RtlmError, match="feature set '0'"):
        Predictor.load(old)
    r = run_cli("predict", "--predictor", old, "--prompts", prompt_file, "--out", tmp_path / "p.csv")
    assert r.exit_code == 2 and "retrain" in one_line_error(r)


def test_train_bad_inputs(run_cli, tmp_path, fake_profile, prompt_file):
    def bad(*args):
        r = run_cli("train-predictor", *args)
        assert r.exit_code == 2, r.output
        return one_line_error(r)

    assert "not an rtlm profile" in bad(tmp_path, "--out", tmp_path / "x")
    assert "did you mean 'prefill'" in bad(fake_profile, "--out", tmp_path / "x", "--features", "text,prefil")
    assert "unknown method" in bad(fake_profile, "--out", tmp_path / "x", "--method", "magic")
    assert "--cross-fit must be 0 (none) or 2-20 folds" in bad(fake_profile, "--out", tmp_path / "x", "--cross-fit", 1)
    existing = tmp_path / "exists"
    existing.mkdir()
    (existing / "keep").write_text("k")
    assert "--overwrite" in bad(fake_profile, "--out", existing)
    assert (existing / "keep").read_text() == "k"
    small = tmp_path / "small"
    assert run_cli("profile", "--model", "fake", "--prompts", prompt_file, "-n", 6, "--out", small).exit_code == 0
    assert "at least 20" in bad(small, "--out", tmp_path / "y")
    other = tmp_path / "other"
    assert run_cli("profile", "--model", "fake:ms_prefill=1", "--prompts", prompt_file, "-n", 3, "--out", other).exit_code == 0
    assert "another model" in bad(fake_profile, other, "--out", tmp_path / "z")
    assert "needs a real model" in bad(fake_profile, "--out", tmp_path / "w", "--features", "text,prefill")


def test_eval_on_a_second_profile(run_cli, tmp_path, fake_profile, prompt_file):
    second = tmp_path / "second"
    assert run_cli("profile", "--model", "fake", "--prompts", prompt_file, "-n", 6, "--max-new-tokens", 256, "--out", second).exit_code == 0
    r = run_cli("train-predictor", fake_profile, "--out", tmp_path / "p", "--eval", second, "--no-ablation", "--json")
    assert r.exit_code == 0, r.output
    ext = [row for row in json.loads(r.stdout)["evaluation"] if row["kind"] == "external"]
    assert len(ext) == 1 and ext[0]["n"] == 6


def test_the_prefill_probe_never_fits_a_row_on_its_twins():
    """A sampled profile repeats each prompt's hidden state S times: the probe's out-of-fold predictions
    must come from folds that hold a prompt's rows together, or a row is predicted from its twins."""
    from scipy.stats import pearsonr

    from rtlm_cli.predict.features import _folds, fit_probe

    rng = np.random.default_rng(0)
    X = np.repeat(rng.standard_normal((60, 120)), 4, axis=0)  # 60 prompts x 4 answers: twins share X
    y = np.repeat(rng.standard_normal(60), 4) + 0.1 * rng.standard_normal(240)  # a per-prompt value X does not explain
    groups = np.repeat([f"p{i}" for i in range(60)], 4)
    leaky = fit_probe(X, y, lambdas=(1e-3,))[2]
    held = fit_probe(X, y, lambdas=(1e-3,), groups=groups)[2]
    assert pearsonr(leaky, y)[0] > 0.9  # row folds: each row fitted on its twins' targets
    assert abs(pearsonr(held, y)[0]) < 0.3  # prompt folds: nothing to learn, nothing learnt
    folds = _folds(240, 5, groups=groups)
    assert sorted(np.concatenate(folds).tolist()) == list(range(240))
    assert all(len({groups[i] for i in f} & {groups[i] for i in g}) == 0 for f in folds for g in folds if f is not g)
    # distinct groups: the same folds as rows
    assert [sorted(f) for f in _folds(50, 5)] == [f.tolist() for f in _folds(50, 5, groups=[f"g{i}" for i in range(50)])]


def test_the_prefill_cache_runs_each_prompt_once_however_often_it_repeats(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from rtlm_cli.predict.features import FeatureContext, _prefill_signals

    monkeypatch.setenv("RTLM_HOME", str(tmp_path))
    seen = []

    def probe(texts):  # a stand-in for the model's prefill pass: one row per text
        seen.extend(texts)
        n = len(texts)
        return np.arange(n, dtype=float), np.zeros(n), np.zeros(n), np.tile([len(t) for t in texts], (4, 1)).T.astype(np.float32)

    ctx = FeatureContext(model="smollm2")
    ctx._engine = SimpleNamespace(prefill_probe=probe, info=SimpleNamespace(model_hash="0" * 64, dtype="float32"))
    texts = ["a prompt", "another prompt", "a prompt", "a prompt", "another prompt"]  # a sampled profile's rows
    _, _, _, hidden = _prefill_signals(texts, ctx)
    assert seen == ["a prompt", "another prompt"]  # each prompt's forward pass once
    assert hidden.shape == (5, 4) and (hidden[:, 0] == [len(t) for t in texts]).all()  # every row gets its prompt's
    _prefill_signals(texts + ["a third"], ctx)
    assert seen[2:] == ["a third"]  # cached prompts are not run again


def test_the_rolling_quality_ranks_a_window_of_finished_requests():
    """Kendall tau-b and the mean absolute error over the latest window; NaN under 20 pairs; pairs with
    no prediction or no length are not counted."""
    import math

    from rtlm_cli.predict.quality import MIN_PAIRS, RollingQuality

    q = RollingQuality(window=50)
    for i in range(MIN_PAIRS - 1):
        q.add(float(i), float(i))
    assert math.isnan(q.figures()["kendall_tau"]) and q.figures()["requests"] == MIN_PAIRS - 1
    q.add(float("nan"), 3.0)
    q.add(19.0, 19.0)
    assert q.figures() == pytest.approx({"kendall_tau": 1.0, "abs_error_tokens": 0.0, "requests": 20.0})
    for i in range(50):  # the window keeps the latest 50: now exactly inverted
        q.add(float(i), float(49 - i))
    f = q.figures()
    assert f["requests"] == 50 and f["kendall_tau"] == pytest.approx(-1.0)
    assert f["abs_error_tokens"] == pytest.approx(sum(abs(i - (49 - i)) for i in range(50)) / 50)
