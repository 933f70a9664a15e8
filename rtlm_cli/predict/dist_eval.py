"""A distribution predictor's evaluation against its baselines (``distribution.py`` computes the
metrics): on the held-out prompts, and over every answer out of fold; beside it a prompt-blind
distribution, the point model with conformal intervals and, with several answers per prompt, the
prompt-only ceiling (each answer's prompt's other answers)."""

from __future__ import annotations

import numpy as np

from rtlm_cli.predict import distribution
from rtlm_cli.predict.data import split_by_prompt
from rtlm_cli.predict.model import LengthModel, quantile_name


def held_out(s, main_idx, Q, levels) -> list[dict]:
    """The quantile model on the held-out prompts against a prompt-blind distribution and the point
    model (the chosen method, fitted on 3/4 of the training prompts) with conformal intervals from the
    other 1/4."""
    c = s.cfg
    cal = split_by_prompt(s.prompts_tr.tolist(), 0.25, c.seed + 1)
    names = [s.names[i] for i in main_idx]
    point = LengthModel.fit(c.method, s.Xtr[~cal][:, main_idx], s.y_tr[~cal], s.ended_tr[~cal], s.cap, names,
                            c.threads, c.seed, c.rounds, with_p90=False)
    conf = distribution.conformal(point.predict(s.Xtr[cal][:, main_idx])["predicted"], s.y_tr[cal],
                                  point.predict(s.Xte[:, main_idx])["predicted"], levels, s.cap)
    return [distribution.evaluate(name, s.y_te, q, levels, s.prompts_te, s.ended_te)
            for name, q in (("quantile model", Q), ("prompt-blind", distribution.prompt_blind(s.y_tr, levels, len(s.y_te))),
                            (f"{c.method} point model + conformal", conf), *ceiling(s.y_te, s.prompts_te, levels))]


def ceiling(y, prompt_ids, levels) -> list[tuple]:
    """With several answers per prompt: each answer's prompt's other answers (the prompt-only ceiling)."""
    if len(set(prompt_ids)) == len(prompt_ids):
        return []
    return [("the prompt's other answers (ceiling)", distribution.leave_one_out(y, prompt_ids, levels))]


def forms(oof, levels, cap) -> list[tuple[str, np.ndarray]]:
    """Each distribution's out-of-fold quantiles (an answer per row, a level per column): the quantile
    model's own; for each fold, the prompt-blind quantiles of the other folds' answers and conformal
    shifts from the other folds' out-of-fold residuals; and, with several answers per prompt, the
    ceiling."""
    y, fold, point = oof["actual"].to_numpy(float), oof["fold"].to_numpy(), oof["predicted"].to_numpy(float)
    Q = oof[[quantile_name(lv) for lv in levels]].to_numpy(float)
    blind, conf = np.empty_like(Q), np.empty_like(Q)
    for f in np.unique(fold):
        here, other = fold == f, fold != f
        blind[here] = distribution.prompt_blind(y[other], levels, int(here.sum()))
        conf[here] = distribution.conformal(point[other], y[other], point[here], levels, cap)
    return [("quantile model", Q), ("prompt-blind", blind), ("point model + conformal", conf),
            *ceiling(y, oof["prompt_id"].to_numpy(), levels)]


def out_of_fold(oof, levels, cap) -> list[dict]:
    """The held-out comparison over every prompt, out of fold (``forms``)."""
    y, ids, ended = oof["actual"].to_numpy(float), oof["prompt_id"].to_numpy(), oof["ended"].to_numpy(bool)
    return [distribution.evaluate(name, y, q, levels, ids, ended) for name, q in forms(oof, levels, cap)]
