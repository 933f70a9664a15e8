"""Benchmark for `rtlm train-predictor` / `rtlm predict` on the shipped reference profile.

Prints, in one run:
1. the evaluation table on held-out ShareGPT prompts (baselines, methods, feature-family ablations)
   for the full predictor (text + prompt + prefill) and the fast text-only one (text + prompt);
2. each family's cost per prompt;
3. the cost of the library call the scheduler makes on every arrival (features + model), per prompt,
   for the fast predictor, called one prompt at a time;
4. the 5-fold cross-validated Kendall tau of both predictors over every prompt of the profile (from
   the out-of-fold predictions training writes, crossfit.parquet), and per fold;
5. with --splits K, the full predictor's held-out Kendall tau on K other seeded splits (how much
   one 200-prompt split moves the figure).

Usage: .venv/bin/python scripts/bench/predictor.py [--profile reference] [--splits 5] [--json OUT] [--keep DIR]
       .venv/bin/python scripts/bench/predictor.py --markdown OUT   (docs/research.md's tables from a --json record)
--json writes every figure above with the command, times, machine and revision (docs/bench/predictor.json);
--keep DIR keeps both predictors (DIR/full, DIR/fast) for the serve-local benchmarks.
The prefill family runs SmolLM2 once per prompt (cached in $RTLM_HOME/prefill after the first run).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.console import Console

from rtlm_cli.predict.model import Predictor
from rtlm_cli.predict.train import TrainConfig, train
from rtlm_cli.prompts.sources import load_prompts, sample_prompts
from rtlm_cli.render import evaluation_table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import markdown_table, now, write_record  # noqa: E402


def markdown(record: dict) -> str:
    """docs/research.md's evaluation table (the full predictor's, then the fast one's chosen and
    out-of-fold rows) and the per-fold and per-split figures, from a --json record."""
    def row(r: dict, bold: bool = False) -> list:
        b = (lambda x: f"**{x}**") if bold else (lambda x: x)
        return [b(r["model"]), f"{r['mae']:.1f}", f"{r['rmse']:.1f}", f"{r['spearman']:.3f}", b(f"{r['kendall_tau']:.3f}"),
                f"{r['pairwise_accuracy']:.3f}", f"{r['bucket_accuracy']:.3f}"]

    rows = [row(r, r["kind"] in ("chosen", "cross-validated")) for r in record["full"]["evaluation"]]
    rows += [row({**r, "model": f"fast: {r['model']}"}, False) for r in record["fast"]["evaluation"]
             if r["kind"] in ("chosen", "cross-validated")]
    text = markdown_table(["model", "MAE", "RMSE", "Spearman", "Kendall tau", "pairwise acc", "bucket acc"], rows)
    for label in ("full", "fast"):
        cv = record[label]["cross_validated"]
        text += (f"\n{label}: out of fold over every prompt, Kendall tau {cv['kendall_tau']:.3f} "
                 f"(folds {', '.join(f'{t:.3f}' for t in cv['folds'])})")
    if record.get("splits_kendall_tau"):
        taus = record["splits_kendall_tau"]
        text += (f"\nfull on {len(taus)} other seeded splits: {', '.join(f'{t:.3f}' for t in taus)} "
                 f"(mean {np.mean(taus):.3f}, sd {np.std(taus, ddof=1):.3f})")
    costs = record["full"]["feature_cost_s"]
    call = record["predict_call_s"]
    text += ("\nfeature cost per prompt: " + ", ".join(f"{k} {v * 1e3:.3f} ms" for k, v in costs.items())
             + f"\nscheduler call (fast): {call['one_at_a_time'] * 1e3:.3f} ms one at a time, "
             f"{call['batched'] * 1e3:.3f} ms batched\n")
    return text


def cross_validated(pred_dir: Path, console, label: str) -> dict:
    """Kendall tau of the out-of-fold predictions over every prompt, and per fold."""
    import pandas as pd
    from scipy.stats import kendalltau

    oof = pd.read_parquet(pred_dir / "crossfit.parquet")
    folds = [float(kendalltau(g["predicted"], g["actual"]).statistic) for _, g in oof.groupby("fold")]
    tau = float(kendalltau(oof["predicted"], oof["actual"]).statistic)
    console.print(f"{label} predictor, {len(folds)}-fold cross-validated over all {len(oof)} prompts: Kendall tau {tau:.3f} "
                  f"(folds: {', '.join(f'{t:.3f}' for t in folds)})\n")
    return {"kendall_tau": tau, "folds": folds}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="reference")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--splits", type=int, default=0,
                    help="also retrain the full predictor on this many other seeded splits: the spread of its tau")
    ap.add_argument("--json", help="write every figure here (stamped with command, times, machine, revision)")
    ap.add_argument("--keep", help="copy both predictors here (DIR/full, DIR/fast)")
    ap.add_argument("--markdown", metavar="RECORD", help="only print docs/research.md's tables from a --json record")
    args = ap.parse_args()
    if args.markdown:
        print(markdown(json.loads(Path(args.markdown).read_text())))
        return
    started = now()
    console = Console(width=150)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, families in (("full", ("text", "prompt", "prefill")), ("fast", ("text", "prompt"))):
            out = Path(tmp) / label
            res = train(TrainConfig(profiles=(args.profile,), out=str(out), families=families, threads=args.threads))
            console.print(evaluation_table(res.evaluation, f"{label} predictor ({'+'.join(families)}): "
                                           f"{res.meta['rows']['test']} held-out prompts, {res.meta['rows']['train']} training"))
            costs = ", ".join(f"{k} {v * 1e3:.3f} ms" for k, v in res.meta["feature_cost_s_per_prompt"].items())
            console.print(f"feature cost per prompt: {costs}\n")
            results[label] = {"evaluation": res.evaluation, "feature_cost_s": res.meta["feature_cost_s_per_prompt"],
                              "cross_validated": cross_validated(out, console, label)}
        if args.splits:
            taus = []
            for seed in range(1, args.splits + 1):
                res = train(TrainConfig(profiles=(args.profile,), out=str(Path(tmp) / f"split{seed}"), seed=seed,
                                        families=("text", "prompt", "prefill"), threads=args.threads, ablation=False,
                                        cross_fit=0))
                taus.append(next(r for r in res.evaluation if r["kind"] == "chosen")["kendall_tau"])
            console.print(f"full predictor on {args.splits} other seeded splits: Kendall tau "
                          + ", ".join(f"{t:.3f}" for t in taus) + f" (mean {np.mean(taus):.3f}, sd {np.std(taus, ddof=1):.3f})")
            results["splits_kendall_tau"] = taus
        if args.keep:
            for label in ("full", "fast"):
                shutil.copytree(Path(tmp) / label, Path(args.keep) / label, dirs_exist_ok=True)
        fast = Predictor.load(Path(tmp) / "fast")
        texts = [p.text for p in sample_prompts(load_prompts("sharegpt"), 1000, seed=11)]
        fast.predict(texts[:5])
        t0 = time.perf_counter()
        for t in texts:
            fast.predict([t])
        one = (time.perf_counter() - t0) / len(texts)
        t0 = time.perf_counter()
        fast.predict(texts)
        batch = (time.perf_counter() - t0) / len(texts)
    console.print(f"scheduler call (fast predictor, features + model): {one * 1e3:.3f} ms per prompt one at a time, "
                  f"{batch * 1e3:.3f} ms per prompt in a batch of {len(texts)}")
    chosen = next(r for r in results["full"]["evaluation"] if r["kind"] == "chosen")
    console.print(f"full predictor Kendall tau on held-out prompts: {chosen['kendall_tau']:.3f} on the default split, "
                  f"{results['full']['cross_validated']['kendall_tau']:.3f} cross-validated over every prompt (target >= 0.5)")
    results["predict_call_s"] = {"one_at_a_time": one, "batched": batch}
    write_record(args.json, results, started)
    print(json.dumps(results, default=float))


if __name__ == "__main__":
    main()
