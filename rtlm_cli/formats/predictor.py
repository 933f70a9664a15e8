"""The predictor format: a directory with ``meta.json``, LightGBM text models (``regressor.txt``,
``capped.txt``, ``p90.txt``; a distribution predictor's quantile models ``q10.txt``, ``q50.txt``, ... at the levels
``meta["quantiles"]`` lists, and its evaluation ``distribution.json``), the prompt family's ``tokenizer.json``, the prefill family's fitted
state (``prefill_state.json``), ``evaluation.json``, ``importance.parquet``, ``holdout.parquet`` and
``crossfit.parquet`` (out-of-fold predictions of every training prompt). Never pickle. Columns and
keys: docs/formats.md.

This module writes (into a directory given by ``store.artifact_dir``), reads and validates it; what
the models compute lives in ``predict/model.py``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from rtlm_cli.errors import RtlmError
from rtlm_cli.formats.store import atomic_write_json, atomic_write_parquet, read_meta
from rtlm_cli.paths import predictor_path
from rtlm_cli.prompts import uncertainty

KIND = "predictor"
SCHEMA_VERSION = 1
BOOSTERS = ("regressor", "capped", "p90")  # file stem of each LightGBM model (the last two are optional)
CROSSFIT_FILE = "crossfit.parquet"
HOLDOUT_FILE = "holdout.parquet"
EVALUATION_FILE = "evaluation.json"
IMPORTANCE_FILE = "importance.parquet"
DISTRIBUTION_FILE = "distribution.json"


def read_predictor_meta(path: str | Path) -> dict:
    """A predictor's meta.json, refused when its feature set is not this rtlm's (no LightGBM loaded)."""
    meta = read_meta(predictor_path(path), KIND)
    if meta.get("feature_set_version") != uncertainty.FEATURE_SET_VERSION:
        raise RtlmError(
            f"predictor {path} uses feature set {meta.get('feature_set_version')!r} but this rtlm computes "
            f"feature set {uncertainty.FEATURE_SET_VERSION!r}: retrain it with `rtlm train-predictor`"
        )
    return meta


def predicts_quantiles(path: str | Path) -> bool:
    """Whether a predictor predicts a length distribution (False when it cannot be read: its loader says why)."""
    try:
        return bool(read_meta(predictor_path(path), KIND).get("quantiles"))
    except RtlmError:
        return False


def read_boosters(path: str | Path, meta: dict) -> dict:
    """The LightGBM models named in ``meta['files']`` (absent ones as None)."""
    import lightgbm as lgb

    path = predictor_path(path)
    out = {}
    for name in BOOSTERS:
        file = meta["files"].get(name)
        out[name] = lgb.Booster(model_file=str(path / file)) if file and (path / file).is_file() else None
    return out


def read_quantile_boosters(path: str | Path, meta: dict) -> dict | None:
    """level -> LightGBM quantile model, for the levels ``meta['quantiles']`` lists (None: a point predictor)."""
    levels = meta.get("quantiles") or []
    if not levels:
        return None
    import lightgbm as lgb

    path = predictor_path(path)
    out = {}
    for level in levels:
        file = path / meta["files"].get(quantile_name(level), "")
        if not file.is_file():
            raise RtlmError(f"predictor {path} lists quantile {level} but its model file is missing: retrain it")
        out[float(level)] = lgb.Booster(model_file=str(file))
    return out


def quantile_name(level: float) -> str:
    """A quantile level's model file stem and column name: 0.1 -> q10, 0.25 -> q25, 0.05 -> q05."""
    return f"q{round(level * 100):02d}"


def read_distribution(path: str | Path) -> dict | None:
    """A distribution predictor's evaluation (``distribution.json``), None for a point predictor."""
    f = predictor_path(path) / DISTRIBUTION_FILE
    return json.loads(f.read_text()) if f.is_file() else None


def read_prefill_state(path: str | Path, meta: dict) -> dict | None:
    file = meta["files"].get("prefill")
    return json.loads((predictor_path(path) / file).read_text()) if file else None


def read_crossfit(path: str | Path, meta: dict):
    """Out-of-fold predictions indexed by prompt_id, or None when trained without ``--cross-fit``."""
    file = meta.get("files", {}).get("crossfit")
    if not file:
        return None
    import pandas as pd

    # a sampled profile's predictor holds one row per answer; the predictions are the prompt's
    return pd.read_parquet(predictor_path(path) / file).drop_duplicates("prompt_id").set_index("prompt_id")


def read_evaluation(path: str | Path) -> list[dict]:
    return json.loads((predictor_path(path) / EVALUATION_FILE).read_text())


def write_predictor(tmp: Path, meta: dict, boosters: dict, *, tokenizer_file: str | None = None,
                    prefill_state: dict | None = None, evaluation: list[dict], importance, holdout,
                    crossfit=None, distribution: dict | None = None) -> dict:
    """Write every file of a predictor into ``tmp`` (meta.json last); the meta as written."""
    import pandas as pd

    files = {}
    for name, booster in boosters.items():  # BOOSTERS, then any quantile models (q10, q50, ...)
        if booster is not None:
            files[name] = f"{name}.txt"
            booster.save_model(str(tmp / files[name]))
    if tokenizer_file:
        files["tokenizer"] = "tokenizer.json"
        shutil.copyfile(tokenizer_file, tmp / "tokenizer.json")
    if prefill_state is not None:
        files["prefill"] = "prefill_state.json"
        atomic_write_json(tmp / "prefill_state.json", prefill_state)
    atomic_write_json(tmp / EVALUATION_FILE, evaluation)
    atomic_write_parquet(pd.DataFrame(importance), tmp / IMPORTANCE_FILE)
    atomic_write_parquet(holdout, tmp / HOLDOUT_FILE)
    if distribution is not None:
        atomic_write_json(tmp / DISTRIBUTION_FILE, distribution)
    if crossfit is not None:
        files["crossfit"] = CROSSFIT_FILE
        atomic_write_parquet(crossfit, tmp / CROSSFIT_FILE)
    meta = {"kind": f"rtlm.{KIND}", "schema_version": SCHEMA_VERSION, **meta, "files": files}
    atomic_write_json(tmp / "meta.json", meta)
    return meta
