"""``rtlm train-predictor``: fit a length predictor on profiles and evaluate it honestly.

Held-out prompts (a seeded split by prompt) against baselines (constant mean, RT-LM's uncertainty
score alone, prompt length), each method, a feature-family ablation, other prompt sources
(``--eval``), and the out-of-fold predictions of every prompt (``crossfit.py``).

A sampled profile (several answers per prompt) trains on every answer; the split and the folds go
by prompt, so a prompt's answers are never on both sides. With quantile levels (``--quantiles``, by
default on a sampled profile) the distribution is evaluated too (``distribution.py``): on the
held-out prompts and out of fold, against a prompt-blind distribution and the point model with
conformal intervals.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rtlm_cli.engines.resolve import tokenizer_file
from rtlm_cli.errors import RtlmError
from rtlm_cli.formats import predictor as predictor_format
from rtlm_cli.formats import profile as profile_format
from rtlm_cli.formats.store import artifact_dir, check_output, now_iso, provenance
from rtlm_cli.paths import source_path
from rtlm_cli.predict import crossfit, dist_eval, metrics
from rtlm_cli.predict import features as F
from rtlm_cli.predict.data import load_training_data, sampled, split_by_prompt
from rtlm_cli.predict.model import METHODS, QUANTILE_LEVELS, LengthModel, latency_model, quantile_name
from rtlm_cli.prompts import uncertainty

TARGETS = ("output_tokens", "e2e_s")
MIN_ROWS = 20


@dataclass(frozen=True)
class TrainConfig:
    profiles: tuple[str, ...] = field(metadata={"help": "Profile directories to train on (same model, same --max-new-tokens), or a shipped one by name: reference."})
    out: str = field(metadata={"help": "Predictor directory to write."})
    families: tuple[str, ...] = field(default=F.DEFAULT_FAMILIES, metadata={"help": "Feature families, comma-separated: text (uncertainty features), prompt (token count), prefill (the model's first-token entropy and hidden-state PCA; needs the model)."})
    target: str = field(default="output_tokens", metadata={"help": "output_tokens (latency then follows from the timing table) or e2e_s (direct)."})
    method: str = field(default="mixture", metadata={"help": "mixture (P(capped) x cap + length of ended answers), log (log1p regression) or raw (L2 regression)."})
    test_size: float = field(default=0.2, metadata={"help": "Held-out share of prompts."})
    seed: int = field(default=0, metadata={"help": "Seed of the split and of LightGBM."})
    eval_profiles: tuple[str, ...] = field(default=(), metadata={"help": "Another profile (e.g. another prompt source) to evaluate on; repeatable."})
    ablation: bool = field(default=True, metadata={"help": "Also evaluate each feature family alone and each one left out."})
    threads: int = field(default=2, metadata={"help": "LightGBM threads (never train while a model generates on the same cores)."})
    rounds: int = field(default=1000, metadata={"help": "Boosting rounds of each LightGBM model (learning rate 0.03, 4-leaf trees)."})
    cross_fit: int = field(default=5, metadata={"help": "Also predict every training prompt out of fold (K folds, crossfit.parquet), so that serve-local never replays a prompt with an in-sample prediction; 0 skips it."})
    quantiles: str = field(default="auto", metadata={"help": "Quantile levels of the length distribution to predict, comma-separated (e.g. 0.1,0.5,0.9); auto: 0.1,0.25,0.5,0.75,0.9 on a sampled profile (rtlm profile --samples), none on a greedy one; none: a point predictor only."})
    device: str = field(default="cpu", metadata={"help": "Device for the prefill family."})
    overwrite: bool = field(default=False, metadata={"help": "Replace an existing predictor directory (only once training succeeded)."})

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
        self.levels(sampled=True)
        return self

    def levels(self, sampled: bool) -> tuple[float, ...]:
        """The quantile levels to fit: ``--quantiles`` parsed (auto: the default levels on a sampled profile)."""
        q = self.quantiles.strip().lower()
        if q in ("none", ""):
            return ()
        if q == "auto":
            return QUANTILE_LEVELS if sampled and self.target == "output_tokens" else ()
        try:
            levels = tuple(sorted({float(x) for x in q.split(",") if x.strip()}))
        except ValueError:
            raise RtlmError(f"--quantiles {self.quantiles!r} is not a list of levels: use e.g. 0.1,0.5,0.9, auto or none") from None
        if not levels or not all(0 < lv < 1 and abs(lv * 100 - round(lv * 100)) < 1e-9 for lv in levels):
            raise RtlmError(f"--quantiles levels must be within (0, 1) in steps of 0.01, got {self.quantiles!r}")
        if self.target != "output_tokens":
            raise RtlmError("--quantiles predicts output lengths: use it with --target output_tokens")
        return levels


@dataclass
class TrainResult:
    out: Path
    meta: dict
    evaluation: list[dict]
    importance: list[dict]
    distribution: dict | None = None  # a distribution predictor's evaluation (distribution.json)


def _eval_row(name: str, kind: str, actual, predicted, cap) -> dict:
    # Length buckets [0,64) [64,128) [128,256) ... below the cap; the last one reaches the cap.
    edges = tuple(e for e in metrics.DEFAULT_BUCKETS if e < cap)
    return {"model": name, "kind": kind, **metrics.evaluate(actual, predicted, edges)}


@dataclass
class _Split:
    """The held-out split's features and targets, and fits on a subset of the feature families."""

    cfg: TrainConfig
    names: list[str]
    owner: np.ndarray  # each feature's family
    Xtr: np.ndarray
    Xte: np.ndarray
    y_tr: np.ndarray
    y_te: np.ndarray
    ended_tr: np.ndarray
    cap: float
    prompts_tr: np.ndarray  # each row's prompt_id (a sampled profile repeats them)
    prompts_te: np.ndarray
    ended_te: np.ndarray

    def fit(self, families, method: str, with_p90: bool = False, levels: tuple[float, ...] = ()):
        idx = np.flatnonzero(np.isin(self.owner, families))
        c = self.cfg
        model = LengthModel.fit(method, self.Xtr[:, idx], self.y_tr, self.ended_tr, self.cap,
                                [self.names[i] for i in idx], c.threads, c.seed, c.rounds, with_p90, levels)
        return model, idx

    def row(self, name: str, kind: str, predicted, actual=None) -> dict:
        return _eval_row(name, kind, self.y_te if actual is None else actual, predicted, self.cap)

    def held_out_row(self, name: str, kind: str, families, method: str) -> dict:
        model, idx = self.fit(families, method)
        return self.row(name, kind, model.predict(self.Xte[:, idx])["predicted"])


def _baseline_rows(s: _Split) -> list[dict]:
    """Constant mean; RT-LM's signal as is (the combined uncertainty score, mapped to tokens by a line
    fitted on training rows); prompt length alone."""
    score = s.names.index("uncertainty_score")
    slope, icpt = np.polyfit(s.Xtr[:, score], s.y_tr, 1)
    return [s.row("constant mean", "baseline", np.full(len(s.y_te), s.y_tr.mean())),
            s.row("uncertainty score only", "baseline", icpt + slope * s.Xte[:, score]),
            s.held_out_row("prompt length only", "baseline", ("prompt",), "log")]


def _variant_rows(s: _Split, label: str) -> list[dict]:
    """The chosen families under every other method, and (``ablation``) each family alone and left out."""
    cfg = s.cfg
    rows = [s.held_out_row(f"{label} ({m})", "method", cfg.families, m) for m in METHODS if m != cfg.method]
    if cfg.ablation and len(cfg.families) > 1:
        for fam in cfg.families:
            rows.append(s.held_out_row(f"only {fam}", "ablation", (fam,), cfg.method))
            rest = tuple(f for f in cfg.families if f != fam)
            rows.append(s.held_out_row(f"without {fam}", "ablation", rest, cfg.method))
    return rows


def _load_split(cfg: TrainConfig):
    """(rows, metas, held-out mask, the split, the feature context, every family computed)."""
    df, metas = load_training_data(cfg.profiles)
    if len(df) < MIN_ROWS:
        raise RtlmError(f"the profiles hold {len(df)} requests; training needs at least {MIN_ROWS}: profile more prompts")
    model_id = metas[0]["model"]["model_id"]
    cap = float(profile_format.cap(metas[0])) if cfg.target == "output_tokens" else float("inf")
    ctx = F.FeatureContext(model=model_id, device=cfg.device, tokenizer_file=tokenizer_file(model_id))
    test = split_by_prompt(df["prompt_id"].tolist(), cfg.test_size, cfg.seed)
    tr, te = df[~test].reset_index(drop=True), df[test].reset_index(drop=True)
    y_tr, ended_tr = tr[cfg.target].to_numpy(float), tr["ended"].to_numpy(bool)
    ctx.fit_targets = F.probe_targets(y_tr, ended_tr)
    # the baselines need the text family (uncertainty score) and the prompt family (length)
    fams = tuple(dict.fromkeys(cfg.families + ("text", "prompt")))
    names, Xtr, owner = F.compute(fams, tr["prompt"].tolist(), ctx, fit=True)
    _, Xte, _ = F.compute(fams, te["prompt"].tolist(), ctx)
    split = _Split(cfg, names, np.asarray(owner), Xtr, Xte, y_tr, te[cfg.target].to_numpy(float), ended_tr, cap,
                   tr["prompt_id"].to_numpy(), te["prompt_id"].to_numpy(), te["ended"].to_numpy(bool))
    return df, metas, test, split, ctx, fams


def train(cfg: TrainConfig, console=None, stage=None) -> TrainResult:
    """Fit, evaluate and save; ``stage(text)``, if given, hears what training is doing now."""
    cfg.validate()
    out = Path(cfg.out)
    check_output(out, cfg.overwrite)
    for fam in cfg.families:
        F.FAMILIES.get(fam)
    df, metas, test, s, ctx, fams = _load_split(cfg)
    levels = cfg.levels(sampled(metas))
    base, cap, te = metas[0], s.cap, df[test].reset_index(drop=True)
    main, main_idx = s.fit(cfg.families, cfg.method, with_p90=True, levels=levels)
    main_pred = main.predict(s.Xte[:, main_idx])
    label = "+".join(cfg.families)
    rows = [*_baseline_rows(s), s.row(f"{label} ({main.method})", "chosen", main_pred["predicted"]),
            *_variant_rows(s, label)]
    for p in cfg.eval_profiles:
        edf, emetas = load_training_data((p,))
        if emetas[0]["model"]["model_hash"] != base["model"]["model_hash"]:
            raise RtlmError(f"evaluation profile {p} was made with another model than the training profiles")
        _, Xe, _ = F.compute(fams, edf["prompt"].tolist(), ctx)
        rows.append(s.row(f"{label} ({main.method}) on {Path(p).name}", "external",
                          main.predict(Xe[:, main_idx])["predicted"], edf[cfg.target].to_numpy(float)))

    sub_names = [s.names[i] for i in main_idx]
    gain = main.regressor.feature_importance("gain")
    fam_of = dict(zip(s.names, s.owner))
    importance = sorted(({"feature": n, "family": fam_of[n], "gain": float(g)} for n, g in zip(sub_names, gain)),
                        key=lambda r: -r["gain"])
    costs = F.measure_cost(cfg.families, te["prompt"].tolist()[:200], ctx)
    holdout = te[["prompt_id", profile_format.SAMPLE_KEY, cfg.target, "ended"]].rename(
        columns={cfg.target: "actual"}).assign(predicted=main_pred["predicted"], p90=main_pred.get("p90"))
    if "capped_prob" in main_pred:
        holdout["capped_prob"] = main_pred["capped_prob"]
    for j, lv in enumerate(levels):
        holdout[quantile_name(lv)] = main_pred["quantiles"][:, j]
    dist = {"levels": list(levels), "held_out": dist_eval.held_out(s, main_idx, main_pred["quantiles"], levels)} if levels else None
    oof = None
    if cfg.cross_fit:
        def fitted(fold: int) -> None:
            if stage:
                stage(f"out-of-fold predictions: fold {fold}/{cfg.cross_fit} fitted")

        oof = crossfit.out_of_fold(df, cfg.families, cfg.target, cfg.method, cap, ctx, cfg.cross_fit, cfg.seed,
                                   cfg.threads, cfg.rounds, fitted, levels)
        rows.append(_eval_row(f"{label} ({main.method}), {cfg.cross_fit}-fold out of fold, all {len(oof)} "
                              + ("answers" if sampled(metas) else "prompts"),
                              "cross-validated", oof["actual"].to_numpy(), oof["predicted"].to_numpy(), cap))
        if dist:
            dist["out_of_fold"] = dist_eval.out_of_fold(oof, levels, cap)
    meta = _save(out, cfg, main, sub_names, ctx, base, metas, rows, importance, costs, holdout, df, test, cap, oof, dist)
    return TrainResult(out, meta, rows, importance, dist)


def _profile_hash(path: str) -> str:
    """SHA-256 over a profile's request shards (what the predictor was trained on)."""
    h = hashlib.sha256()
    for p in sorted((source_path(path) / profile_format.REQUESTS_DIR).glob("part-*.parquet")):
        h.update(p.read_bytes())
    return h.hexdigest()


def _save(out, cfg, model, names, ctx, base, metas, rows, importance, costs, holdout, df, test, cap, oof=None,
          dist=None) -> dict:
    meta = {
        "created_at": now_iso(),
        "target": cfg.target, "method": model.method, "cap": cap if np.isfinite(cap) else None,
        "families": list(cfg.families), "feature_names": names,
        "feature_set_version": uncertainty.FEATURE_SET_VERSION,
        "model": {k: base["model"][k] for k in ("model_id", "model_hash", "dtype")},
        "device": base["device"], "decoding": base["decoding"],
        "training_profiles": [{"path": p, "sha256": _profile_hash(p), "identity_hash": m.get("identity_hash")}
                              for p, m in zip(cfg.profiles, metas)],
        "eval_profiles": list(cfg.eval_profiles),
        "rows": {"train": int((~test).sum()), "test": int(test.sum()), "ended_share": float(df["ended"].mean()),
                 "prompts": int(df["prompt_id"].nunique()), "samples_per_prompt": max(profile_format.samples(m) for m in metas)},
        "quantiles": list(model.levels),
        "settings": {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("profiles", "out", "overwrite")},
        "latency": latency_model(cfg.profiles[0], df),
        "feature_cost_s_per_prompt": costs,
        "metrics": next(r for r in rows if r["kind"] == "chosen"),
        "distribution_metrics": ({k: v for k, v in (dist.get("out_of_fold") or dist["held_out"])[0].items()
                                  if not isinstance(v, (list, dict))} if dist else None),
        **provenance(),
    }
    with artifact_dir(out) as tmp:
        return predictor_format.write_predictor(
            tmp, meta, {"regressor": model.regressor, "capped": model.capped, "p90": model.p90,
                        **{quantile_name(lv): b for lv, b in (model.quantiles or {}).items()}},
            tokenizer_file=ctx.tokenizer_file if "prompt" in cfg.families else None,
            prefill_state=ctx.prefill_state if "prefill" in cfg.families else None,
            evaluation=rows, importance=importance, holdout=holdout, crossfit=oof, distribution=dist)
