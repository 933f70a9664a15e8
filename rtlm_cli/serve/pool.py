"""The requests of a replay: a pool of prompts (a profile's, with true lengths, or any prompt source),
their predictions (out of fold where the predictor has them), and a workload's arrivals over them.
(``decide/request.py`` is one request as the decision core sees it; this module makes them.)"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from rtlm_cli.defaults import TEMPLATE_TOKENS, TOKENS_PER_WORD
from rtlm_cli.errors import RtlmError
from rtlm_cli.formats import predictor as predictor_format
from rtlm_cli.formats import profile as profile_format
from rtlm_cli.paths import predictor_path
from rtlm_cli.predict.model import Predictor
from rtlm_cli.prompts import uncertainty
from rtlm_cli.prompts.sources import load_prompts, prompt_id
from rtlm_cli.serve.costmodel import CostModel
from rtlm_cli.serve.decide.request import Request
from rtlm_cli.serve.workload import WorkloadConfig, arrival_times, read_trace


@dataclass
class Pool:
    """Prompts to draw requests from; ``true_tokens`` is -1 where unknown. A sampled profile's pool
    holds one entry per answer (a prompt repeats), and ``mean_tokens`` is each answer's prompt mean
    over the prompt's other answers (leave one out: what the mean oracle knows)."""

    prompt_id: list[str]
    prompt: list[str]
    prompt_tokens: np.ndarray
    true_tokens: np.ndarray
    meta: dict | None = None
    mean_tokens: np.ndarray | None = None
    sample_seed: np.ndarray | None = None  # each answer's recorded seed (a sampled profile)


def load_pool(w: WorkloadConfig, predictor: str | None, pmeta: dict | None, engine=None, samples_ok: bool = False) -> Pool:
    """The prompts of a profile (true lengths known) or of a prompt source; a source's prompt tokens
    are counted by the predictor's tokenizer, else by a serving engine's /tokenize, else estimated.
    A sampled profile (``samples_ok``: the simulator and serving engines) draws each request's answer
    from its prompt's answers, and a serving engine is sent that answer's seed."""
    if w.profile:
        if not samples_ok and profile_format.samples(profile_format.read_profile_meta(w.profile)) > 1:
            raise RtlmError(f"profile {w.profile} holds sampled answers (--samples): the hf workers batch answers "
                            "and cannot give each its recorded seed; replay it in the simulator (--simulate) or "
                            "through a serving engine (--engine vllm|openai)")
        meta, df = profile_format.load_nonempty(w.profile, samples_ok=samples_ok)
        out = df["output_tokens"].to_numpy(int)
        loo = None
        if profile_format.samples(meta) > 1:
            by = df.groupby("prompt_id")["output_tokens"]
            total, count = by.transform("sum").to_numpy(float), by.transform("count").to_numpy(float)
            loo = np.where(count > 1, (total - out) / np.maximum(count - 1, 1), out)
        seeds = df["sample_seed"].to_numpy() if loo is not None else None
        return Pool(df["prompt_id"].tolist(), df["prompt"].tolist(), df["prompt_tokens"].to_numpy(int), out, meta, loo,
                    seeds)
    items = load_prompts(w.prompts, w.text_column)
    texts = [p.text for p in items]
    tok_file = (pmeta or {}).get("files", {}).get("tokenizer")
    if tok_file:  # the predictor's own prompt-token count
        from rtlm_cli.predict import features

        ctx = features.FeatureContext(tokenizer_file=str(predictor_path(predictor) / tok_file))
        raw = features.prompt_family(texts, ctx)[1][:, 0].astype(int) + TEMPLATE_TOKENS
    elif engine is not None and getattr(engine, "client", None) is not None:
        raw = engine.prompt_tokens(texts)  # the server's own count, its chat template included
    else:  # an estimate, for the cost model only
        raw = [int(TOKENS_PER_WORD * len(t.split())) + TEMPLATE_TOKENS for t in texts]
    tokens = np.asarray(raw)
    return Pool([p.prompt_id for p in items], texts, tokens, np.full(len(texts), -1))


def check_predictor(path: str | None, pm: dict | None, pool: Pool) -> None:
    if pm is None or pool.meta is None:
        return
    fm = pool.meta
    if pm["model"]["model_hash"] != fm["model"]["model_hash"]:
        raise RtlmError(
            f"predictor {path} was trained on {pm['model']['model_id']} profiles, but the profile was made "
            f"with {fm['model']['model_id']} (another model hash): use a predictor trained on this model"
        )
    if pm.get("cap") and pm["cap"] != profile_format.cap(fm):
        raise RtlmError(
            f"predictor {path} predicts lengths capped at {pm['cap']:.0f} tokens but the profile used "
            f"--max-new-tokens {profile_format.cap(fm)}: use a predictor trained at the same cap"
        )


def predict_texts(path: str, texts: list[str]) -> tuple[dict, float]:
    """A predictor's output for the texts, and its cost per text (the batch's time / n)."""
    predictor = Predictor.load(path)
    t0 = time.perf_counter()
    out = predictor.predict(texts)
    measured = (time.perf_counter() - t0) / max(len(texts), 1)
    # Prefill features come from a cache here; charge their cost as measured uncached at training.
    uncached = sum(predictor.meta.get("feature_cost_s_per_prompt", {}).values())
    return out, max(measured, uncached)


@dataclass
class Predictions:
    """Per pool prompt: predicted tokens, p90, uncertainty score; the prediction cost per prompt, and
    how many predictions came out of fold (the predictor's own training prompts, see crossfit.py)."""

    predicted: np.ndarray
    p90: np.ndarray
    uncertainty: np.ndarray
    cost_s: float
    out_of_fold: int = 0
    capped_prob: np.ndarray | None = None  # a mixture predictor's P(capped) and length if it ends
    ended_tokens: np.ndarray | None = None
    quantiles: np.ndarray | None = None  # a distribution predictor's: prompts x levels
    levels: tuple[float, ...] = ()


def predict_pool(path: str | None, pool: Pool, cap_default: float, isolate: bool, pmeta: dict | None = None,
                 console=None) -> Predictions:
    """With ``isolate`` (real runs) the predictor runs in a separate process: a LightGBM booster in
    the serving process (its own OpenMP runtime) slows torch's CPU decoding (docs/benchmarks.md).

    A prompt the predictor was trained on gets its out-of-fold prediction (``crossfit.parquet``):
    an in-sample one would flatter every length-aware policy."""
    n = len(pool.prompt)
    unc = np.asarray([uncertainty.extract(t)["uncertainty_score"] for t in pool.prompt])
    if path is None:
        known = pool.true_tokens[pool.true_tokens > 0]
        mean = float(known.mean()) if len(known) else cap_default / 2
        return Predictions(np.full(n, mean), np.full(n, mean), unc, 0.0)
    if isolate:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool_exec:
            out, cost = pool_exec.submit(predict_texts, path, pool.prompt).result()
    else:
        out, cost = predict_texts(path, pool.prompt)
    predicted = np.asarray(out["predicted"], dtype=float)
    p90 = np.asarray(out.get("p90", out["predicted"]), dtype=float)
    mixture = {c: np.asarray(out[c], dtype=float) for c in ("capped_prob", "ended_tokens") if c in out}
    levels = tuple((pmeta or {}).get("quantiles") or ())
    quantiles = np.asarray(out["quantiles"], dtype=float) if "quantiles" in out else None
    oof = predictor_format.read_crossfit(path, pmeta or {})
    replaced = 0
    if oof is not None:
        at = oof.index.get_indexer(pool.prompt_id)
        hit = at >= 0
        for col, values in (("predicted", predicted), ("p90", p90), *mixture.items()):
            values[hit] = oof[col].to_numpy()[at[hit]]
        for j, lv in enumerate(levels if quantiles is not None else ()):
            quantiles[hit, j] = oof[predictor_format.quantile_name(lv)].to_numpy()[at[hit]]
        replaced = int(hit.sum())
    elif pool.meta is not None and console is not None:
        console.print(f"[yellow]warning:[/yellow] predictor {path} has no out-of-fold predictions (trained without "
                      "--cross-fit): any of these prompts it was trained on is predicted in sample, which flatters "
                      "length-aware policies; retrain it to replay its own profile")
    return Predictions(predicted, p90, unc, cost, replaced, mixture.get("capped_prob"), mixture.get("ended_tokens"),
                       quantiles, levels if quantiles is not None else ())


def build_requests(w: WorkloadConfig, pool: Pool, preds: Predictions, ref: CostModel, rate: float | None,
                   cap: float | None = None) -> list[Request]:
    """The workload's requests over the pool: arrivals, predictions, deadlines, true lengths (in a
    sampled profile: a uniformly drawn answer of a uniformly drawn prompt, and its prompt's mean over
    the other answers); ``cap``: the token cap the predicted quantiles are clipped to."""
    predicted, p90, unc, cost = preds.predicted, preds.p90, preds.uncertainty, preds.cost_s
    capped, ended = preds.capped_prob, preds.ended_tokens
    rng = np.random.default_rng(w.seed)  # this workload's own generator
    sampling = {}
    if pool.sample_seed is not None:  # each request is sent its recorded answer's sampling
        d = pool.meta["decoding"]
        sampling = {"temperature": float(d["temperature"]), "top_p": float(d.get("top_p", 1.0))}
    if w.arrivals == "trace":
        trace = read_trace(w.trace)
        where = {pid: i for i, pid in enumerate(pool.prompt_id)}
        if "prompt_id" in trace:
            missing = [p for p in trace["prompt_id"] if p not in where]
            if missing:
                raise RtlmError(f"trace prompt_id {missing[0]} is not in the profile: trace ids must come from --profile")
            idx = [where[p] for p in trace["prompt_id"]]
        else:
            idx = [where.get(prompt_id(t.strip()), -1) for t in trace["prompt"]]
            if min(idx) < 0:
                raise RtlmError("trace prompts must be among the --profile/--prompts prompts (matched by text)")
        times = trace["time_s"].to_numpy(float)
    else:
        n = w.num_requests
        idx = rng.permutation(len(pool.prompt))[:n] if n <= len(pool.prompt) else rng.integers(0, len(pool.prompt), n)
        times = arrival_times(w, rate, rng)
    requests = []
    for rid, (i, t) in enumerate(zip(idx, times)):
        service = ref.service_s(int(pool.prompt_tokens[i]), float(predicted[i]))
        deadline = None
        if w.slo_s is not None:
            deadline = float(t) + w.slo_s
        elif w.slo_factor is not None:
            deadline = float(t) + w.slo_factor * service
        true = int(pool.true_tokens[i])
        requests.append(Request(
            rid=rid, arrival_s=float(t), prompt_id=pool.prompt_id[i], prompt=pool.prompt[i],
            prompt_tokens=int(pool.prompt_tokens[i]), predicted_tokens=float(predicted[i]), p90_tokens=float(p90[i]),
            uncertainty=float(unc[i]), predicted_service_s=service, deadline_s=deadline,
            capped_prob=None if capped is None else float(capped[i]),
            ended_tokens=None if ended is None else float(ended[i]),
            true_tokens=true if true > 0 else None, prediction_cost_s=cost,
            true_service_s=ref.service_s(int(pool.prompt_tokens[i]), float(true)) if true > 0 else None,
            quantiles=None if preds.quantiles is None else tuple(float(x) for x in preds.quantiles[i]),
            quantile_levels=preds.levels or None, cap_tokens=cap,
            mean_tokens=None if pool.mean_tokens is None else float(pool.mean_tokens[i]),
            **(sampling and {**sampling, "sample_seed": int(pool.sample_seed[i])}),
        ))
    return requests
