"""The ``rtlm`` command line: thin commands that build a config, call one job function, render.

Defaults and help texts come from the config dataclasses (``options.option``), so each is written once.
"""

from __future__ import annotations

import json
import sys
from typing import Optional

import typer
from rich.console import Console

from rtlm_cli import __version__
from rtlm_cli.engines.base import GenerationSettings
from rtlm_cli.options import numbers, option, user_errors
from rtlm_cli.predict.job import PredictConfig
from rtlm_cli.predict.train import TrainConfig
from rtlm_cli.profile.config import ProfileConfig
from rtlm_cli.report.job import ReportConfig
from rtlm_cli.serve.config import ReplayConfig
from rtlm_cli.serve.scheduling.policies import policy_help
from rtlm_cli.serve.workload import WorkloadConfig

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


def _print_json(obj) -> None:
    out_console.print_json(json.dumps(obj, default=float))


P, G, T, W, R = ProfileConfig, GenerationSettings, TrainConfig, WorkloadConfig, ReplayConfig


@app.command()
@user_errors
def profile(
    out: str = option(P, "out", "--out", "-o"),
    model: str = option(P, "model", "--model", "-m"),
    prompts: str = option(P, "prompts", "--prompts", "-p"),
    text_column: Optional[str] = option(P, "text_column", "--text-column"),
    num_prompts: int = option(P, "num_prompts", "--num-prompts", "-n"),
    seed: int = option(P, "seed", "--seed"),
    device: str = option(P, "device", "--device", "-d"),
    dtype: str = option(P, "dtype", "--dtype"),
    batch_size: int = option(P, "batch_size", "--batch-size", "-b"),
    max_new_tokens: int = option(G, "max_new_tokens", "--max-new-tokens"),
    max_prompt_tokens: int = option(P, "max_prompt_tokens", "--max-prompt-tokens"),
    temperature: float = option(G, "temperature", "--temperature"),
    top_p: float = option(G, "top_p", "--top-p"),
    repetition_penalty: float = option(G, "repetition_penalty", "--repetition-penalty"),
    calibrate: bool = option(P, "calibrate", "--calibrate"),
    calibration_batches: Optional[str] = option(P, "calibration_batches", "--calibration-batches"),
    calibration_contexts: str = option(P, "calibration_contexts", "--calibration-contexts",
                                       default=",".join(map(str, P.calibration_contexts))),
    as_json: bool = typer.Option(False, "--json", help="Print the profile's summary as JSON on stdout."),
):
    """Measure a model on this device over real prompts: a latency-versus-uncertainty dataset.

    One row per request with its uncertainty features, token counts and timings (TTFT, TPOT,
    end-to-end) and device telemetry; --calibrate adds the device's timing table.

    Example: [bold]rtlm profile -n 8 --max-new-tokens 64 --out profiles/demo[/bold]
    """
    from rtlm_cli.profile.job import profile as run_profile
    from rtlm_cli.render import profile_table

    batches = numbers(calibration_batches, "--calibration-batches", int, "1,2,4,8")
    cfg = ProfileConfig(
        out=out, model=model, prompts=prompts, text_column=text_column, num_prompts=num_prompts, seed=seed,
        device=device, dtype=dtype, batch_size=batch_size, max_prompt_tokens=max_prompt_tokens,
        generation=GenerationSettings(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                                      repetition_penalty=repetition_penalty, seed=seed),
        calibrate=calibrate, calibration_batches=tuple(batches) if batches else None,
        calibration_contexts=tuple(numbers(calibration_contexts, "--calibration-contexts", int, "128,512")),
    )
    result = run_profile(cfg, console=console)
    if as_json:
        _print_json({"out": str(result.out), "new_requests": result.new_requests, **result.meta["summary"]})
    else:
        out_console.print(profile_table(result))


@app.command("train-predictor")
@user_errors
def train_predictor(
    profiles: list[str] = typer.Argument(..., help=T.__dataclass_fields__["profiles"].metadata["help"]),
    out: str = option(T, "out", "--out", "-o"),
    features: str = option(T, "families", "--features", default=",".join(T.families)),
    target: str = option(T, "target", "--target"),
    method: str = option(T, "method", "--method"),
    eval_profiles: list[str] = option(T, "eval_profiles", "--eval", default=[]),
    test_size: float = option(T, "test_size", "--test-size"),
    seed: int = option(T, "seed", "--seed"),
    threads: int = option(T, "threads", "--threads"),
    rounds: int = option(T, "rounds", "--rounds"),
    cross_fit: int = option(T, "cross_fit", "--cross-fit"),
    ablation: bool = typer.Option(T.ablation, "--ablation/--no-ablation", help=T.__dataclass_fields__["ablation"].metadata["help"]),
    device: str = option(T, "device", "--device"),
    overwrite: bool = option(T, "overwrite", "--overwrite"),
    as_json: bool = typer.Option(False, "--json", help="Print the evaluation as JSON on stdout."),
):
    """Train a LightGBM predictor of output length (and latency) from profiles.

    It is evaluated on held-out prompts against baselines (constant mean, the uncertainty score,
    prompt length), with a feature-family ablation, and cross-validated over every prompt: the
    out-of-fold predictions (crossfit.parquet) are what serve-local uses for these prompts.

    Example: [bold]rtlm train-predictor reference --out predictors/smollm2[/bold]
    """
    from rtlm_cli.predict.features import parse_families
    from rtlm_cli.predict.train import train
    from rtlm_cli.render import training_tables

    cfg = TrainConfig(profiles=tuple(profiles), out=out, families=parse_families(features), target=target,
                      method=method, test_size=test_size, seed=seed, eval_profiles=tuple(eval_profiles),
                      ablation=ablation, threads=threads, rounds=rounds, cross_fit=cross_fit, device=device,
                      overwrite=overwrite)
    with console.status("training ...") as status:
        result = train(cfg, console=console, stage=lambda text: status.update(f"training ... {text}"))
    if as_json:
        _print_json({"out": str(result.out), "evaluation": result.evaluation, "importance": result.importance[:15]})
        return
    for part in training_tables(result):
        out_console.print(part)


@app.command()
@user_errors
def predict(
    predictor: str = option(PredictConfig, "predictor", "--predictor"),
    prompts: str = option(PredictConfig, "prompts", "--prompts", "-p"),
    out: str = option(PredictConfig, "out", "--out", "-o"),
    text_column: Optional[str] = option(PredictConfig, "text_column", "--text-column"),
    id_column: Optional[str] = option(PredictConfig, "id_column", "--id-column"),
    num_prompts: Optional[int] = option(PredictConfig, "num_prompts", "--num-prompts", "-n"),
    seed: int = option(PredictConfig, "seed", "--seed"),
    device: str = option(PredictConfig, "device", "--device"),
    overwrite: bool = option(PredictConfig, "overwrite", "--overwrite"),
):
    """Score prompts with a predictor: predicted tokens, P90, P(capped), latency.

    One row per input row, in input order, with the input's id column; the features used are
    written too (computed by the same function as in training).

    Example: [bold]rtlm predict --predictor predictors/smollm2 --prompts my.jsonl --out preds.parquet[/bold]
    """
    from rtlm_cli.predict.job import predict_file

    result = predict_file(PredictConfig(predictor=predictor, prompts=prompts, out=out, text_column=text_column,
                                        id_column=id_column, num_prompts=num_prompts, seed=seed, device=device,
                                        overwrite=overwrite))
    skipped = result["rows"] - result["scored"]
    out_console.print(f"wrote {result['rows']} predictions to {result['out']} "
                      f"({result['us_per_prompt']:.0f} us per prompt, features + model)"
                      + (f"; {skipped} row(s) without a prompt text have empty predictions" if skipped else ""))


@app.command("serve-local")
@user_errors
def serve_local(
    out: str = option(R, "out", "--out", "-o"),
    profile: Optional[str] = option(R, "profile", "--profile"),
    prompts: Optional[str] = option(R, "prompts", "--prompts", "-p"),
    text_column: Optional[str] = option(R, "text_column", "--text-column"),
    predictor: Optional[str] = option(R, "predictor", "--predictor"),
    policy: str = option(R, "policy", "--policy", help=f"{policy_help()}. Comma-separated to sweep."),
    simulate: bool = option(R, "simulate", "--simulate"),
    arrivals: str = option(W, "arrivals", "--arrivals"),
    rate: Optional[str] = option(W, "rate", "--rate", "--rates"),
    load: Optional[str] = option(W, "load", "--load", "--loads"),
    cv: float = option(W, "cv", "--cv"),
    num_requests: int = option(W, "num_requests", "--num-requests", "-n"),
    seed: int = option(W, "seed", "--seed"),
    trace: Optional[str] = option(W, "trace", "--trace"),
    slo: Optional[float] = option(W, "slo_s", "--slo"),
    slo_factor: Optional[float] = option(W, "slo_factor", "--slo-factor"),
    max_batch: int = option(R, "max_batch", "--max-batch"),
    offload: bool = option(R, "offload", "--offload"),
    worker: list[str] = option(R, "workers", "--worker", default=[]),
    timing: Optional[str] = option(R, "timing", "--timing"),
    model: str = option(R, "model", "--model", "-m"),
    max_new_tokens: Optional[int] = option(R, "max_new_tokens", "--max-new-tokens"),
    size_weight: float = option(R, "size_weight", "--size-weight"),
    uncertainty_weight: float = option(R, "uncertainty_weight", "--uncertainty-weight"),
    overwrite: bool = option(R, "overwrite", "--overwrite"),
    no_dashboard: bool = typer.Option(False, "--no-dashboard", help="Plain progress lines instead of the live dashboard."),
    as_json: bool = typer.Option(False, "--json", help="Print the run summary (or summaries) as JSON on stdout."),
):
    """Replay a workload under a scheduling policy, for real or simulated.

    Real runs generate on the local model with a live dashboard; --simulate runs the same
    scheduler in a discrete-event simulator on the timing table.

    Example: [bold]rtlm serve-local --simulate --profile reference --predictor predictors/smollm2 --policy fcfs,rtlm --loads 0.5,0.9 -n 10000 --out runs/sweep[/bold]
    """
    from rtlm_cli.render import run_table
    from rtlm_cli.serve.config import sweep
    from rtlm_cli.serve.job import replay

    base = ReplayConfig(
        out=out, profile=profile, prompts=prompts, text_column=text_column, predictor=predictor, simulate=simulate,
        model=model, workers=tuple(worker), timing=timing, max_batch=max_batch, offload=offload,
        max_new_tokens=max_new_tokens, size_weight=size_weight, uncertainty_weight=uncertainty_weight,
        overwrite=overwrite,
        workload=WorkloadConfig(arrivals=arrivals, cv=cv, num_requests=num_requests, seed=seed, trace=trace,
                                slo_s=slo, slo_factor=slo_factor),
    )
    policies = [p.strip() for p in policy.split(",") if p.strip()]
    configs = sweep(base, policies, numbers(rate, "--rate"), numbers(load, "--load"))
    metas = [replay(c, console=console, dashboard=not no_dashboard) for c in configs]
    if as_json:
        rows = [{"out": m["out"], "policy": m["policy"], "mode": m["mode"], "engine": m["engine"],
                 "workload": m["workload"], **m["summary"]} for m in metas]
        _print_json(rows if len(metas) > 1 else rows[0])
    else:
        out_console.print(run_table(metas))
    if any(not m["complete"] for m in metas):
        console.print("[red]interrupted:[/red] the finished requests are kept in the run; the rest are marked cancelled")
        raise typer.Exit(130)


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
        _print_json(result.data)
    else:
        for table in report_tables(result.data):
            out_console.print(table)
    for what in result.written:
        console.print(f"wrote {what}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
