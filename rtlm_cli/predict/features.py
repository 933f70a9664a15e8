"""Predictor feature families: one function computes them for training and for prediction.

- ``text``: the uncertainty features of ``uncertainty.py`` (pure Python, ~0.2 ms per prompt).
- ``prompt``: the prompt's token count with the target model's tokenizer (the ``tokenizers``
  library on a ``tokenizer.json`` kept in the predictor: no torch, ~0.05 ms per prompt).
- ``prefill``: what the target model shows at prefill: the entropy and top-1 probability of its
  first-token distribution, the probability that it ends at once, a 16-d PCA of its hidden states
  (last prompt position at 60%, 80% and 100% of the depth, and the final layer averaged over the
  prompt), and two supervised ridge probes on those states (log length, capped or not),
  cross-fitted on the training rows. Needs the model (torch),
  and costs a prefill per prompt.

Families are switchable; each one's cost per prompt is measured by ``measure_cost``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from rtlm_cli.errors import RtlmError
from rtlm_cli.prompts import uncertainty
from rtlm_cli.registry import Registry

FAMILIES: Registry = Registry("feature family")
PREFILL_STATS = ("prefill_entropy", "prefill_top1_prob", "prefill_end_prob")
DEFAULT_FAMILIES = ("text", "prompt")
PCA_DIM = 16
PREFILL_LAYOUT = 2  # which hidden states the prefill probe keeps (2: 60/80/100% depth + final mean)


@dataclass
class FeatureContext:
    """What families need beyond the texts; fitted state (PCA) lives here and is saved with a predictor."""

    model: str | None = None  # the target model spec (prompt tokenizer, prefill)
    device: str = "cpu"
    tokenizer_file: str | None = None  # tokenizer.json; None = whitespace count (fake model)
    prefill_state: dict | None = None  # fitted standardization, PCA and probes of the prefill family
    fit_targets: dict | None = None  # training targets, for the supervised probes (set by training)
    prefill_cache: bool = True  # off when measuring the family's real cost
    _tokenizer: object = field(default=None, repr=False)
    _engine: object = field(default=None, repr=False)

    def tokenizer(self):
        if self._tokenizer is None and self.tokenizer_file:
            import tokenizers

            self._tokenizer = tokenizers.Tokenizer.from_file(self.tokenizer_file)
        return self._tokenizer

    def engine(self):
        if self._engine is None:
            if not self.model or self.model.startswith("fake"):
                raise RtlmError("the prefill feature family needs a real model: the profile was made with a fake one")
            from rtlm_cli.engines import load_engine

            self._engine = load_engine(self.model, device=self.device)
        return self._engine


@FAMILIES.register("text")
def text_family(texts: list[str], ctx: FeatureContext, fit: bool = False) -> tuple[list[str], np.ndarray]:
    return list(uncertainty.ALL_COLUMNS), np.asarray(uncertainty.extract_rows(texts), dtype=np.float64)


@FAMILIES.register("prompt")
def prompt_family(texts: list[str], ctx: FeatureContext, fit: bool = False) -> tuple[list[str], np.ndarray]:
    tok = ctx.tokenizer()
    if tok is None:
        counts = [len(t.split()) for t in texts]
    else:
        # encode_batch_fast skips the character offsets (~15% faster; tokenizers >= 0.21)
        encode = getattr(tok, "encode_batch_fast", tok.encode_batch)
        counts = [len(e.ids) for e in encode(list(texts), add_special_tokens=False)]
    return ["prompt_tokens"], np.asarray(counts, dtype=np.float64).reshape(-1, 1)


def _prefill_signals(texts: list[str], ctx: FeatureContext):
    """The engine's prefill probe, through a per-model cache ($RTLM_HOME/prefill) keyed by prompt id:
    ablations, reruns and benchmarks do not pay for the same forward pass twice."""
    import pandas as pd

    from rtlm_cli.formats.store import atomic_write_parquet
    from rtlm_cli.paths import rtlm_home
    from rtlm_cli.prompts.sources import prompt_id

    engine = ctx.engine()
    if not ctx.prefill_cache:
        return engine.prefill_probe(texts)
    name = f"layout{PREFILL_LAYOUT}-{engine.info.model_hash[:16]}-{engine.info.dtype}.parquet"
    path = rtlm_home() / "prefill" / name
    cache = pd.read_parquet(path).set_index("prompt_id") if path.is_file() else None
    ids = [prompt_id(t) for t in texts]
    first: dict[str, int] = {}  # each prompt's first row (a sampled profile repeats it), in order
    for i, pid in enumerate(ids):
        first.setdefault(pid, i)
    missing = [i for pid, i in first.items() if cache is None or pid not in cache.index]
    if missing:
        e, t1, end, hid = engine.prefill_probe([texts[i] for i in missing])
        new = pd.DataFrame({"prompt_id": [ids[i] for i in missing], "entropy": e, "top1": t1, "end": end,
                            "hidden": list(hid)}).drop_duplicates("prompt_id").set_index("prompt_id")
        cache = new if cache is None else pd.concat([cache, new[~new.index.isin(cache.index)]])
        atomic_write_parquet(cache.reset_index(), path)
    rows = cache.loc[ids]
    return (rows["entropy"].to_numpy(), rows["top1"].to_numpy(), rows["end"].to_numpy(),
            np.stack([np.asarray(h, dtype=np.float32) for h in rows["hidden"]]))


def _ridge(X, y, lam: float):
    """Ridge weights on centred data, solved in the dual (n x n) when there are more columns than rows."""
    n, d = X.shape
    if d > n:
        return X.T @ np.linalg.solve(X @ X.T + lam * np.eye(n), y)
    return np.linalg.solve(X.T @ X + lam * np.eye(d), X.T @ y)


def _folds(n: int, k: int, seed: int = 0, groups=None):
    """``k`` folds of ``n`` rows; with ``groups`` (a label per row: a sampled profile's prompt) every row
    of a group in one fold. Distinct groups give the row folds exactly."""
    rng = np.random.default_rng(seed)  # the cross-fitting split's own generator
    if groups is None:
        return np.array_split(rng.permutation(n), k)
    import pandas as pd

    g, names = pd.factorize(np.asarray(groups))  # groups numbered in order of first appearance
    return [np.flatnonzero(np.isin(g, part)) for part in np.array_split(rng.permutation(len(names)), k)]


def fit_probe(X, y, lambdas=(10.0, 100.0, 1e3, 1e4, 1e5), k: int = 5, groups=None) -> tuple[np.ndarray, float, np.ndarray]:
    """A ridge probe of ``y`` on standardized ``X``: (weights, intercept, out-of-fold predictions).

    The penalty is chosen by k-fold error; out-of-fold predictions stand in for the probe on the
    training rows, so the booster downstream never sees a probe that has seen its own target. With
    ``groups`` (a sampled profile's prompts: several rows share one prompt's hidden state) the folds
    keep a group together, or a row's prediction would be fitted on its twins' targets.
    """
    folds = _folds(len(y), k, groups=groups)
    best, best_err, oof_best = None, np.inf, None
    for lam in lambdas:
        oof = np.zeros(len(y))
        for f in folds:
            train = np.setdiff1d(np.arange(len(y)), f)
            mu = y[train].mean()
            oof[f] = X[f] @ _ridge(X[train], y[train] - mu, lam) + mu
        err = float(np.mean((oof - y) ** 2))
        if err < best_err:
            best, best_err, oof_best = lam, err, oof
    mu = float(y.mean())
    return _ridge(X, y - mu, best), mu, oof_best


@FAMILIES.register("prefill")
def prefill_family(texts: list[str], ctx: FeatureContext, fit: bool = False) -> tuple[list[str], np.ndarray]:
    entropy, top1, end, hidden = _prefill_signals(list(texts), ctx)
    hidden = hidden.astype(np.float64)
    if fit:
        if ctx.fit_targets is None:
            raise RtlmError("fitting the prefill family needs training targets")
        mean, scale = hidden.mean(axis=0), hidden.std(axis=0) + 1e-6
        Z = (hidden - mean) / scale
        _, _, vt = np.linalg.svd(Z, full_matrices=False)
        probes, oof = {}, []
        for name, y in ctx.fit_targets.items():
            w, b, o = fit_probe(Z, np.asarray(y, dtype=np.float64), groups=list(texts))
            probes[name] = {"weights": w.tolist(), "intercept": b}
            oof.append(o)
        ctx.prefill_state = {"layout": PREFILL_LAYOUT, "mean": mean.tolist(), "scale": scale.tolist(),
                             "pca": vt[:PCA_DIM].tolist(), "probes": probes}
        probe_cols = np.column_stack(oof)
    check_prefill_state(ctx.prefill_state)
    st = ctx.prefill_state
    Z = (hidden - np.asarray(st["mean"])) / np.asarray(st["scale"])
    if not fit:
        probe_cols = np.column_stack([Z @ np.asarray(p["weights"]) + p["intercept"] for p in st["probes"].values()])
    proj = Z @ np.asarray(st["pca"]).T
    names = list(PREFILL_STATS) + [f"prefill_probe_{k}" for k in st["probes"]] + [f"prefill_pc{i:02d}" for i in range(proj.shape[1])]
    return names, np.column_stack([entropy, top1, end, probe_cols, proj])


def probe_targets(tokens, ended) -> dict:
    """What the prefill family's supervised probes learn from training rows: log length, capped or not."""
    return {"len": np.log1p(np.asarray(tokens, dtype=np.float64)), "capped": (~np.asarray(ended, dtype=bool)).astype(float)}


def check_prefill_state(state: dict | None) -> None:
    if state is None:
        raise RtlmError("this predictor has no fitted prefill state: retrain it with --features including prefill")
    if state.get("layout", 1) != PREFILL_LAYOUT:
        raise RtlmError(
            f"this predictor's prefill features use hidden-state layout {state.get('layout', 1)}, this rtlm "
            f"computes layout {PREFILL_LAYOUT}: retrain it with `rtlm train-predictor`"
        )


def parse_families(text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    if not names:
        raise RtlmError(f"--features is empty: choose from {', '.join(FAMILIES.names())}")
    for n in names:
        FAMILIES.get(n)  # raises with a did-you-mean
    return names


def compute(families: tuple[str, ...], texts: list[str], ctx: FeatureContext, fit: bool = False):
    """(column names, matrix, family of each column) for the texts, families in the given order."""
    names: list[str] = []
    blocks = []
    owner: list[str] = []
    for fam in families:
        cols, block = FAMILIES.get(fam)(texts, ctx, fit)
        names += cols
        owner += [fam] * len(cols)
        blocks.append(block)
    return names, np.column_stack(blocks) if blocks else np.zeros((len(texts), 0)), owner


def measure_cost(families: tuple[str, ...], texts: list[str], ctx: FeatureContext) -> dict[str, float]:
    """Seconds per prompt of each family on these texts (after one warm-up call)."""
    out = {}
    saved, ctx.prefill_cache = ctx.prefill_cache, False
    try:
        for fam in families:
            fn = FAMILIES.get(fam)
            fn(texts[:2], ctx)
            t0 = time.perf_counter()
            fn(texts, ctx)
            out[fam] = (time.perf_counter() - t0) / max(len(texts), 1)
    finally:
        ctx.prefill_cache = saved
    return out
