"""The ``rtlm`` command line: thin commands that build a config, call one job function, render.

Defaults and help texts come from the config dataclasses (``options.option``), so each is written
once. One module per stage, imported in pipeline order (the order ``rtlm --help`` lists them).
"""

# isort: off
from rtlm_cli.cli import profile, predict, serve, gateway, report  # noqa: F401 (each registers its commands)
from rtlm_cli.cli.app import app

# isort: on

__all__ = ["app", "main"]


def main() -> None:
    app()
