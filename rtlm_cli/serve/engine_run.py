"""A replay through a serving engine (``--engine vllm|openai``): open it (a managed vLLM server is
started for the sweep and stopped after it), check that it honours priorities when the policy uses
them, then dispatch (``direct.py``) with the predictor running at each arrival in this process."""

from __future__ import annotations

import contextlib
import time

from rtlm_cli.engines import open_engine
from rtlm_cli.errors import RtlmError
from rtlm_cli.serve.dashboard import Dashboard
from rtlm_cli.serve.direct import check_priorities, run_direct
from rtlm_cli.serve.gateway import Gateway
from rtlm_cli.serve.gateway_run import run_gateway


def arrival_predictor(cfg, device: str = "cpu"):
    """``predict(request) -> seconds``: the predictor run on the request's prompt now, as a gateway
    would run it; the replay's ordering uses the pool's (out-of-fold) predictions of the same prompt."""
    if not cfg.predictor:
        return None
    from rtlm_cli.predict.model import Predictor

    predictor = Predictor.load(cfg.predictor, device=device)
    if "prefill" in predictor.families and not cfg.local_prefill:
        raise RtlmError(f"predictor {cfg.predictor} uses the prefill family, which needs the model's hidden states: "
                        "an HTTP engine does not return them; pass --local-prefill (a local copy of the model runs the "
                        "prefill, its cost counted per request) or use a predictor without it (--features text,prompt)")
    predictor.ctx.prefill_cache = False  # each request pays its own prefill: the cost is measured, not cached
    predictor.predict(["warm-up"])  # loads boosters, tokenizer (and the local model) before the clock starts

    def predict(r) -> float:
        t0 = time.perf_counter()
        predictor.predict([r.prompt])
        return time.perf_counter() - t0

    return predict


@contextlib.contextmanager
def engine_for(cfg, console=None, engine=None):
    """``engine`` when one is given (a sweep shares one), else one opened for this replay."""
    if engine is not None:
        yield engine
        return
    with open_engine(cfg.engine, cfg.model, console=console) as opened:
        yield opened


def serve_engine(requests, policy, cfg, max_new_tokens: int, console=None, dashboard: bool = True, engine=None,
                 scheduler=None):
    """(records, model info, interrupted, what the engine was) of a replay through serving engines:
    ``--dispatch direct`` (priorities passed through) or ``gateway`` (``scheduler``'s queue in front)."""
    predict = arrival_predictor(cfg)
    with engine_for(cfg, console, engine) as eng:  # given by the job; opened here when called alone
        urls = list(eng.client.settings.urls)
        if policy.reorders and cfg.dispatch == "direct":
            eng.run(check_priorities(eng.client, urls[0], cfg.priority_sign, probe=eng.name != "vllm"))
        board = Dashboard(cfg.policy, urls, len(requests), console, live=dashboard)
        with board:
            if cfg.dispatch == "gateway":
                gateway = Gateway(scheduler, scheduler.workers, cfg.placement)
                by_wid = {w.wid: urls[i] for i, w in enumerate(scheduler.workers)}
                records, interrupted = eng.run(run_gateway(requests, gateway, eng.client, by_wid, policy, max_new_tokens,
                                                           cfg.priority_sign, predict, board, cfg.retry_failed))
            else:
                records, interrupted = eng.run(run_direct(requests, policy, eng.client, urls[0], max_new_tokens,
                                                          cfg.priority_sign, predict, board))
        about = {"name": eng.name, "dispatch": cfg.dispatch, "priority_order": cfg.priority_order, **eng.server}
        return records, {**eng.info.__dict__}, interrupted, about


@contextlib.contextmanager
def shared_engine(base, configs, console=None):
    """One open serving engine for every replay of a sweep (None for the hf engine and simulations)."""
    if not base.engine.is_server or base.simulate:
        yield None
        return
    with open_engine(base.engine, base.model, console=console) as engine:
        yield engine
