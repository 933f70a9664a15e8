"""The typer app, its consoles and the top-level options; the commands live beside it, one module
per stage, each a thin layer that builds a config, calls one job function and renders."""

from __future__ import annotations

import json
import sys

import typer
from rich.console import Console

from rtlm_cli import __version__

app = typer.Typer(
    name="rtlm",
    help="Uncertainty-aware real-time LM inference: profile a model on this device, predict output "
    "lengths from the prompt's uncertainty, schedule requests, report.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
console = Console(stderr=True)
# Off a terminal (pipes, files, CI logs) rich would wrap tables at 80 columns: give them room.
out_console = Console() if sys.stdout.isatty() else Console(width=160)


def _version(value: bool):
    if value:
        out_console.print(f"rtlm {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
):
    pass


def print_json(obj) -> None:
    out_console.print_json(json.dumps(obj, default=float))
