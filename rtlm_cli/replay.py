"""``rtlm serve-local``: build a workload's requests, drive the shared scheduler with the simulator or
the real executor, and write a run directory. Torch is imported only by the real executor.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rtlm_cli.costmodel import CostModel
from rtlm_cli.errors import RtlmError
from rtlm_cli.runs import write_run
from rtlm_cli.scheduling.policies import make_policy
from rtlm_cli.scheduling.request import Request
from rtlm_cli.scheduling.scheduler import Scheduler, Worker
from rtlm_cli.store import now_iso, provenance
from rtlm_cli.timing import load_timing_table
from rtlm_cli.workload import WorkloadConfig, arrival_times, read_trace

NEEDS_PREDICTOR = ("sjf-pred", "rtlm")
TEMPLATE_TOKENS = 30


@dataclass(frozen=True)
class ReplayConfig:
    out: str
    workload: WorkloadConfig = field(default_factory=WorkloadConfig)
    policy: str = "fcfs"
    profile: str | None = None
    prompts: str | None = None
    text_column: str | None = None
    predictor: str | None = None
    simulate: bool = False
    model: str = "smollm2"
    workers: tuple[str, ...] = ()
    timing: str | None = None
    max_batch: int = 1
    offload: bool = False
    max_new_tokens: int | None = None
    size_weight: float = 512.0
    uncertainty_weight: float = 0.5
    overwrite: bool = False

    def validate(self) -> "ReplayConfig":
        self.workload.validate()
        make_policy(self.policy)  # unknown name -> did-you-mean
        if self.policy in NEEDS_PREDICTOR and not self.predictor:
            raise RtlmError(f"policy {self.policy} needs --predictor DIR: train one with `rtlm train-predictor`")
        if self.policy == "oracle" and not self.profile:
            raise RtlmError("policy oracle needs --profile: it orders by the true output lengths recorded there")
        if self.simulate and not self.profile:
            raise RtlmError("--simulate needs --profile: the simulator replays the true output lengths recorded there")
        if not self.profile and not self.prompts:
            raise RtlmError("pass --profile (prompts with known lengths) or --prompts (any prompt source)")
        if self.max_batch < 1:
            raise RtlmError(f"--max-batch must be >= 1, got {self.max_batch}")
        out = Path(self.out)
        if out.exists() and (not out.is_dir() or any(out.iterdir())) and not self.overwrite:
            raise RtlmError(f"output {out} already exists: choose another --out or pass --overwrite")
        return self


@dataclass
class Pool:
    """Prompts to draw requests from; ``true_tokens`` is -1 where unknown."""

    prompt_id: list[str]
    prompt: list[str]
    prompt_tokens: np.ndarray
    true_tokens: np.ndarray
    meta: dict | None = None


def load_pool(cfg: ReplayConfig, pmeta: dict | None) -> Pool:
    if cfg.profile:
        from rtlm_cli.profiling import load_profile

        meta, df = load_profile(cfg.profile)
        if df.empty:
            raise RtlmError(f"profile {cfg.profile} holds no requests")
        return Pool(df["prompt_id"].tolist(), df["prompt"].tolist(), df["prompt_tokens"].to_numpy(int),
                    df["output_tokens"].to_numpy(int), meta)
    from rtlm_cli.prompts import load_prompts

    items = load_prompts(cfg.prompts, cfg.text_column)
    texts = [p.text for p in items]
    tok_file = (pmeta or {}).get("files", {}).get("tokenizer")
    if tok_file:  # the predictor's own prompt-token count
        from rtlm_cli import features

        ctx = features.FeatureContext(tokenizer_file=str(Path(cfg.predictor) / tok_file))
        raw = features.prompt_family(texts, ctx)[1][:, 0].astype(int)
    else:
        raw = [int(1.3 * len(t.split())) for t in texts]
    # + the chat template's tokens (SmolLM2's default system prompt: ~30); estimates for the cost model only
    tokens = np.asarray(raw) + TEMPLATE_TOKENS
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
    if pm.get("cap") and pm["cap"] != fm["decoding"]["max_new_tokens"]:
        raise RtlmError(
            f"predictor {path} predicts lengths capped at {pm['cap']:.0f} tokens but the profile used "
            f"--max-new-tokens {fm['decoding']['max_new_tokens']}: use a predictor trained at the same cap"
        )


def make_workers(cfg: ReplayConfig, pool: Pool) -> list[Worker]:
    """Workers from specs ``NAME[=TIMING]`` (simulation) or ``DEVICE[=TIMING]`` (real)."""
    specs = cfg.workers or (("cpu",) if not cfg.simulate else ("worker",))
    default_timing = cfg.timing or cfg.profile
    workers = []
    for i, spec in enumerate(specs):
        name, _, timing = spec.partition("=")
        source = timing or default_timing
        if not source:
            raise RtlmError(f"worker {name} has no timing table: pass --timing FILE or NAME=TIMING")
        table = load_timing_table(source, missing_ok=False)
        workers.append(Worker(i, name, CostModel.from_table(table, name)))
    return workers


def capacity_rps(workers: list[Worker], pool: Pool, predicted: np.ndarray) -> float:
    """Requests/s the workers sustain at batch 1 for this pool's mean request."""
    sizes = np.where(pool.true_tokens > 0, pool.true_tokens, predicted)
    idx = np.linspace(0, len(sizes) - 1, min(len(sizes), 500)).astype(int)
    total = 0.0
    for w in workers:
        mean_s = float(np.mean([w.cost.service_s(int(pool.prompt_tokens[i]), float(sizes[i])) for i in idx]))
        total += 1.0 / mean_s
    return total


def predict_texts(path: str, texts: list[str]) -> tuple[dict, float]:
    """A predictor's output for the texts, and its cost per text (the batch's time / n)."""
    from rtlm_cli.predictor import Predictor

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


def predict_pool(path: str | None, pool: Pool, cap_default: float, isolate: bool, pmeta: dict | None = None,
                 console=None) -> Predictions:
    """With ``isolate`` (real runs) the predictor runs in a separate process: a LightGBM booster in
    the serving process (its own OpenMP runtime) slows torch's CPU decoding 1.7x, measured.

    A prompt the predictor was trained on gets its out-of-fold prediction (``crossfit.parquet``):
    an in-sample one would flatter every length-aware policy."""
    from rtlm_cli import uncertainty

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
    oof_file = (pmeta or {}).get("files", {}).get("crossfit")
    replaced = 0
    if oof_file:
        import pandas as pd

        oof = pd.read_parquet(Path(path) / oof_file).set_index("prompt_id")
        at = oof.index.get_indexer(pool.prompt_id)
        hit = at >= 0
        for col, values in (("predicted", predicted), ("p90", p90), *mixture.items()):
            values[hit] = oof[col].to_numpy()[at[hit]]
        replaced = int(hit.sum())
    elif pool.meta is not None and console is not None:
        console.print(f"[yellow]warning:[/yellow] predictor {path} has no out-of-fold predictions (trained without "
                      "--cross-fit): any of these prompts it was trained on is predicted in sample, which flatters "
                      "length-aware policies; retrain it to replay its own profile")
    return Predictions(predicted, p90, unc, cost, replaced, mixture.get("capped_prob"), mixture.get("ended_tokens"))


def build_requests(cfg: ReplayConfig, pool: Pool, preds: Predictions, ref: CostModel, rate: float | None) -> list[Request]:
    predicted, p90, unc, cost = preds.predicted, preds.p90, preds.uncertainty, preds.cost_s
    capped, ended = preds.capped_prob, preds.ended_tokens
    w = cfg.workload
    rng = np.random.default_rng(w.seed)  # this workload's own generator
    if w.arrivals == "trace":
        trace = read_trace(w.trace)
        where = {pid: i for i, pid in enumerate(pool.prompt_id)}
        if "prompt_id" in trace:
            missing = [p for p in trace["prompt_id"] if p not in where]
            if missing:
                raise RtlmError(f"trace prompt_id {missing[0]} is not in the profile: trace ids must come from --profile")
            idx = [where[p] for p in trace["prompt_id"]]
        else:
            from rtlm_cli.prompts import prompt_id

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
        ))
    return requests


def replay(cfg: ReplayConfig, console=None, dashboard: bool = True) -> dict:
    cfg.validate()
    pmeta = None
    if cfg.predictor:
        from rtlm_cli.predictor import read_predictor_meta

        pmeta = read_predictor_meta(cfg.predictor)
    pool = load_pool(cfg, pmeta)
    check_predictor(cfg.predictor, pmeta, pool)
    cap = float(pool.meta["decoding"]["max_new_tokens"]) if pool.meta else float(cfg.max_new_tokens or 512)
    workers = make_workers(cfg, pool)
    preds = predict_pool(cfg.predictor, pool, cap, isolate=not cfg.simulate, pmeta=pmeta, console=console)
    capacity = capacity_rps(workers, pool, preds.predicted)
    w = cfg.workload
    rate = w.rate if w.rate is not None else (w.load * capacity if w.load is not None else None)
    fastest = min(workers, key=lambda x: x.cost.step(1, 256))
    requests = build_requests(cfg, pool, preds, fastest.cost, rate)
    pred_cap = float(pmeta["cap"]) if pmeta and pmeta.get("cap") else None  # what a mixture's P(capped) is of
    policy = make_policy(cfg.policy, size_weight=cfg.size_weight, uncertainty_weight=cfg.uncertainty_weight)
    scheduler = Scheduler(policy, workers, max_batch=cfg.max_batch, offload=cfg.offload, cap_tokens=pred_cap)
    started = now_iso()
    t0 = time.perf_counter()
    interrupted = False
    if cfg.simulate:
        from rtlm_cli.simulate import simulate

        records = simulate(requests, scheduler)
        model_info = pool.meta["model"] if pool.meta else {"model_id": cfg.model}
    else:
        from rtlm_cli.serve import serve

        max_new = cfg.max_new_tokens or int(cap)
        records, model_info, interrupted = serve(requests, scheduler, cfg, max_new, console, dashboard)
    wall = time.perf_counter() - t0
    meta = {
        "complete": not interrupted, "created_at": started, "engine": "simulator" if cfg.simulate else "real",
        "policy": cfg.policy, "policy_params": {"size_weight": cfg.size_weight, "uncertainty_weight": cfg.uncertainty_weight},
        "max_batch": cfg.max_batch, "offload": cfg.offload,
        "workload": {**dataclasses.asdict(w), "rate_rps": rate, "capacity_rps": capacity,
                     "offered_load": rate / capacity if rate else None},
        "profile": cfg.profile, "prompts": cfg.prompts, "predictor": cfg.predictor,
        "predictor_meta": {k: pmeta[k] for k in ("families", "method", "target", "metrics")} if pmeta else None,
        "out_of_fold_predictions": preds.out_of_fold,
        "model": model_info, "workers": [{"name": x.name, "spec": s} for x, s in zip(workers, cfg.workers or [x.name for x in workers])],
        "seed": w.seed, "wall_s": wall, **provenance(),
    }
    out = Path(cfg.out)
    if out.exists() and cfg.overwrite:
        import shutil

        shutil.rmtree(out)
    meta = write_run(out, records, meta)
    meta["out"] = str(out)
    return meta
