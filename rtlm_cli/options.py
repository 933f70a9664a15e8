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
