"""A replay through serving engines (``--engine vllm|openai``): open them (a managed vLLM server is
started for the sweep and stopped after it), check that a server honours priorities when direct
dispatch sends them, then drive the streams (``streams.py``) with the predictor running at each
arrival in this process."""

from __future__ import annotations

import contextlib
import dataclasses
import time

from rtlm_cli.engines import open_engine
from rtlm_cli.errors import RtlmError
from rtlm_cli.formats import profile as profile_format
from rtlm_cli.serve.live.dashboard import Dashboard
from rtlm_cli.serve.live.preflight import check_priorities
from rtlm_cli.serve.live.streams import StreamDriver, run_direct, run_gateway


def arrival_predictor(path: str | None, local_prefill: bool, device: str = "cpu"):
    """``predict(request) -> seconds``: the predictor run on the request's prompt now, as a gateway
    would run it; the replay's ordering uses the pool's (out-of-fold) predictions of the same prompt."""
    if not path:
        return None
    from rtlm_cli.predict.model import Predictor

    predictor = Predictor.load(path, device=device)
    if "prefill" in predictor.families and not local_prefill:
        raise RtlmError(f"predictor {path} uses the prefill family, which needs the model's hidden states: "
                        "an HTTP engine does not return them; pass --local-prefill (a local copy of the model runs the "
                        "prefill, its cost counted per request) or use a predictor without it (--features text,prompt)")
    predictor.ctx.prefill_cache = False  # each request pays its own prefill: the cost is measured, not cached
    predictor.predict(["warm-up"])  # loads boosters, tokenizer (and the local model) before the clock starts

    def predict(r) -> float:
        t0 = time.perf_counter()
        predictor.predict([r.prompt])
        return time.perf_counter() - t0

    return predict


def engine_config(cfg, console=None):
    """The serving engine to open for a replay: a managed vLLM replaying a sampled profile (every
    request seeded) gets whole prefills on a CPU (``engines.vllm.seeded_sampling_safe``)."""
    e, w = cfg.backends.engine, cfg.workload
    if e.name != "vllm" or not w.profile or profile_format.samples(profile_format.read_profile_meta(w.profile)) < 2:
        return e
    from rtlm_cli.engines.vllm import seeded_sampling_safe

    settings, note = seeded_sampling_safe(e.vllm)
    if note and console is not None:
        console.print(f"note: {note}")
    return dataclasses.replace(e, vllm=settings)


@contextlib.contextmanager
def engine_for(cfg, console=None, engine=None):
    """``engine`` when one is given (a sweep shares one), else one opened for this replay."""
    if engine is not None:
        yield engine
        return
    with open_engine(engine_config(cfg, console), cfg.backends.model, console=console) as opened:
        yield opened


def replay_on_servers(mode, cfg, requests, core, max_new_tokens: int, console=None, dashboard: bool = True,
                      engine=None, sink=None):
    """(records, model info, interrupted, what the engine was) of a replay through serving engines:
    direct dispatch (priorities passed through) or rtlm's gateway in front of them."""
    predict = arrival_predictor(cfg.policy.predictor, cfg.policy.local_prefill)
    with engine_for(cfg, console, engine) as eng:  # given by the job; opened here when called alone
        urls = {b.bid: eng.client.settings.urls[i] for i, b in enumerate(core.backends)}
        if core.policy.reorders and mode.dispatch == "direct":
            eng.run(check_priorities(eng.client, urls[0], core.sign, probe=eng.name != "vllm"))
        board = Dashboard(cfg.policy.name, list(urls.values()), len(requests), console, live=dashboard)
        with board:
            driver = StreamDriver(requests, core, eng.client, urls, max_new_tokens, predict, board, sink)
            if mode.dispatch == "gateway":
                run = run_gateway(driver, cfg.queue().slot_queue(core), cfg.gateway.retry_failed)
            else:
                run = run_direct(driver, core.backends[0])
            records, interrupted = eng.run(run)
        about = {"name": eng.name, "dispatch": mode.dispatch, "priority_order": cfg.backends.priority_order,
                 **eng.server}
        return records, {**eng.info.__dict__}, interrupted, about


@contextlib.contextmanager
def shared_engine(base, console=None):
    """One open serving engine for every replay of a sweep (None for the hf engine and simulations)."""
    b = base.backends
    if not b.engine.is_server or b.simulate:
        yield None
        return
    with open_engine(engine_config(base, console), b.model, console=console) as engine:
        yield engine
