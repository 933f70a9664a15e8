"""``rtlm predict``: score a prompt source with a saved predictor and write the predictions."""

from __future__ import annotations

import time
from pathlib import Path

from rtlm_cli.errors import RtlmError
from rtlm_cli.predictor import Predictor
from rtlm_cli.prompts import load_prompts, sample_prompts
from rtlm_cli.store import atomic_write_bytes, atomic_write_parquet

WRITERS = (".parquet", ".csv", ".json")


def predict_file(predictor: str, prompts: str, out: str, text_column: str | None = None,
                 num_prompts: int | None = None, seed: int = 0, device: str = "cpu") -> dict:
    import pandas as pd

    path = Path(out)
    if path.suffix.lower() not in WRITERS:
        raise RtlmError(f"output {out} has an unknown type: use .parquet, .csv or .json")
    if num_prompts is not None and num_prompts < 1:
        raise RtlmError(f"--num-prompts must be >= 1, got {num_prompts}")
    model = Predictor.load(predictor, device=device)
    items = load_prompts(prompts, text_column)
    if num_prompts is not None:
        items = sample_prompts(items, num_prompts, seed)
    texts = [p.text for p in items]
    t0 = time.perf_counter()
    names, X = model.features(texts)
    pred = model.predict_features(names, X, texts)
    elapsed = time.perf_counter() - t0
    df = pd.DataFrame({"prompt_id": [p.prompt_id for p in items], "prompt": texts})
    if model.meta["target"] == "output_tokens":
        df["predicted_tokens"] = pred["predicted"]
        if "p90" in pred:
            df["p90_tokens"] = pred["p90"]
    if "capped_prob" in pred:
        df["capped_prob"] = pred["capped_prob"]
    df["predicted_e2e_s"] = pred["e2e_s"]
    df = pd.concat([df, pd.DataFrame(X, columns=names)], axis=1)
    if path.suffix.lower() == ".parquet":
        atomic_write_parquet(df, path)
    elif path.suffix.lower() == ".csv":
        atomic_write_bytes(path, df.to_csv(index=False).encode())
    else:
        atomic_write_bytes(path, df.to_json(orient="records", indent=1).encode())
    return {"rows": len(df), "out": str(path), "us_per_prompt": 1e6 * elapsed / max(len(texts), 1)}
