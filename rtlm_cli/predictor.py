"""Train, evaluate, save, load and apply a LightGBM predictor of a request's output length.

Output lengths here are bimodal: answers that end, and answers that run to the token cap. The
default method ("mixture") models that directly: a classifier gives P(capped), a regressor on
log(1 + tokens) of the answers that ended gives their length, and the estimate is
``P * cap + (1 - P) * length``. A quantile model (alpha 0.9) gives a P90 estimate for deadline
slack. Latency follows from the predicted length and the device's timing table.

Stored as LightGBM text models plus JSON; never pickle. Imports no torch unless the ``prefill``
feature family is used.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rtlm_cli import features as F
from rtlm_cli import metrics, uncertainty
from rtlm_cli.errors import RtlmError
from rtlm_cli.store import atomic_write_json, atomic_write_parquet, now_iso, provenance, read_meta

SCHEMA_VERSION = 1
METHODS = ("mixture", "log", "raw")
TARGETS = ("output_tokens", "e2e_s")
MIN_ROWS = 20


@dataclass(frozen=True)
class TrainConfig:
    profiles: tuple[str, ...] = field(metadata={"help": "profile directories to train on"})
    out: str = field(metadata={"help": "predictor directory to write"})
    families: tuple[str, ...] = field(default=F.DEFAULT_FAMILIES, metadata={"help": "feature families"})
    target: str = field(default="output_tokens", metadata={"help": "output_tokens or e2e_s"})
    method: str = field(default="mixture", metadata={"help": "mixture, log or raw"})
    test_size: float = field(default=0.2, metadata={"help": "held-out share of prompts"})
    seed: int = field(default=0, metadata={"help": "seed of the split and of LightGBM"})
    eval_profiles: tuple[str, ...] = field(default=(), metadata={"help": "profiles from another prompt source to evaluate on"})
    ablation: bool = field(default=True, metadata={"help": "also evaluate each family alone and each left out"})
    threads: int = field(default=2, metadata={"help": "LightGBM threads"})
    rounds: int = field(default=1000, metadata={"help": "boosting rounds of each LightGBM model (learning rate 0.03, 4-leaf trees)"})
    cross_fit: int = field(default=5, metadata={"help": "folds of the out-of-fold predictions of every training prompt (crossfit.parquet); 0: none"})
    device: str = field(default="cpu", metadata={"help": "device for the prefill family"})
    overwrite: bool = False

    def validate(self) -> "TrainConfig":
        if not self.profiles:
            raise RtlmError("no profile given: pass one or more profile directories")
        if self.target not in TARGETS:
            raise RtlmError(f"unknown target {self.target!r}: use {' or '.join(TARGETS)}")
        if self.method not in METHODS:
            raise RtlmError(f"unknown method {self.method!r}: use one of {', '.join(METHODS)}")
        if not 0.05 <= self.test_size <= 0.5:
            raise RtlmError(f"--test-size must be within [0.05, 0.5], got {self.test_size}")
        if self.threads < 1 or self.rounds < 1:
            raise RtlmError("--threads and --rounds must be >= 1")
        if self.cross_fit == 1 or not 0 <= self.cross_fit <= 20:
            raise RtlmError(f"--cross-fit must be 0 (none) or 2-20 folds, got {self.cross_fit}")
        return self


# --- data ---------------------------------------------------------------------------------------

def load_training_data(paths: tuple[str, ...]):
    """(rows, metas) of profiles that share a model and a token cap; duplicates by prompt dropped."""
    import pandas as pd

    from rtlm_cli.profiling import load_profile

    frames, metas = [], []
    for p in paths:
        meta, df = load_profile(p)
        if df.empty:
            raise RtlmError(f"profile {p} holds no requests: run `rtlm profile --out {p}` first")
        frames.append(df.assign(_profile=str(p)))
        metas.append(meta)
    base = metas[0]
    for p, m in zip(paths[1:], metas[1:]):
        if m["model"]["model_hash"] != base["model"]["model_hash"]:
            raise RtlmError(f"profile {p} was made with another model than {paths[0]}: train on one model's profiles")
        if m["decoding"]["max_new_tokens"] != base["decoding"]["max_new_tokens"]:
            raise RtlmError(f"profile {p} used another --max-new-tokens than {paths[0]}: lengths are not comparable")
    df = pd.concat(frames, ignore_index=True).drop_duplicates("prompt_id").reset_index(drop=True)
    return df, metas


def split_by_prompt(prompt_ids, test_size: float, seed: int) -> np.ndarray:
    """Boolean mask of held-out rows: a seeded share of the distinct prompts."""
    ids = np.asarray(sorted(set(prompt_ids)))
    rng = np.random.default_rng(seed)  # the split's own generator
    held = set(rng.choice(ids, size=max(1, int(round(len(ids) * test_size))), replace=False))
    return np.asarray([pid in held for pid in prompt_ids])


# --- models -------------------------------------------------------------------------------------

def _params(objective: str, threads: int, seed: int, rows: int = 1000, **extra) -> dict:
    """Strongly regularized trees: with ~1,000 noisy rows, small trees on random feature halves
    (extremely randomized splits) generalize best; measured by 5-fold Kendall tau on the reference
    profile's text features: 0.04 with 15-leaf trees, 0.18 with these."""
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

    @classmethod
    def fit(cls, method, X, y, ended, cap, names, threads, seed, rounds, with_p90=True) -> "LengthModel":
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
        return cls("raw" if method == "raw" else ("mixture" if capped else "log"), cap, reg, capped, p90)

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
        return out


# --- latency ------------------------------------------------------------------------------------

def latency_model(profile_dir: str, df) -> dict:
    """Seconds of a request at batch 1: prefill_base + prefill_per_token * prompt + step * output."""
    from rtlm_cli.timing import load_timing_table

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


# --- the predictor ------------------------------------------------------------------------------

def read_predictor_meta(path: str | Path) -> dict:
    """A predictor's meta.json, refused when its feature set is not this rtlm's (no LightGBM loaded)."""
    meta = read_meta(Path(path), "predictor")
    if meta.get("feature_set_version") != uncertainty.FEATURE_SET_VERSION:
        raise RtlmError(
            f"predictor {path} uses feature set {meta.get('feature_set_version')!r} but this rtlm computes "
            f"feature set {uncertainty.FEATURE_SET_VERSION!r}: retrain it with `rtlm train-predictor`"
        )
    return meta


@dataclass
class Predictor:
    path: Path
    meta: dict
    model: LengthModel
    ctx: F.FeatureContext

    @property
    def families(self) -> tuple[str, ...]:
        return tuple(self.meta["families"])

    @classmethod
    def load(cls, path: str | Path, device: str = "cpu") -> "Predictor":
        import lightgbm as lgb

        path = Path(path)
        meta = read_predictor_meta(path)

        def booster(name):
            return lgb.Booster(model_file=str(path / name)) if (path / name).is_file() else None

        files = meta["files"]
        cap = float(meta["cap"]) if meta.get("cap") is not None else float("inf")
        model = LengthModel(meta["method"], cap, booster(files["regressor"]),
                            booster(files.get("capped") or ""), booster(files.get("p90") or ""))
        state = json.loads((path / files["prefill"]).read_text()) if files.get("prefill") else None
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
        """Predicted tokens (``predicted``), ``p90``, ``capped_prob`` (mixture) and ``e2e_s`` per text."""
        names, X = self.features(texts)
        return self.predict_features(names, X, texts)

    def predict_features(self, names: list[str], X, texts: list[str]) -> dict[str, np.ndarray]:
        out = self.model.predict(X)
        lat = self.meta["latency"]
        if self.meta["target"] == "output_tokens":
            ptoks = X[:, names.index("prompt_tokens")] if "prompt_tokens" in names else np.asarray(
                [1.3 * len(t.split()) for t in texts])
            out["e2e_s"] = lat["prefill_s_base"] + lat["prefill_s_per_token"] * ptoks + lat["decode_step_s"] * out["predicted"]
        else:
            out["e2e_s"] = out["predicted"]
        return out


# --- training -----------------------------------------------------------------------------------

@dataclass
class TrainResult:
    out: Path
    meta: dict
    evaluation: list[dict]
    importance: list[dict]


def _eval_row(name: str, kind: str, actual, predicted, cap) -> dict:
    # Length buckets [0,64) [64,128) [128,256) ... below the cap; the last one reaches the cap.
    edges = tuple(e for e in metrics.DEFAULT_BUCKETS if e < cap)
    return {"model": name, "kind": kind, **metrics.evaluate(actual, predicted, edges)}


def train(cfg: TrainConfig, console=None, stage=None) -> TrainResult:
    """Fit, evaluate and save; ``stage(text)``, if given, hears what training is doing now."""
    cfg.validate()
    out = Path(cfg.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not cfg.overwrite:
        raise RtlmError(f"output {out} already exists: choose another --out or pass --overwrite")
    for fam in cfg.families:
        F.FAMILIES.get(fam)
    df, metas = load_training_data(cfg.profiles)
    if len(df) < MIN_ROWS:
        raise RtlmError(f"the profiles hold {len(df)} requests; training needs at least {MIN_ROWS}: profile more prompts")
    base = metas[0]
    model_id = base["model"]["model_id"]
    cap = float(base["decoding"]["max_new_tokens"]) if cfg.target == "output_tokens" else float("inf")
    ctx = F.FeatureContext(model=model_id, device=cfg.device,
                           tokenizer_file=F.tokenizer_file_for(model_id))
    test = split_by_prompt(df["prompt_id"].tolist(), cfg.test_size, cfg.seed)
    tr, te = df[~test].reset_index(drop=True), df[test].reset_index(drop=True)
    y_tr, y_te = tr[cfg.target].to_numpy(float), te[cfg.target].to_numpy(float)
    ended_tr = tr["ended"].to_numpy(bool)
    ctx.fit_targets = F.probe_targets(y_tr, ended_tr)
    # the baselines need the text family (uncertainty score) and the prompt family (length)
    fams = tuple(dict.fromkeys(cfg.families + ("text", "prompt")))
    names, Xtr, owner = F.compute(fams, tr["prompt"].tolist(), ctx, fit=True)
    _, Xte, _ = F.compute(fams, te["prompt"].tolist(), ctx)
    owner = np.asarray(owner)

    def cols(families):
        return np.flatnonzero(np.isin(owner, families)), [n for n, o in zip(names, owner) if o in families]

    def fit(families, method, with_p90=False):
        idx, sub = cols(families)
        m = LengthModel.fit(method, Xtr[:, idx], y_tr, ended_tr, cap, sub, cfg.threads, cfg.seed, cfg.rounds, with_p90)
        return m, idx

    rows = [_eval_row("constant mean", "baseline", y_te, np.full(len(y_te), y_tr.mean()), cap)]
    # RT-LM's signal as is: the combined uncertainty score, mapped to tokens by a line fitted on training rows.
    score = names.index("uncertainty_score")
    slope, icpt = np.polyfit(Xtr[:, score], y_tr, 1)
    rows.append(_eval_row("uncertainty score only", "baseline", y_te, icpt + slope * Xte[:, score], cap))
    m, idx = fit(("prompt",), "log")
    rows.append(_eval_row("prompt length only", "baseline", y_te, m.predict(Xte[:, idx])["predicted"], cap))
    main, main_idx = fit(cfg.families, cfg.method, with_p90=True)
    main_pred = main.predict(Xte[:, main_idx])
    label = "+".join(cfg.families)
    rows.append(_eval_row(f"{label} ({main.method})", "chosen", y_te, main_pred["predicted"], cap))
    for method in METHODS:
        if method != cfg.method:
            m, idx = fit(cfg.families, method)
            rows.append(_eval_row(f"{label} ({method})", "method", y_te, m.predict(Xte[:, idx])["predicted"], cap))
    if cfg.ablation and len(cfg.families) > 1:
        for fam in cfg.families:
            m, idx = fit((fam,), cfg.method)
            rows.append(_eval_row(f"only {fam}", "ablation", y_te, m.predict(Xte[:, idx])["predicted"], cap))
            rest = tuple(f for f in cfg.families if f != fam)
            m, idx = fit(rest, cfg.method)
            rows.append(_eval_row(f"without {fam}", "ablation", y_te, m.predict(Xte[:, idx])["predicted"], cap))
    for p in cfg.eval_profiles:
        edf, emetas = load_training_data((p,))
        if emetas[0]["model"]["model_hash"] != base["model"]["model_hash"]:
            raise RtlmError(f"evaluation profile {p} was made with another model than the training profiles")
        _, Xe, _ = F.compute(fams, edf["prompt"].tolist(), ctx)
        rows.append(_eval_row(f"{label} ({main.method}) on {Path(p).name}", "external",
                              edf[cfg.target].to_numpy(float), main.predict(Xe[:, main_idx])["predicted"], cap))

    sub_names = [names[i] for i in main_idx]
    gain = main.regressor.feature_importance("gain")
    fam_of = dict(zip(names, owner))
    importance = sorted(({"feature": n, "family": fam_of[n], "gain": float(g)} for n, g in zip(sub_names, gain)),
                        key=lambda r: -r["gain"])
    costs = F.measure_cost(cfg.families, te["prompt"].tolist()[:200], ctx)
    holdout = te[["prompt_id", cfg.target, "ended"]].rename(columns={cfg.target: "actual"}).assign(
        predicted=main_pred["predicted"], p90=main_pred.get("p90"))
    if "capped_prob" in main_pred:
        holdout["capped_prob"] = main_pred["capped_prob"]
    oof = None
    if cfg.cross_fit:
        from rtlm_cli import crossfit

        def fitted(fold: int) -> None:
            if stage:
                stage(f"out-of-fold predictions: fold {fold}/{cfg.cross_fit} fitted")

        oof = crossfit.out_of_fold(df, cfg.families, cfg.target, cfg.method, cap, ctx, cfg.cross_fit, cfg.seed,
                                   cfg.threads, cfg.rounds, fitted)
        rows.append(_eval_row(f"{label} ({main.method}), {cfg.cross_fit}-fold out of fold, all {len(oof)} prompts",
                              "cross-validated", oof["actual"].to_numpy(), oof["predicted"].to_numpy(), cap))
    meta = _save(out, cfg, main, sub_names, ctx, base, metas, rows, importance, costs, holdout, df, test, cap, oof)
    return TrainResult(out, meta, rows, importance)


def _profile_hash(path: str) -> str:
    """SHA-256 over a profile's request shards (what the predictor was trained on)."""
    h = hashlib.sha256()
    for p in sorted((Path(path) / "requests").glob("part-*.parquet")):
        h.update(p.read_bytes())
    return h.hexdigest()


def _save(out, cfg, model, names, ctx, base, metas, rows, importance, costs, holdout, df, test, cap, oof=None) -> dict:
    import pandas as pd

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        files = {"regressor": "regressor.txt"}
        model.regressor.save_model(str(tmp / "regressor.txt"))
        if model.capped is not None:
            files["capped"] = "capped.txt"
            model.capped.save_model(str(tmp / "capped.txt"))
        if model.p90 is not None:
            files["p90"] = "p90.txt"
            model.p90.save_model(str(tmp / "p90.txt"))
        if "prompt" in cfg.families and ctx.tokenizer_file:
            files["tokenizer"] = "tokenizer.json"
            shutil.copyfile(ctx.tokenizer_file, tmp / "tokenizer.json")
        if "prefill" in cfg.families:
            files["prefill"] = "prefill_state.json"
            atomic_write_json(tmp / "prefill_state.json", ctx.prefill_state)
        atomic_write_json(tmp / "evaluation.json", rows)
        atomic_write_parquet(pd.DataFrame(importance), tmp / "importance.parquet")
        atomic_write_parquet(holdout, tmp / "holdout.parquet")
        if oof is not None:
            from rtlm_cli import crossfit

            files["crossfit"] = crossfit.FILE
            atomic_write_parquet(oof, tmp / crossfit.FILE)
        meta = {
            "kind": "rtlm.predictor", "schema_version": SCHEMA_VERSION, "created_at": now_iso(),
            "target": cfg.target, "method": model.method, "cap": cap if np.isfinite(cap) else None,
            "families": list(cfg.families), "feature_names": names,
            "feature_set_version": uncertainty.FEATURE_SET_VERSION,
            "model": {k: base["model"][k] for k in ("model_id", "model_hash", "dtype")},
            "device": base["device"], "decoding": base["decoding"],
            "training_profiles": [{"path": p, "sha256": _profile_hash(p), "identity_hash": m.get("identity_hash")}
                                  for p, m in zip(cfg.profiles, metas)],
            "eval_profiles": list(cfg.eval_profiles),
            "rows": {"train": int((~test).sum()), "test": int(test.sum()), "ended_share": float(df["ended"].mean())},
            "settings": {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("profiles", "out", "overwrite")},
            "latency": latency_model(cfg.profiles[0], df),
            "feature_cost_s_per_prompt": costs,
            "metrics": next(r for r in rows if r["kind"] == "chosen"),
            "files": files,
            **provenance(),
        }
        atomic_write_json(tmp / "meta.json", meta)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return meta
