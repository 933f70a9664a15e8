"""Which form for the length distribution: LightGBM quantile models, or a parametric fit?

Reads a distribution predictor's out-of-fold predictions (`crossfit.parquet` of `rtlm train-predictor`
on a sampled profile with the mixture method) and scores, on every answer out of fold:
  - the quantile models (what rtlm ships: one LightGBM quantile model per level on log(1 + tokens));
  - a parametric fit from the same mixture: P(capped) as a point mass at the cap, and a log-normal
    around the predicted length of an answer that ends, its sigma the spread of the log residuals of
    the *other* folds' ended answers (one sigma for all prompts);
  - beside them the evaluation's own baselines (predict/dist_eval.py: `forms`): the prompt-blind
    distribution (the other folds' answers' quantiles), the point model with conformal intervals and
    the prompt-only ceiling (each answer's prompt's other answers).
Pinball loss, 50%/80% interval coverage and calibration per level (predict/distribution.py).

Usage: .venv/bin/python scripts/research/distribution_fit.py [PREDICTOR] [--json OUT]
       .venv/bin/python scripts/research/distribution_fit.py --markdown PREDICTOR[,PREDICTOR...]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import norm

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from benchlib import markdown_table, now, write_record  # noqa: E402

from rtlm_cli.formats.predictor import read_predictor_meta  # noqa: E402
from rtlm_cli.paths import predictor_path  # noqa: E402
from rtlm_cli.predict import dist_eval  # noqa: E402
from rtlm_cli.predict import distribution as D  # noqa: E402


def parametric(oof: pd.DataFrame, levels, cap: float) -> np.ndarray:
    y, fold, ended = oof["actual"].to_numpy(float), oof["fold"].to_numpy(), oof["ended"].to_numpy(bool)
    p, length = oof["capped_prob"].to_numpy(float), oof["ended_tokens"].to_numpy(float)
    Q = np.empty((len(y), len(levels)))
    for f in np.unique(fold):
        here, other = fold == f, (fold != f) & ended
        sigma = float(np.std(np.log1p(y[other]) - np.log1p(length[other])))
        for j, lv in enumerate(levels):
            below = np.minimum(lv / np.maximum(1.0 - p[here], 1e-9), 1 - 1e-9)  # the level within the ended part
            Q[here, j] = np.where(lv >= 1.0 - p[here], cap,
                                  np.clip(np.expm1(np.log1p(length[here]) + sigma * norm.ppf(below)), 0.0, cap))
    return Q


LABELS = {"quantile model": "quantile models", "prompt-blind": "prompt-blind (the other folds' answers' quantiles)",
          "point model + conformal": "point model + conformal intervals (the other folds' log residuals)",
          "the prompt's other answers (ceiling)": "ceiling: each answer's prompt's other answers"}


def markdown(predictors: list[str]) -> str:
    """docs/research.md's table of distribution predictors, out of fold over every answer (each
    predictor's own ``distribution.json``): pinball loss (and against the prompt-blind distribution),
    interval coverage overall, of ended and capped answers and within the fifths of the predicted
    median, Kendall tau of the predicted median and mean against the prompts' mean lengths."""
    from rtlm_cli.formats.predictor import read_distribution
    from rtlm_cli.render import _fmt

    rows = []
    for name in predictors:
        evaluated = read_distribution(predictor_path(name))
        if not evaluated:
            raise SystemExit(f"error: {name} has no distribution.json (train it on a sampled profile)")
        oof = [D.flat(r) for r in evaluated["out_of_fold"]]
        blind = next(r["pinball"] for r in oof if r["model"] == "prompt-blind")
        cap = int(read_predictor_meta(name)["cap"])
        for r in oof:
            blind_row = r["model"] == "prompt-blind"  # one distribution for all prompts: it ranks nothing
            lo, hi = r["coverage_80_fifths_min"], r["coverage_80_fifths_max"]
            rows.append([f"`{name}` (cap {cap}, {r['n']:,} answers)", LABELS.get(r["model"], r["model"]),
                         f"{r['pinball']:.2f}", "-" if r["model"] == "prompt-blind" else f"{r['pinball'] / blind - 1:+.1%}",
                         _fmt(r["coverage_50"], ".0%"), _fmt(r["coverage_80"], ".0%"),
                         f"{_fmt(r['coverage_80_ended'], '.0%')} / {_fmt(r['coverage_80_capped'], '.0%')}",
                         "-" if lo is None else f"{lo * 100:.0f}-{hi:.0%}", "-" if blind_row else _fmt(r["kendall_tau_median_vs_prompt_mean"], ".2f"),
                         "-" if blind_row else _fmt(r["kendall_tau_mean_vs_prompt_mean"], ".2f")])
    return markdown_table(["predictor", "distribution", "pinball loss (tokens)", "vs prompt-blind", "50% interval covers",
                           "80% interval covers", "80%: ended / capped answers", "80% within fifths of the predicted median",
                           "tau, predicted median vs prompt mean", "tau, predicted mean vs prompt mean"], rows, right_from=2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("predictor", nargs="?", default="reference-sampled")
    ap.add_argument("--json")
    ap.add_argument("--markdown", metavar="PREDICTORS",
                    help="only print docs/research.md's table of these distribution predictors (comma-separated), out of fold")
    args = ap.parse_args()
    if args.markdown:
        print(markdown([p for p in args.markdown.split(",") if p]), end="")
        return
    started = now()
    meta = read_predictor_meta(args.predictor)
    levels, cap = [float(lv) for lv in meta["quantiles"]], float(meta["cap"])
    if not levels or meta["method"] != "mixture":
        raise SystemExit("error: needs a mixture predictor with quantiles (rtlm train-predictor SAMPLED_PROFILE)")
    oof = pd.read_parquet(predictor_path(args.predictor) / "crossfit.parquet")
    y, ids, ended = oof["actual"].to_numpy(float), oof["prompt_id"].to_numpy(), oof["ended"].to_numpy(bool)
    baselines = dist_eval.forms(oof, levels, cap)
    forms = [baselines[0], ("parametric: P(capped) + log-normal", parametric(oof, levels, cap)), *baselines[1:]]
    rows = [D.flat(D.evaluate(name, y, Q, levels, ids, ended)) | {"calibration": D.calibration(y, Q, levels)}
            for name, Q in forms]
    for r in rows:
        print(f"{r['model']:36s} pinball {r['pinball']:6.2f}  50%: {r['coverage_50']:.0%}  80%: {r['coverage_80']:.0%}  "
              f"calibration {[round(c['observed'], 2) for c in r['calibration']]}")
    if args.json:
        out = {"predictor": args.predictor, "levels": levels, "answers": int(len(y)), "rows": rows}
        write_record(args.json, out, started)


if __name__ == "__main__":
    main()
