"""Out-of-fold predictions for every prompt a predictor was trained on.

A predictor fitted on a profile predicts that profile's own prompts far better than new ones (the
reference predictor: Kendall tau 0.58 on its training prompts, 0.38 on held-out ones). A replay
that draws its requests from the training profile would then flatter every length-aware policy.
So training also writes ``crossfit.parquet``: the profile's prompts split into K seeded folds,
each fold predicted by the same method and feature families fitted on the other K-1 folds (feature
state such as the prefill PCA and probes included), and ``rtlm serve-local`` uses those
predictions for the prompts they cover.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from rtlm_cli.predict import features as F
from rtlm_cli.predict.model import LengthModel, quantile_name


def fold_of(prompt_ids: list[str], k: int, seed: int) -> np.ndarray:
    """A seeded fold number in [0, k) per row, by distinct prompt, folds of near-equal size."""
    ids = sorted(set(prompt_ids))
    rng = np.random.default_rng(seed)  # the folds' own generator
    order = rng.permutation(len(ids))
    fold = {ids[j]: i % k for i, j in enumerate(order)}
    return np.asarray([fold[p] for p in prompt_ids])


def fold_features(df, families: tuple[str, ...], target: str, ctx: F.FeatureContext, k: int, seed: int):
    """Per fold: (held-out row indices, training row indices, column names, training matrix,
    held-out matrix), the feature state (prefill PCA and probes) fitted on the training rows only.
    ``ctx`` lends its model and tokenizer; its own fitted state is left alone."""
    fold = fold_of(df["prompt_id"].tolist(), k, seed)
    y, ended = df[target].to_numpy(float), df["ended"].to_numpy(bool)
    texts = df["prompt"].tolist()
    for f in range(k):
        tr, te = np.flatnonzero(fold != f), np.flatnonzero(fold == f)
        fctx = dataclasses.replace(ctx, prefill_state=None, fit_targets=F.probe_targets(y[tr], ended[tr]))
        names, Xtr, _ = F.compute(families, [texts[i] for i in tr], fctx, fit=True)
        _, Xte, _ = F.compute(families, [texts[i] for i in te], fctx)
        yield te, tr, names, Xtr, Xte


def out_of_fold(df, families: tuple[str, ...], target: str, method: str, cap: float, ctx: F.FeatureContext,
                k: int, seed: int, threads: int, rounds: int, fitted=None, levels: tuple[float, ...] = ()):
    """DataFrame: prompt_id, sample_id, fold, actual, ended, predicted, p90 (and capped_prob, ended_tokens for a
    mixture, a column per quantile level) for every row of ``df`` (every answer of a sampled profile),
    each predicted by a model that never saw its fold; ``fitted(n)`` hears that n folds are done."""
    import pandas as pd

    y, ended = df[target].to_numpy(float), df["ended"].to_numpy(bool)
    parts = []
    for f, (te, tr, names, Xtr, Xte) in enumerate(fold_features(df, families, target, ctx, k, seed)):
        model = LengthModel.fit(method, Xtr, y[tr], ended[tr], cap, names, threads, seed, rounds, with_p90=True,
                                levels=levels)
        pred = model.predict(Xte)
        part = pd.DataFrame({"prompt_id": df["prompt_id"].to_numpy()[te], "fold": f, "actual": y[te],
                             "ended": ended[te], "predicted": pred["predicted"], "p90": pred["p90"]})
        if "sample_id" in df:
            part.insert(1, "sample_id", df["sample_id"].to_numpy()[te])
        for col in ("capped_prob", "ended_tokens"):  # a mixture's
            if col in pred:
                part[col] = pred[col]
        for j, lv in enumerate(levels):
            part[quantile_name(lv)] = pred["quantiles"][:, j]
        parts.append(part)
        if fitted is not None:
            fitted(f + 1)
    return pd.concat(parts, ignore_index=True)
