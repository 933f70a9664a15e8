"""What a predictor computes: LightGBM models of a request's output length, and a saved predictor
applied to new prompts.

Output lengths here are bimodal: answers that end, and answers that run to the token cap. The
default method ("mixture") models that directly: a classifier gives P(capped), a regressor on
log(1 + tokens) of the answers that ended gives their length, and the estimate is
``P * cap + (1 - P) * length``. A quantile model (alpha 0.9) gives a P90 estimate for deadline
slack. Latency follows from the predicted length and the device's timing table.

A predictor of the length *distribution* (``levels``, trained by default on sampled profiles) adds
one LightGBM quantile model per level on log(1 + tokens) (quantiles commute with a monotone
transform), clipped to [0, cap] and sorted across levels so that they never cross
(rearrangement); ``distribution.py`` evaluates them and reads their tail.

Training lives in ``train.py``, the files in ``formats/predictor.py``. Imports no torch unless the
``prefill`` feature family is used.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rtlm_cli.defaults import TOKENS_PER_WORD
from rtlm_cli.errors import RtlmError
from rtlm_cli.formats import predictor as fmt
from rtlm_cli.paths import predictor_path
from rtlm_cli.predict import features as F

METHODS = ("mixture", "log", "raw")
QUANTILE_LEVELS = (0.1, 0.25, 0.5, 0.75, 0.9)  # the distribution predictor's default levels
quantile_name = fmt.quantile_name

def _params(objective: str, threads: int, seed: int, rows: int = 1000, **extra) -> dict:
    """Strongly regularized trees: with ~1,000 noisy rows, small trees on random feature halves
    (extremely randomized splits) generalize best, by 5-fold Kendall tau on the reference profile's
    text features (docs/research.md)."""
    return {
        "objective": objective, "learning_rate": 0.03, "num_leaves": 4, "min_data_in_leaf": max(10, rows // 15),
        "feature_fraction": 0.5, "extra_trees": True, "lambda_l2": 10.0,
        "num_threads": threads, "seed": seed, "deterministic": True, "force_row_wise": True,
        "verbose": -1, **extra,
    }


@dataclass
class LengthModel:
    """The boosters of one method and how they combine."""

    method: str
    cap: float
    regressor: object
    capped: object | None = None
    p90: object | None = None
    quantiles: dict[float, object] | None = None  # level -> booster on log1p(tokens)

    @classmethod
    def fit(cls, method, X, y, ended, cap, names, threads, seed, rounds, with_p90=True,
            levels: tuple[float, ...] = ()) -> "LengthModel":
        import lightgbm as lgb

        def train(params, Xs, ys):
            return lgb.train(params, lgb.Dataset(Xs, ys, feature_name=names, free_raw_data=True), rounds)

        capped = None
        # The mixture needs a cap: a direct latency target (no cap) falls back to the log model.
        if method == "mixture" and np.isfinite(cap) and 0 < ended.sum() < len(ended):
            capped = train(_params("binary", threads, seed), X, (~ended).astype(float))
            reg = train(_params("regression", threads, seed), X[ended], np.log1p(y[ended]))
        elif method == "raw":
            reg = train(_params("regression", threads, seed), X, y)
        else:  # "log", or a mixture whose data has only one mode
            reg = train(_params("regression", threads, seed), X, np.log1p(y))
        p90 = train(_params("quantile", threads, seed, alpha=0.9), X, y) if with_p90 else None
        quantiles = {lv: train(_params("quantile", threads, seed, alpha=lv), X, np.log1p(y)) for lv in levels} or None
        return cls("raw" if method == "raw" else ("mixture" if capped else "log"), cap, reg, capped, p90, quantiles)

    @property
    def levels(self) -> tuple[float, ...]:
        return tuple(sorted(self.quantiles)) if self.quantiles else ()

    def predict(self, X) -> dict[str, np.ndarray]:
        reg = self.regressor.predict(X, num_threads=1)
        out = {}
        if self.method == "raw":
            out["predicted"] = reg
        elif self.method == "mixture":
            p = self.capped.predict(X, num_threads=1)
            ended = np.expm1(reg)
            out["capped_prob"] = p
            out["ended_tokens"] = np.clip(ended, 1.0, self.cap)  # its length if it ends before the cap
            out["predicted"] = p * self.cap + (1 - p) * ended
        else:
            out["predicted"] = np.expm1(reg)
        out["predicted"] = np.clip(out["predicted"], 0, self.cap if np.isfinite(self.cap) else None)
        if self.p90 is not None:
            out["p90"] = np.maximum(self.p90.predict(X, num_threads=1), out["predicted"])
        if self.quantiles:
            q = np.column_stack([np.expm1(self.quantiles[lv].predict(X, num_threads=1)) for lv in self.levels])
            if np.isfinite(self.cap):  # LightGBM's float round-off leaves the cap at 255.9999988
                q = np.where(q > self.cap - 1e-3, self.cap, q)
            out["quantiles"] = np.sort(np.clip(q, 0.0, self.cap if np.isfinite(self.cap) else None), axis=1)
        return out



def latency_model(profile_dir: str, df) -> dict:
    """Seconds of a request at batch 1: prefill_base + prefill_per_token * prompt + step * output."""
    from rtlm_cli.formats.timing import load_timing_table

    table = load_timing_table(profile_dir, missing_ok=True)
    if table is not None and (table["batch"] == 1).any():
        one = table[table["batch"] == 1].sort_values("context")
        slope, base = (np.polyfit(one["context"], one["prefill_s"], 1) if len(one) > 1
                       else (0.0, float(one["prefill_s"].iloc[0])))
        return {"source": "timing table (batch 1)", "prefill_s_base": float(max(base, 0.0)),
                "prefill_s_per_token": float(max(slope, 0.0)), "decode_step_s": float(one["decode_step_s"].median())}
    slope, base = np.polyfit(df["prompt_tokens"], df["ttft_s"], 1) if len(df) > 2 else (0.0, df["ttft_s"].median())
    return {"source": "profile medians", "prefill_s_base": float(max(base, 0.0)),
            "prefill_s_per_token": float(max(slope, 0.0)), "decode_step_s": float(df["tpot_s"].median())}


@dataclass
class Predictor:
    path: Path
    meta: dict
    model: LengthModel
    ctx: F.FeatureContext

    @property
    def families(self) -> tuple[str, ...]:
        return tuple(self.meta["families"])

    @property
    def version(self) -> str:
        """Which predictor this is: its directory's name and the first 10 hex digits of the sha256 of its
        ``meta.json`` (which names every file it was trained from and on), e.g. ``reference-3f2a9c01d4``."""
        import hashlib

        digest = hashlib.sha256((self.path / "meta.json").read_bytes()).hexdigest()[:10]
        return f"{self.path.name}-{digest}"

    @property
    def levels(self) -> tuple[float, ...]:
        """The quantile levels it predicts (empty for a point predictor)."""
        return self.model.levels

    @classmethod
    def load(cls, path: str | Path, device: str = "cpu") -> "Predictor":
        path = predictor_path(path)
        meta = fmt.read_predictor_meta(path)
        files = meta["files"]
        cap = float(meta["cap"]) if meta.get("cap") is not None else float("inf")
        model = LengthModel(meta["method"], cap, **fmt.read_boosters(path, meta),
                            quantiles=fmt.read_quantile_boosters(path, meta))
        state = fmt.read_prefill_state(path, meta)
        if "prefill" in meta["families"]:
            F.check_prefill_state(state)
        ctx = F.FeatureContext(
            model=meta["model"]["model_id"], device=device,
            tokenizer_file=str(path / files["tokenizer"]) if files.get("tokenizer") else None, prefill_state=state,
        )
        return cls(path, meta, model, ctx)

    def features(self, texts: list[str]):
        names, X, _ = F.compute(self.families, list(texts), self.ctx)
        if names != self.meta["feature_names"]:
            raise RtlmError(f"predictor {self.path} was trained on other feature columns: retrain it")
        return names, X

    def predict(self, texts: list[str]) -> dict[str, np.ndarray]:
        """Predicted tokens (``predicted``), ``p90``, ``capped_prob`` (mixture), ``quantiles`` (a
        distribution predictor: one column per level of ``levels``) and ``e2e_s`` per text."""
        names, X = self.features(texts)
        return self.predict_features(names, X, texts)

    def predict_features(self, names: list[str], X, texts: list[str]) -> dict[str, np.ndarray]:
        out = self.model.predict(X)
        lat = self.meta["latency"]
        if self.meta["target"] == "output_tokens":
            ptoks = X[:, names.index("prompt_tokens")] if "prompt_tokens" in names else np.asarray(
                [TOKENS_PER_WORD * len(t.split()) for t in texts])
            out["e2e_s"] = lat["prefill_s_base"] + lat["prefill_s_per_token"] * ptoks + lat["decode_step_s"] * out["predicted"]
        else:
            out["e2e_s"] = out["predicted"]
        return out
