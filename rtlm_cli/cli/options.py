"""Typer plumbing shared by the commands: options whose default and help are a config field's own,
comma-separated number lists, and one-line errors."""

from __future__ import annotations

import dataclasses
import functools
from typing import Optional

import typer
from rich.console import Console

from rtlm_cli.errors import RtlmError

_console = Console(stderr=True)


def option(config, name: str, *flags: str, default=dataclasses.MISSING, help: str | None = None):
    """A typer option whose default and help are the config field's own."""
    f = {f.name: f for f in dataclasses.fields(config)}[name]
    if default is dataclasses.MISSING:
        default = f.default if f.default is not dataclasses.MISSING else ...
    return typer.Option(default, *flags, help=help or f.metadata.get("help"))


def user_errors(fn):
    """Every RtlmError becomes one red line on stderr and its exit code (2; 130 on Ctrl-C), no traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except RtlmError as e:
            _console.print(f"[red]error:[/red] {e}", highlight=False, soft_wrap=True)
            raise typer.Exit(e.exit_code) from None
        except KeyboardInterrupt:
            _console.print("[red]interrupted[/red]")
            raise typer.Exit(130) from None

    return wrapper


def numbers(text: Optional[str], option_name: str, kind=float, example: str = "0.5,0.7,0.9"):
    if text is None:
        return None
    try:
        values = [kind(v) for v in text.split(",") if v.strip()]
    except ValueError:
        what = "whole numbers" if kind is int else "numbers"
        raise RtlmError(f"{option_name} takes comma-separated {what}, e.g. {example}; got {text!r}") from None
    if not values:
        raise RtlmError(f"{option_name} is empty: give comma-separated numbers, e.g. {example}")
    return values


def engine_options(fn):
    """Adds the engine options (``--engine``, the server client's and vLLM's settings, all from
    their config dataclasses) to a command, which receives them as one ``engine: EngineConfig``."""
    import inspect

    from rtlm_cli.engines import EngineConfig
    from rtlm_cli.engines.openai import ClientSettings as C
    from rtlm_cli.engines.vllm import VLLMSettings as V

    spec = [  # (parameter, type, option, where it goes)
        ("engine_name", str, option(EngineConfig, "name", "--engine"), None),
        ("url", list[str], option(C, "urls", "--url", default=[]), "urls"),
        ("served_model", Optional[str], option(C, "served_model", "--served-model"), "served_model"),
        ("api_key", Optional[str], option(C, "api_key", "--api-key"), "api_key"),
        ("header", list[str], option(C, "headers", "--header", default=[]), "headers"),
        ("ca_bundle", Optional[str], option(C, "ca_bundle", "--ca-bundle"), "ca_bundle"),
        ("connect_timeout", float, option(C, "connect_timeout_s", "--connect-timeout"), "connect_timeout_s"),
        ("request_timeout", float, option(C, "request_timeout_s", "--request-timeout"), "request_timeout_s"),
        ("retries", int, option(C, "retries", "--retries"), "retries"),
        ("max_num_seqs", int, option(V, "max_num_seqs", "--max-num-seqs"), "max_num_seqs"),
        ("max_model_len", int, option(V, "max_model_len", "--max-model-len"), "max_model_len"),
        ("kv_cache_gib", float, option(V, "kv_cache_gib", "--kv-cache-gib"), "kv_cache_gib"),
        ("prefix_caching", bool, typer.Option(V.prefix_caching, "--prefix-caching/--no-prefix-caching",
                                              help=V.__dataclass_fields__["prefix_caching"].metadata["help"]),
         "prefix_caching"),
        ("vllm_arg", list[str], option(V, "vllm_args", "--vllm-arg", default=[]), "vllm_args"),
    ]
    client_fields, vllm_fields = set(C.__dataclass_fields__), set(V.__dataclass_fields__)

    @functools.wraps(fn)
    def wrapper(**kwargs):
        given = {name: kwargs.pop(name) for name, *_ in spec}
        client = {f: tuple(v) if isinstance(v, list) else v for (name, _, _, f), v in
                  zip(spec, given.values()) if f in client_fields}
        vllm = {f: tuple(v) if isinstance(v, list) else v for (name, _, _, f), v in
                zip(spec, given.values()) if f in vllm_fields}
        return fn(**kwargs, engine=EngineConfig(name=given["engine_name"], client=C(**client), vllm=V(**vllm)))

    sig = inspect.signature(fn)
    params = [p for p in sig.parameters.values() if p.name != "engine"]
    params += [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=opt, annotation=kind)
               for name, kind, opt, _ in spec]
    wrapper.__signature__ = sig.replace(parameters=params)
    return wrapper
