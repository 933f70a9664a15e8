"""``rtlm predict``: score a prompt source with a saved predictor and write the predictions.

One output row per input row, in input order (duplicates included), carrying the input's own id
column when it has one; a row without a usable text gets empty (NaN) predictions. Columns:
docs/formats.md.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rtlm_cli.errors import RtlmError
from rtlm_cli.formats.store import (
    atomic_write_bytes,
    atomic_write_parquet,
    check_output,
)
from rtlm_cli.predict.model import Predictor, quantile_name
from rtlm_cli.prompts.sources import prompt_id, read_rows

WRITERS = (".parquet", ".csv", ".json")
DEFAULT_ID_COLUMN = "id"


@dataclass(frozen=True)
class PredictConfig:
    predictor: str = field(metadata={"help": "Predictor directory (from `rtlm train-predictor`)."})
    prompts: str = field(metadata={"help": "Prompt source: sharegpt, a .json/.jsonl/.csv/.parquet/.txt file, or a hub dataset."})
    out: str = field(metadata={"help": "Predictions file: .parquet, .csv or .json (by extension)."})
    text_column: str | None = field(default=None, metadata={"help": "Column holding the prompt text (default: the first of prompt, text, instruction, question, input, conversations)."})
    id_column: str | None = field(default=None, metadata={"help": f"The input's id column, copied to the output (default: '{DEFAULT_ID_COLUMN}' when the input has one)."})
    num_prompts: int | None = field(default=None, metadata={"help": "Score a seeded sample of this many rows, kept in input order (default: every row)."})
    seed: int = field(default=0, metadata={"help": "Seed of the sample."})
    device: str = field(default="cpu", metadata={"help": "Device for the prefill family, when the predictor uses it."})
    overwrite: bool = field(default=False, metadata={"help": "Replace an existing predictions file."})

    def validate(self) -> "PredictConfig":
        if Path(self.out).suffix.lower() not in WRITERS:
            raise RtlmError(f"output {self.out} has an unknown type: use .parquet, .csv or .json")
        if self.num_prompts is not None and self.num_prompts < 1:
            raise RtlmError(f"--num-prompts must be >= 1, got {self.num_prompts}")
        check_output(Path(self.out), self.overwrite)
        return self


def predict_file(cfg: PredictConfig) -> dict:
    import pandas as pd

    cfg.validate()
    model = Predictor.load(cfg.predictor, device=cfg.device)
    texts, ids = read_rows(cfg.prompts, cfg.text_column, cfg.id_column or DEFAULT_ID_COLUMN,
                           id_required=cfg.id_column is not None)
    rows = np.arange(len(texts))
    if cfg.num_prompts is not None:
        rng = np.random.default_rng(cfg.seed)  # this sample's own generator
        rows = np.sort(rng.permutation(len(texts))[: cfg.num_prompts])
    clean = [texts[i].strip() if isinstance(texts[i], str) else "" for i in rows]
    usable = np.flatnonzero([bool(t) for t in clean])
    if not len(usable):
        raise RtlmError(f"prompt source {cfg.prompts!r} holds no non-empty prompts: check the file and --text-column")
    scored = [clean[i] for i in usable]
    t0 = time.perf_counter()
    names, X = model.features(scored)
    pred = model.predict_features(names, X, scored)
    elapsed = time.perf_counter() - t0

    def column(values) -> np.ndarray:  # usable rows' values, NaN elsewhere
        full = np.full(len(rows), np.nan)
        full[usable] = values
        return full

    df = pd.DataFrame({"prompt_id": [prompt_id(t) if t else None for t in clean], "prompt": clean})
    if ids is not None:
        df.insert(0, cfg.id_column or DEFAULT_ID_COLUMN, [ids[i] for i in rows])
    if model.meta["target"] == "output_tokens":
        df["predicted_tokens"] = column(pred["predicted"])
        if "p90" in pred:
            df["p90_tokens"] = column(pred["p90"])
        for j, lv in enumerate(model.levels):  # a distribution predictor's quantiles (meta.json "quantiles")
            df[f"{quantile_name(lv)}_tokens"] = column(pred["quantiles"][:, j])
    if "capped_prob" in pred:
        df["capped_prob"] = column(pred["capped_prob"])
    df["predicted_e2e_s"] = column(pred["e2e_s"])
    df = pd.concat([df, pd.DataFrame({n: column(X[:, j]) for j, n in enumerate(names)})], axis=1)
    path = Path(cfg.out)
    if path.suffix.lower() == ".parquet":
        atomic_write_parquet(df, path)
    elif path.suffix.lower() == ".csv":
        atomic_write_bytes(path, df.to_csv(index=False).encode())
    else:
        atomic_write_bytes(path, df.to_json(orient="records", indent=1).encode())
    return {"rows": len(df), "scored": len(usable), "out": str(path),
            "us_per_prompt": 1e6 * elapsed / max(len(scored), 1)}
