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
    baseline: str = option(ReportConfig, "baseline", "--baseline"),
):
    """Compare runs, profiles and predictors: tables, JSON, CSV, plots, HTML.

    First the headline: runs grouped by what makes them comparable (profile and cap, mode, engine
    and batching, load, requests, seed), every policy set against --baseline (fcfs): ratios of
    mean, median and p99 response time and TTFT, goodput, the share of the oracle's gain. Then
    runs in detail (percentiles, throughput, deadline misses, goodput), profiles (length against
    uncertainty) and predictors (accuracy).

    Example: [bold]rtlm report runs/sweep --plots figs --html report.html[/bold]
    """
    from rtlm_cli.render import report_tables
    from rtlm_cli.report.job import report as run_report

    result = run_report(ReportConfig(paths=tuple(paths), csv=csv, plots=plots, html=html, baseline=baseline))
    if as_json:
        print_json(result.data)
    else:
        for table in report_tables(result.data):
            out_console.print(table)
    for row in result.data["runs"]:
        if not row["complete"]:
            console.print(f"[yellow]warning:[/yellow] run {row['path']} is incomplete (interrupted, killed, or a "
                          "gateway still serving): its numbers cover the requests that ended before it stopped")
    for what in result.written:
        console.print(f"wrote {what}")
