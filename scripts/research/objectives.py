"""Do other LightGBM objectives rank better on the full predictor's features? Out-of-fold Kendall tau.

The same 5 seeded folds and per-fold features as `rtlm train-predictor`'s cross-fit
(crossfit.fold_features: text + prompt + prefill, the prefill PCA and probes fitted per fold), and
per fold:
the shipped mixture at 300 / 1,000 / 3,000 rounds; learning-to-rank objectives (LambdaRank and
XE-NDCG on the 800 training prompts as one query, relevance = length // 16, the cap its own top
level); a regressor on the length's rank; the prefill ridge probe alone; and a blend of the
mixture's and the probe's ranks. Prints each one's Kendall tau-b per fold and over all prompts.

What it found is in docs/research.md ("Nor does the way the trees are fitted move it").

Usage: .venv/bin/python scripts/research/objectives.py [--profile P] [--json OUT]   (~1 minute once the
prefill states are cached by a training run; SmolLM2 runs over every prompt otherwise; --json: every
figure, per fold too, stamped with the command, times, machine and revision: docs/bench/objectives.json)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table
from scipy.stats import kendalltau, rankdata

from rtlm_cli.engines.resolve import tokenizer_file
from rtlm_cli.predict import features as F
from rtlm_cli.predict.crossfit import fold_features
from rtlm_cli.predict.model import LengthModel, _params
from rtlm_cli.predict.data import load_training_data

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from benchlib import now, write_record  # noqa: E402

FAMILIES = ("text", "prompt", "prefill")


def main() -> None:
    import lightgbm as lgb

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="reference")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--json", help="write every figure here (stamped with command, times, machine, revision)")
    args = ap.parse_args()
    started = now()
    df, metas = load_training_data((args.profile,))
    cap = float(metas[0]["decoding"]["max_new_tokens"])
    model = metas[0]["model"]["model_id"]
    y, ended = df["output_tokens"].to_numpy(float), df["ended"].to_numpy(bool)
    ctx = F.FeatureContext(model=model, tokenizer_file=tokenizer_file(model))
    names_of = ["mixture, 300 rounds", "mixture, 1,000 rounds (shipped)", "mixture, 3,000 rounds", "LambdaRank",
                "XE-NDCG", "regression on the length's rank", "prefill ridge probe alone", "mixture + probe (ranks)"]
    pred = {k: np.zeros(len(df)) for k in names_of}
    per_fold = {k: [] for k in names_of}
    for te, tr, names, Xtr, Xte in fold_features(df, FAMILIES, "output_tokens", ctx, args.folds, seed=0):
        for label, rounds in ((names_of[0], 300), (names_of[1], 1000), (names_of[2], 3000)):
            m = LengthModel.fit("mixture", Xtr, y[tr], ended[tr], cap, names, 2, 0, rounds, with_p90=False)
            pred[label][te] = m.predict(Xte)["predicted"]
        levels = int(cap // 16)
        rel = np.minimum((y[tr] // 16).astype(int), levels)
        for label, objective in ((names_of[3], "lambdarank"), (names_of[4], "rank_xendcg")):
            params = _params(objective, 2, 0, len(tr), label_gain=list(range(levels + 1)))
            if objective == "lambdarank":
                params["lambdarank_truncation_level"] = len(tr)
            booster = lgb.train(params, lgb.Dataset(Xtr, rel, group=[len(tr)], feature_name=names), 500)
            pred[label][te] = booster.predict(Xte)
        u = (rankdata(y[tr]) - 0.5) / len(tr)
        booster = lgb.train(_params("regression", 2, 0, len(tr)), lgb.Dataset(Xtr, u, feature_name=names), 1000)
        pred[names_of[5]][te] = booster.predict(Xte)
        pred[names_of[6]][te] = Xte[:, names.index("prefill_probe_len")]
        pred[names_of[7]][te] = rankdata(pred[names_of[1]][te]) + rankdata(pred[names_of[6]][te])
        for k in names_of:
            per_fold[k].append(float(kendalltau(pred[k][te], y[te]).statistic))
    t = Table(title=f"out-of-fold Kendall tau, {len(df)} prompts, {args.folds} folds")
    t.add_column("model")
    t.add_column("all prompts", justify="right")
    t.add_column("folds", justify="right")
    for k in names_of:
        t.add_row(k, f"{kendalltau(pred[k], y).statistic:.3f}", " ".join(f"{v:.3f}" for v in per_fold[k]))
    Console(width=150).print(t)
    write_record(args.json, {"profile": args.profile, "folds": args.folds, "prompts": len(df),
                             "rows": [{"model": k, "kendall_tau": float(kendalltau(pred[k], y).statistic),
                                       "folds": per_fold[k]} for k in names_of]}, started)


if __name__ == "__main__":
    main()
