"""The embedded SmolLM2 on the CPU, with tiny token budgets (a few seconds each)."""

import json
import os

import pandas as pd
import pytest

from rtlm_cli.engines import load_engine
from rtlm_cli.engines.base import GenerationSettings

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def smol():
    return load_engine("smollm2", device="cpu")


def test_stops_on_the_chat_end_of_turn_token(smol):
    assert "<|im_end|>" in smol.info.stop_tokens
    res = smol.generate(["What is the capital of France? Answer in one word.", "Say hello."],
                        GenerationSettings(max_new_tokens=16))
    short, capped = res.generations
    assert short.ended and short.output_tokens < 16 and "Paris" in short.text
    assert "<|im_end|>" not in short.text
    assert not capped.ended and capped.output_tokens == 16
    assert 0 < short.ttft_s <= short.e2e_s <= res.wall_s + 1e-6
    assert short.prompt_tokens > 25  # the chat template's default system prompt is counted


def test_the_converted_copy_is_whole_and_gguf_is_left_as_it_was(smol):
    """The embedded GGUF's transformers copy (made once per session, by the fixture above) names its
    source, and the conversion's cached parse is undone after it: gguf's own names are back."""
    import gguf

    from rtlm_cli.engines.resolve import ensure_converted, resolve

    resolved = resolve("smollm2")
    copy = ensure_converted(resolved)
    made = json.loads((copy / "rtlm-converted.json").read_text())
    assert made["sha256"] == resolved.model_hash and (copy / "model.safetensors").stat().st_size > 100e6
    assert {"config.json", "tokenizer.json"} <= {p.name for p in copy.iterdir()}
    assert isinstance(gguf.GGUFReader, type) and not hasattr(gguf.get_tensor_name_map, "cache_info")


def test_greedy_is_deterministic(smol):
    s = GenerationSettings(max_new_tokens=8)
    a = smol.generate(["Name a color."], s).generations[0]
    b = smol.generate(["Name a color."], s).generations[0]
    assert (a.text, a.output_tokens) == (b.text, b.output_tokens)


def test_real_profile_of_three_prompts(run_cli, tmp_path):
    out = tmp_path / "prof"
    r = run_cli("profile", "-n", 3, "--max-new-tokens", 8, "-b", 2, "--device", "cpu", "--out", out, "--json")
    assert r.exit_code == 0, r.output
    df = pd.read_parquet(out / "requests")
    assert len(df) == 3 and (df["output_tokens"] <= 8).all() and (df["prompt_tokens"] > 25).all()
    assert (df["ttft_s"] > 0).all() and (df["tpot_s"].dropna() > 0).all()
    assert df["output_text"].str.len().gt(0).all()
    meta = json.loads((out / "meta.json").read_text())
    assert meta["model"]["model_id"] == "smollm2" and len(meta["model"]["model_hash"]) == 64
    assert meta["model"]["dtype"] == "float32" and meta["device"]["device"] == "cpu"


def test_real_calibration_point(smol):
    prefill, step = smol.timing_point(batch=2, context=16, decode_steps=2)
    assert 0 < prefill < 10 and 0 < step < 5


def test_prefill_features_train_save_and_predict(run_cli, tmp_path):
    prof = tmp_path / "prof"
    r = run_cli("profile", "-n", 24, "--max-new-tokens", 4, "-b", 8, "--max-prompt-tokens", 96,
                "--device", "cpu", "--out", prof)
    assert r.exit_code == 0, r.output
    pred = tmp_path / "pred"
    r = run_cli("train-predictor", prof, "--out", pred, "--features", "text,prompt,prefill", "--threads", 1,
                "--rounds", 20, "--no-ablation", "--json")
    assert r.exit_code == 0, r.output
    meta = json.loads((pred / "meta.json").read_text())
    tokenizer = json.loads((pred / "tokenizer.json").read_text())  # the prompt family counts the model's tokens
    assert tokenizer["model"]["type"] == "BPE" and len(tokenizer["model"]["vocab"]) > 40_000
    assert "prefill_entropy" in meta["feature_names"] and "prefill_pc15" in meta["feature_names"]
    assert meta["feature_cost_s_per_prompt"]["prefill"] > meta["feature_cost_s_per_prompt"]["text"]
    state = json.loads((pred / "prefill_state.json").read_text())
    assert len(state["pca"]) == 16 and len(state["pca"][0]) == 4 * 576
    assert set(state["probes"]) == {"len", "capped"} and "prefill_probe_capped" in meta["feature_names"]
    from rtlm_cli.predict.model import Predictor

    out = Predictor.load(pred).predict(["Why is the sky blue?", "Write a long story."])
    assert out["predicted"].shape == (2,) and (out["predicted"] >= 0).all()
    # a predictor fitted on another hidden-state layout is refused, not silently misread
    (pred / "prefill_state.json").write_text(json.dumps({**state, "layout": 1}))
    r = run_cli("predict", "--predictor", pred, "--prompts", "sharegpt", "-n", 2, "--out", tmp_path / "p.parquet")
    assert r.exit_code == 2 and "hidden-state layout 1" in r.output and "retrain" in r.output


def test_real_replay_of_four_requests(run_cli, tmp_path):
    prof = tmp_path / "prof"
    r = run_cli("profile", "-n", 4, "--max-new-tokens", 6, "--max-prompt-tokens", 128, "--device", "cpu", "--calibrate",
                "--calibration-batches", "1,2", "--calibration-contexts", "64,128", "--calibration-steps", 8,
                "--calibration-repeats", 2, "--out", prof)
    assert r.exit_code == 0, r.output
    table = pd.read_parquet(prof / "timing.parquet")
    assert len(table) == 4 and (table["decode_steps"] == 8).all() and (table["repeats"] == 2).all()
    out = tmp_path / "run"
    r = run_cli("serve-local", "--profile", prof, "--policy", "oracle", "--load", 0.7, "-n", 4, "--max-batch", 2,
                "--no-dashboard", "--out", out, "--json")
    assert r.exit_code == 0, r.output
    from rtlm_cli.formats.run import load_run

    meta, df = load_run(out)
    assert meta["mode"] == "real" and meta["engine"] == "hf" and meta["model"]["model_id"] == "smollm2"
    assert (df["status"] == "finished").all() and len(df) == 4
    assert (df["output_tokens"] <= 6).all() and (df["output_tokens"] >= 1).all()
    assert (df["finish_s"] > df["first_token_s"]).all() and (df["first_token_s"] > df["start_s"]).all()
    # greedy, same cap: a request alone in its batch reproduces the profile's length
    alone = df[df["batch_size"] == 1]
    assert (alone["output_tokens"] == alone["true_tokens"]).all()


@pytest.mark.gpu
def test_cuda_profile_with_gpu_telemetry(run_cli, tmp_path):
    """On a CUDA machine: the real model profiles on the GPU, its timing table is measured there and
    pynvml telemetry is present (skipped where torch sees no CUDA device)."""
    out = tmp_path / "cuda"
    model = os.environ.get("RTLM_TEST_MODEL", "smollm2")  # scripts/gpu_check.sh passes the model it carried
    prompts = os.environ.get("RTLM_TEST_PROMPTS", "sharegpt")  # and the prompts (the ShareGPT wheel is 120 MB)
    r = run_cli("profile", "--model", model, "--prompts", prompts, "-n", 4, "--max-new-tokens", 8, "-b", 2, "--device", "cuda", "--calibrate",
                "--calibration-batches", "1,2", "--calibration-contexts", "64", "--out", out, "--json")
    assert r.exit_code == 0, r.output
    meta = json.loads((out / "meta.json").read_text())
    assert meta["device"]["device"].startswith("cuda") and meta["telemetry"]["gpu"]
    df = pd.read_parquet(out / "requests")
    assert (df["gpu_mem_bytes"] > 0).all() and (df["output_tokens"] <= 8).all()
    assert len(pd.read_parquet(out / "timing.parquet")) == 2
