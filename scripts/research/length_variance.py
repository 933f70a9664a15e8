"""How much of an answer's length under sampling is predictable from its prompt at all?

Reads a sampled profile (`rtlm profile --samples S --temperature T`, S >= 2 answers per prompt)
and splits the variance of output length (tokens, and log tokens: lengths are heavy-tailed) into
the part between prompts (what a perfect prompt-only predictor could explain) and the part within a
prompt (what no prompt-only predictor can take), by one-way ANOVA with equal samples per prompt:

  within   = mean over prompts of the unbiased within-prompt variance
  between  = variance of the prompt means - within / S   (the means' own sampling noise removed)
  ceiling  = between / (between + within): the R^2 no prompt-only predictor can beat

with a 95% bootstrap interval over prompts. Beside them, on every sample: Kendall tau-b of the
"mean oracle" (each sample's prompt mean over its *other* samples, leave one out: the best any
prompt-only ranking can do here) against the realised length, and of a shipped point predictor
(`--predictor`, trained on greedy answers) against the realised length and against the prompt
means (on the prompts it was not trained on: `--trained-on`); the share of samples that hit the cap.

With ``--caps 256,512,...`` (a pilot profile made at a larger cap) the same split is computed with
every answer cut at each smaller cap (an answer's first c tokens are what a cap of c would have
produced from the same seed), with the share of answers that reach it: how the cap hides the tail.
With ``--against PROFILE`` (a sampled profile of the same prompts and seeds at a smaller cap), the
share of this profile's answers, cut at that cap, that are the other profile's answer token for
token in length: whether a recorded seed reproduces an answer across runs, servers and batches.

Usage: .venv/bin/python scripts/research/length_variance.py PROFILE [--predictor reference] [--caps C,...]
       [--against PROFILE] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from scipy.stats import kendalltau

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from benchlib import now, write_record  # noqa: E402

from rtlm_cli.formats.profile import cap, load_nonempty, samples  # noqa: E402


def anova(groups: np.ndarray) -> dict:
    """``groups``: prompts x samples. Within and between components and the ceiling share."""
    s = groups.shape[1]
    within = float(groups.var(axis=1, ddof=1).mean())
    between = max(float(groups.mean(axis=1).var(ddof=1)) - within / s, 0.0)
    total = between + within
    return {"within": within, "between": between, "ceiling_r2": between / total if total > 0 else float("nan")}


def bootstrap(groups: np.ndarray, n: int = 1000, seed: int = 0) -> list[float]:
    rng = np.random.default_rng(seed)
    shares = [anova(groups[rng.integers(0, len(groups), len(groups))])["ceiling_r2"] for _ in range(n)]
    return [float(np.percentile(shares, 2.5)), float(np.percentile(shares, 97.5))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("profile")
    ap.add_argument("--predictor", default="reference")
    ap.add_argument("--trained-on", default="reference",
                    help="the profile the predictor was trained on: its figures are taken on the other prompts only")
    ap.add_argument("--caps", default="", help="comma-separated caps below the profile's own, for a pilot")
    ap.add_argument("--against", help="a sampled profile of the same prompts and seeds at a smaller cap")
    ap.add_argument("--key", default="", help="store the result under this key of the --json file (default: the top level)")
    ap.add_argument("--json")
    args = ap.parse_args()
    started = now()
    meta, df = load_nonempty(args.profile, samples_ok=True)
    s = samples(meta)
    if s < 2:
        raise SystemExit(f"error: {args.profile} has one answer per prompt: make it with --samples >= 2")
    full = df.groupby("prompt_id")["sample"].transform("count") == s  # prompts with every sample (a resumed run may lack some)
    df = df[full].sort_values(["prompt_id", "sample"]).reset_index(drop=True)
    lengths = df["output_tokens"].to_numpy(float).reshape(-1, s)
    out = {"profile": args.profile, "samples": s, "prompts": len(lengths), "answers": int(lengths.size),
           "decoding": meta["decoding"], "cap": cap(meta), "capped_share": float((~df["ended"]).mean()),
           "profile_made": {k: meta.get(k) for k in ("created_at", "updated_at", "git_revision", "prompts")}
           | {"engine": (meta.get("engine") or {}).get("name"), "server_version": ((meta.get("engine") or {}).get("server") or {}).get("version")}}
    for name, g in (("tokens", lengths), ("log_tokens", np.log(lengths))):
        out[name] = {**anova(g), "ceiling_r2_95": bootstrap(g)}
    loo = (lengths.sum(axis=1, keepdims=True) - lengths) / (s - 1)  # each sample's prompt mean over the others
    out["mean_oracle_tau"] = float(kendalltau(loo.ravel(), lengths.ravel())[0])
    caps = sorted({int(c) for c in args.caps.split(",") if c.strip()} | ({cap(meta)} if args.caps else set()))
    if caps:
        out["lengths"] = lengths.astype(int).tolist()  # prompts x samples: the figures below recompute from these
        out["by_cap"] = []
        for c in caps:
            cut = np.minimum(lengths, c)
            out["by_cap"].append({"cap": c, "capped_share": float((lengths >= c).mean()),
                                  "mean_tokens": float(cut.mean()), "tokens": anova(cut)["ceiling_r2"],
                                  "log_tokens": anova(np.log(cut))["ceiling_r2"],
                                  "within_share": 1 - anova(cut)["ceiling_r2"]})
    if args.against:
        other_meta, other = load_nonempty(args.against, samples_ok=True)
        c, key = cap(other_meta), ["sample_id", "sample_seed"]
        both = df[[*key, "output_tokens"]].merge(other[[*key, "output_tokens"]], on=key, suffixes=("", "_other"))
        gap = np.minimum(both["output_tokens"], c) - both["output_tokens_other"]
        out["against"] = {"profile": args.against, "cap": c, "answers_matched": int(len(both)),
                          "answers_other": int(len(other)), "reproduced_share": float((gap == 0).mean()),
                          "mean_abs_gap_tokens": float(gap.abs().mean())}
    if args.predictor != "none":
        from rtlm_cli.predict.model import Predictor

        _, seen = load_nonempty(args.trained_on)
        unseen = ~df["prompt_id"].isin(set(seen["prompt_id"])).to_numpy().reshape(-1, s)[:, 0]
        predicted = np.asarray(Predictor.load(args.predictor).predict(df["prompt"].tolist())["predicted"]).reshape(-1, s)
        held = lengths[unseen]
        out["predictor"] = {"name": args.predictor, "trained_on": args.trained_on, "prompts_unseen": int(unseen.sum()),
                            "tau_vs_samples": float(kendalltau(predicted[unseen].ravel(), held.ravel())[0]),
                            "tau_vs_prompt_means": float(kendalltau(predicted[unseen][:, 0], held.mean(axis=1))[0]),
                            "mean_oracle_tau_same_prompts": float(kendalltau(loo[unseen].ravel(), held.ravel())[0])}
    print(json.dumps(out, indent=1))
    if args.json:
        path = Path(args.json)
        record = json.loads(path.read_text()) if path.exists() else {}
        if args.key:
            record[args.key] = out
        else:
            record.update(out)
        write_record(args.json, record, started)


if __name__ == "__main__":
    main()
