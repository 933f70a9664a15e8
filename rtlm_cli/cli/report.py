"""``rtlm report``."""

from __future__ import annotations

from typing import Optional

import typer

from rtlm_cli.cli.app import app, console, out_console, print_json
from rtlm_cli.cli.options import option, user_errors
from rtlm_cli.report.job import ReportConfig


@app.command()
@user_errors
def report(
    paths: list[str] = typer.Argument(..., help=ReportConfig.__dataclass_fields__["paths"].metadata["help"]),
    as_json: bool = typer.Option(False, "--json", help="Print everything as JSON on stdout."),
    csv: Optional[str] = option(ReportConfig, "csv", "--csv"),
    plots: Optional[str] = option(ReportConfig, "plots", "--plots"),
    html: Optional[str] = option(ReportConfig, "html", "--html"),
):
    """Compare runs, profiles and predictors: tables, JSON, CSV, plots, HTML.

    Runs: response time, TTFT, TPOT and queueing percentiles, throughput, deadline misses and
    goodput. Profiles: length against uncertainty. Predictors: accuracy.

    Example: [bold]rtlm report runs/sweep --plots figs --html report.html[/bold]
    """
    from rtlm_cli.render import report_tables
    from rtlm_cli.report.job import report as run_report

    result = run_report(ReportConfig(paths=tuple(paths), csv=csv, plots=plots, html=html))
    if as_json:
        print_json(result.data)
    else:
        for table in report_tables(result.data):
            out_console.print(table)
    for what in result.written:
        console.print(f"wrote {what}")
