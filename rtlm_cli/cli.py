"""The ``rtlm`` command line: thin commands that build a config, call one library function, render."""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from rtlm_cli import __version__
from rtlm_cli.errors import RtlmError

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


def user_errors(fn):
    """Every RtlmError becomes one red line on stderr and its exit code (2; 130 on Ctrl-C), no traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except RtlmError as e:
            console.print(f"[red]error:[/red] {e}", highlight=False, soft_wrap=True)
            raise typer.Exit(e.exit_code) from None
        except KeyboardInterrupt:
            console.print("[red]interrupted[/red]")
            raise typer.Exit(130) from None

    return wrapper


def _version(value: bool):
    if value:
        out_console.print(f"rtlm {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
):
    pass


def _ints(text: Optional[str], option: str) -> Optional[tuple[int, ...]]:
    if text is None:
        return None
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise RtlmError(f"{option} takes comma-separated whole numbers, e.g. 1,2,4,8; got {text!r}") from None
    if not values:
        raise RtlmError(f"{option} is empty: give comma-separated whole numbers, e.g. 1,2,4,8")
    return values


@app.command()
@user_errors
def profile(
    out: str = typer.Option("profiles/smollm2-sharegpt", "--out", "-o", help="Profile directory to write. Rerunning the same command resumes it."),
    model: str = typer.Option("smollm2", "--model", "-m", help="'smollm2' (embedded, offline), a .gguf file, a transformers model directory, a hub name (online), or 'fake' (test double)."),
    prompts: str = typer.Option("sharegpt", "--prompts", "-p", help="'sharegpt' (bundled ShareGPT V3 first user turns), a .json/.jsonl/.csv/.parquet/.txt file, or a hub dataset name (online)."),
    text_column: Optional[str] = typer.Option(None, "--text-column", help="Column holding the prompt text in a prompt file (default: prompt, text, instruction, question, input or conversations)."),
    num_prompts: int = typer.Option(16, "--num-prompts", "-n", help="How many prompts to profile: a seeded random sample of the source."),
    seed: int = typer.Option(0, "--seed", help="Seed of the prompt sample and of sampling."),
    device: str = typer.Option("auto", "--device", "-d", help="auto, cpu, cuda or cuda:N."),
    dtype: str = typer.Option("auto", "--dtype", help="auto (float32), float32, float16 or bfloat16."),
    batch_size: int = typer.Option(1, "--batch-size", "-b", help="Requests generated together (padded batch)."),
    max_new_tokens: int = typer.Option(512, "--max-new-tokens", help="Token cap per answer; answers that reach it are recorded as capped."),
    max_prompt_tokens: int = typer.Option(1024, "--max-prompt-tokens", help="Skip prompts longer than this many tokens (after the chat template)."),
    temperature: float = typer.Option(0.0, "--temperature", help="0 = greedy decoding (default, reproducible across devices); > 0 samples."),
    top_p: float = typer.Option(1.0, "--top-p", help="Nucleus sampling mass when sampling."),
    repetition_penalty: float = typer.Option(1.0, "--repetition-penalty", help="transformers' repetition penalty (1 = off)."),
    calibrate: bool = typer.Option(False, "--calibrate", help="Also sweep batch sizes x context lengths with synthetic tokens: the device's timing table (timing.parquet)."),
    calibration_batches: Optional[str] = typer.Option(None, "--calibration-batches", help="Batch sizes to sweep, e.g. 1,2,4,8 (default: 1,2,4,8,16 on CPU; 1,8,32,128 on CUDA)."),
    calibration_contexts: str = typer.Option("128,512,1024", "--calibration-contexts", help="Context lengths to sweep."),
    as_json: bool = typer.Option(False, "--json", help="Print the profile's summary as JSON on stdout."),
):
    """Measure a model on this device over real prompts: a latency-versus-uncertainty dataset.

    One row per request with its uncertainty features, token counts and timings (TTFT, TPOT,
    end-to-end) and device telemetry; --calibrate adds the device's timing table.

    Example: [bold]rtlm profile -n 8 --max-new-tokens 64 --out profiles/demo[/bold]
    """
    from rtlm_cli.backends.base import GenerationSettings
    from rtlm_cli.config import ProfileConfig
    from rtlm_cli.profiling import profile as run_profile

    cfg = ProfileConfig(
        out=out, model=model, prompts=prompts, text_column=text_column, num_prompts=num_prompts, seed=seed,
        device=device, dtype=dtype, batch_size=batch_size, max_prompt_tokens=max_prompt_tokens,
        generation=GenerationSettings(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                                      repetition_penalty=repetition_penalty, seed=seed),
        calibrate=calibrate, calibration_batches=_ints(calibration_batches, "--calibration-batches"),
        calibration_contexts=_ints(calibration_contexts, "--calibration-contexts"),
    )
    result = run_profile(cfg, console=console)
    summary = result.meta["summary"]
    if as_json:
        out_console.print_json(json.dumps({"out": str(result.out), "new_requests": result.new_requests, **summary}))
        return
    table = Table(title=f"profile {result.out}", show_header=False)
    table.add_row("model", f"{result.meta['model']['model_id']} ({result.meta['model']['dtype']})")
    table.add_row("device", f"{result.meta['device']['device']} ({result.meta['device']['device_name']})")
    table.add_row("requests", f"{summary.get('requests', 0)} ({result.new_requests} new)")
    if summary.get("requests"):
        table.add_row("ended before the cap", f"{summary['ended_share']:.0%}")
        table.add_row("output tokens, mean", f"{summary['output_tokens_mean']:.1f}")
        table.add_row("TTFT, median", f"{summary['ttft_s_median'] * 1000:.0f} ms")
        table.add_row("TPOT, median", f"{summary['tpot_s_median'] * 1000:.1f} ms")
        table.add_row("decode tokens/s, median", f"{summary['decode_tokens_per_s_median']:.1f}")
    if result.calibrated:
        table.add_row("timing table", str(result.out / "timing.parquet"))
    out_console.print(table)


@app.command("train-predictor")
@user_errors
def train_predictor(
    profiles: list[str] = typer.Argument(..., help="Profile directories to train on (same model, same --max-new-tokens)."),
    out: str = typer.Option(..., "--out", "-o", help="Predictor directory to write."),
    features: str = typer.Option("text,prompt", "--features", help="Feature families, comma-separated: text (uncertainty features), prompt (token count), prefill (the model's first-token entropy and hidden-state PCA; needs the model)."),
    target: str = typer.Option("output_tokens", "--target", help="output_tokens (latency then follows from the timing table) or e2e_s (direct)."),
    method: str = typer.Option("mixture", "--method", help="mixture (P(capped) x cap + length of ended answers), log (log1p regression) or raw (L2 regression)."),
    eval_profiles: list[str] = typer.Option([], "--eval", help="Another profile (e.g. another prompt source) to evaluate on; repeatable."),
    test_size: float = typer.Option(0.2, "--test-size", help="Held-out share of prompts."),
    seed: int = typer.Option(0, "--seed", help="Seed of the split and of LightGBM."),
    threads: int = typer.Option(2, "--threads", help="LightGBM threads (never train while a model generates on the same cores)."),
    rounds: int = typer.Option(1000, "--rounds", help="Boosting rounds of each LightGBM model (learning rate 0.03, 4-leaf trees)."),
    cross_fit: int = typer.Option(5, "--cross-fit", help="Also predict every training prompt out of fold (K folds, crossfit.parquet), so that serve-local never replays a prompt with an in-sample prediction; 0 skips it."),
    ablation: bool = typer.Option(True, "--ablation/--no-ablation", help="Also evaluate each feature family alone and each one left out."),
    device: str = typer.Option("cpu", "--device", help="Device for the prefill family."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing predictor directory (only once training succeeded)."),
    as_json: bool = typer.Option(False, "--json", help="Print the evaluation as JSON on stdout."),
):
    """Train a LightGBM predictor of output length (and latency) from profiles.

    It is evaluated on held-out prompts against baselines (constant mean, the uncertainty score,
    prompt length), with a feature-family ablation, and cross-validated over every prompt: the
    out-of-fold predictions (crossfit.parquet) are what serve-local uses for these prompts.

    Example: [bold]rtlm train-predictor profiles/reference-smollm2-sharegpt --out predictors/smollm2[/bold]
    """
    from rtlm_cli.features import parse_families
    from rtlm_cli.predictor import TrainConfig, train

    cfg = TrainConfig(profiles=tuple(profiles), out=out, families=parse_families(features), target=target,
                      method=method, test_size=test_size, seed=seed, eval_profiles=tuple(eval_profiles),
                      ablation=ablation, threads=threads, rounds=rounds, cross_fit=cross_fit, device=device,
                      overwrite=overwrite)
    with console.status("training ...") as status:
        result = train(cfg, console=console, stage=lambda text: status.update(f"training ... {text}"))
    if as_json:
        out_console.print_json(json.dumps({"out": str(result.out), "evaluation": result.evaluation,
                                           "importance": result.importance[:15]}))
        return
    out_console.print(evaluation_table(result.evaluation, f"predictor {result.out}: held-out {result.meta['rows']['test']} prompts, target {result.meta['target']}"))
    imp = Table(title="feature importance (gain), top 12")
    for col in ("feature", "family", "gain"):
        imp.add_column(col, justify="right" if col == "gain" else "left")
    for r in result.importance[:12]:
        imp.add_row(r["feature"], r["family"], f"{r['gain']:.0f}")
    out_console.print(imp)
    costs = ", ".join(f"{k} {v * 1e3:.3f} ms" for k, v in result.meta["feature_cost_s_per_prompt"].items())
    out_console.print(f"feature cost per prompt: {costs}")


def evaluation_table(rows: list[dict], title: str) -> Table:
    table = Table(title=title)
    for col in ("model", "MAE", "RMSE", "Spearman", "Kendall tau", "pairwise acc", "bucket acc"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for r in rows:
        style = "bold" if r["kind"] in ("chosen", "cross-validated") else ("dim" if r["kind"] == "baseline" else None)
        table.add_row(r["model"], f"{r['mae']:.1f}", f"{r['rmse']:.1f}", f"{r['spearman']:.3f}", f"{r['kendall_tau']:.3f}",
                      f"{r['pairwise_accuracy']:.3f}", f"{r['bucket_accuracy']:.3f}", style=style)
    return table


@app.command()
@user_errors
def predict(
    predictor: str = typer.Option(..., "--predictor", help="Predictor directory (from `rtlm train-predictor`)."),
    prompts: str = typer.Option(..., "--prompts", "-p", help="Prompt source: sharegpt, a .json/.jsonl/.csv/.parquet/.txt file, or a hub dataset."),
    out: str = typer.Option(..., "--out", "-o", help="Predictions file: .parquet, .csv or .json (by extension)."),
    text_column: Optional[str] = typer.Option(None, "--text-column", help="Column holding the prompt text."),
    num_prompts: Optional[int] = typer.Option(None, "--num-prompts", "-n", help="Score a seeded sample of this many prompts (default: all)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the sample."),
    device: str = typer.Option("cpu", "--device", help="Device for the prefill family, when the predictor uses it."),
):
    """Score prompts with a predictor: predicted tokens, P90, P(capped), latency.

    The features used are written too (computed by the same function as in training).

    Example: [bold]rtlm predict --predictor predictors/smollm2 --prompts my.jsonl --out preds.parquet[/bold]
    """
    from rtlm_cli.predict import predict_file

    result = predict_file(predictor, prompts, out, text_column=text_column, num_prompts=num_prompts, seed=seed,
                          device=device)
    out_console.print(f"wrote {result['rows']} predictions to {result['out']} "
                      f"({result['us_per_prompt']:.0f} us per prompt, features + model)")


def _floats(text: Optional[str], option: str) -> list[Optional[float]]:
    if text is None:
        return [None]
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise RtlmError(f"{option} takes comma-separated numbers, e.g. 0.5,0.7,0.9; got {text!r}") from None
    if not values:
        raise RtlmError(f"{option} is empty")
    return values


@app.command("serve-local")
@user_errors
def serve_local(
    out: str = typer.Option(..., "--out", "-o", help="Run directory to write (a parent directory when sweeping several policies/rates/loads)."),
    profile: Optional[str] = typer.Option(None, "--profile", help="Profile to draw prompts from: true lengths known (needed by --simulate and oracle); its timing table prices the workers."),
    prompts: Optional[str] = typer.Option(None, "--prompts", "-p", help="Any prompt source instead of a profile (real runs only)."),
    text_column: Optional[str] = typer.Option(None, "--text-column", help="Text column of a prompt file."),
    predictor: Optional[str] = typer.Option(None, "--predictor", help="Predictor directory (needed by sjf-pred and rtlm)."),
    policy: str = typer.Option("fcfs", "--policy", help="fcfs, sjf-input, sjf-pred, rtlm or oracle; comma-separated to sweep."),
    simulate: bool = typer.Option(False, "--simulate", help="Discrete-event simulation on the timing table instead of the real model."),
    arrivals: str = typer.Option("poisson", "--arrivals", help="poisson, gamma (bursty, see --cv), constant, burst (all at t=0) or trace."),
    rate: Optional[str] = typer.Option(None, "--rate", "--rates", help="Arrival rate in requests/s; comma-separated to sweep."),
    load: Optional[str] = typer.Option(None, "--load", "--loads", help="Arrival rate as a share of the workers' batch-1 capacity (printed); comma-separated to sweep."),
    cv: float = typer.Option(2.0, "--cv", help="Coefficient of variation of gamma inter-arrival times."),
    num_requests: int = typer.Option(100, "--num-requests", "-n", help="Requests in the workload."),
    seed: int = typer.Option(0, "--seed", help="Seed of arrivals and prompt draws."),
    trace: Optional[str] = typer.Option(None, "--trace", help="CSV/JSONL trace: time_s plus prompt_id (from --profile) or prompt."),
    slo: Optional[float] = typer.Option(None, "--slo", help="Deadline of each request: arrival + SLO seconds."),
    slo_factor: Optional[float] = typer.Option(None, "--slo-factor", help="Deadline: arrival + factor x its predicted service time."),
    max_batch: int = typer.Option(1, "--max-batch", help="Dynamic consolidation: batches of up to this many alike requests (1 = off). Near capacity a larger limit leaves more room to group; the timing table's largest measured batch is a good choice (16 on the reference table)."),
    offload: bool = typer.Option(False, "--offload", help="Strategic offloading: slower workers take long, uncertain requests when the fast ones are congested."),
    worker: list[str] = typer.Option([], "--worker", help="A worker, repeatable: DEVICE[=TIMING] for real runs (cpu, cuda:0), NAME[=TIMING] in simulation; TIMING is a profile or timing file (default: the profile's)."),
    timing: Optional[str] = typer.Option(None, "--timing", help="Default timing table (a profile directory or .jsonl/.parquet file)."),
    model: str = typer.Option("smollm2", "--model", "-m", help="Model for real runs (as in `rtlm profile`)."),
    max_new_tokens: Optional[int] = typer.Option(None, "--max-new-tokens", help="Token cap for real runs (default: the profile's)."),
    size_weight: float = typer.Option(512.0, "--size-weight", help="rtlm policy: weight of predicted service time against arrival order (0 = FCFS; larger = lower mean response time, longer tail at high load)."),
    uncertainty_weight: float = typer.Option(0.5, "--uncertainty-weight", help="rtlm policy: how much uncertainty inflates a request's predicted service time."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing run directory once the new run is written."),
    no_dashboard: bool = typer.Option(False, "--no-dashboard", help="Plain progress lines instead of the live dashboard."),
    as_json: bool = typer.Option(False, "--json", help="Print the run summary (or summaries) as JSON on stdout."),
):
    """Replay a workload under a scheduling policy, for real or simulated.

    Real runs generate on the local model with a live dashboard; --simulate runs the same
    scheduler in a discrete-event simulator on the timing table.

    Example: [bold]rtlm serve-local --simulate --profile profiles/reference-smollm2-sharegpt --predictor predictors/smollm2 --policy fcfs,rtlm --loads 0.5,0.9 -n 10000 --out runs/sweep[/bold]
    """
    import dataclasses
    from pathlib import Path

    from rtlm_cli.replay import ReplayConfig, replay
    from rtlm_cli.workload import WorkloadConfig

    policies = [p.strip() for p in policy.split(",") if p.strip()]
    rates, loads = _floats(rate, "--rate"), _floats(load, "--load")
    if rate is not None and load is not None:
        raise RtlmError("give --rate or --load, not both")
    points = [("rate", r) for r in rates] if rate is not None else [("load", x) for x in loads]
    sweep = len(policies) * len(points) > 1
    base = ReplayConfig(
        out=out, policy=policies[0] if policies else "", profile=profile, prompts=prompts, text_column=text_column,
        predictor=predictor, simulate=simulate, model=model, workers=tuple(worker), timing=timing,
        max_batch=max_batch, offload=offload, max_new_tokens=max_new_tokens, size_weight=size_weight,
        uncertainty_weight=uncertainty_weight, overwrite=overwrite,
        workload=WorkloadConfig(arrivals=arrivals, cv=cv, num_requests=num_requests, seed=seed, trace=trace,
                                slo_s=slo, slo_factor=slo_factor),
    )
    configs = []
    for pol in policies or [""]:
        for kind, value in points:
            name = f"{pol}-{kind}{value:g}" if value is not None else pol
            configs.append(dataclasses.replace(
                base, policy=pol, out=str(Path(out) / name) if sweep else out,
                workload=dataclasses.replace(base.workload, **{kind: value})))
    for c in configs:
        c.validate()  # every point is checked before the first one runs
    metas = [replay(c, console=console, dashboard=not no_dashboard) for c in configs]
    if as_json:
        out_console.print_json(json.dumps([{"out": m["out"], "policy": m["policy"], "engine": m["engine"],
                                            "workload": m["workload"], **m["summary"]} for m in metas]
                                          if sweep else {"out": metas[0]["out"], **metas[0]["summary"]}))
    else:
        out_console.print(run_table(metas))
    if any(not m["complete"] for m in metas):
        console.print("[red]interrupted:[/red] the finished requests are kept in the run; the rest are marked cancelled")
        raise typer.Exit(130)


def run_table(metas: list[dict]) -> Table:
    table = Table(title="replay" + (f" ({metas[0]['engine']})" if metas else ""))
    for col in ("run", "policy", "load", "done", "mean s", "p50 s", "p95 s", "ttft p50 s", "req/s", "tok/s", "batch", "misses"):
        table.add_column(col, justify="left" if col in ("run", "policy") else "right")
    for m in metas:
        s, w = m["summary"], m["workload"]
        miss = f"{s['deadline_miss_rate']:.1%}" if "deadline_miss_rate" in s else "-"
        load = f"{w['offered_load']:.2f}" if w.get("offered_load") else "-"
        table.add_row(Path(m["out"]).name, m["policy"], load, f"{s['completed']}/{s['requests']}", f"{s['e2el_s']['mean']:.2f}",
                      f"{s['e2el_s']['p50']:.2f}", f"{s['e2el_s']['p95']:.2f}", f"{s['ttft_s']['p50']:.2f}",
                      f"{s['throughput_rps']:.3f}", f"{s['throughput_tps']:.1f}", f"{s['mean_batch_size']:.1f}", miss)
    return table


@app.command()
@user_errors
def report(
    paths: list[str] = typer.Argument(..., help="Run, profile or predictor directories (a directory of runs, e.g. a sweep, stands for all of them)."),
    as_json: bool = typer.Option(False, "--json", help="Print everything as JSON on stdout."),
    csv: Optional[str] = typer.Option(None, "--csv", help="Directory to write the tables to as CSV (runs.csv, run_buckets.csv, profiles.csv, predictors.csv)."),
    plots: Optional[str] = typer.Option(None, "--plots", help="Directory for PNG figures: response-time CDF, latency vs load, queue length, predicted vs actual, latency vs uncertainty."),
    html: Optional[str] = typer.Option(None, "--html", help="Write one self-contained HTML report (figures embedded)."),
):
    """Compare runs, profiles and predictors: tables, JSON, CSV, plots, HTML.

    Runs: response time, TTFT, TPOT and queueing percentiles, throughput, deadline misses and
    goodput. Profiles: length against uncertainty. Predictors: accuracy.

    Example: [bold]rtlm report runs/sweep --plots figs --html report.html[/bold]
    """
    import tempfile

    from rtlm_cli import figures, html_report
    from rtlm_cli.report import build
    from rtlm_cli.store import atomic_write_bytes

    found, data = build(paths)
    if as_json:
        out_console.print_json(json.dumps(data, default=float))
    else:
        render_report(data)
    if csv:
        import pandas as pd

        for name in ("runs", "run_buckets", "profiles", "predictors"):
            if data[name]:
                atomic_write_bytes(Path(csv) / f"{name}.csv", pd.DataFrame(data[name]).to_csv(index=False).encode())
        console.print(f"wrote CSV tables to {csv}")
    if plots or html:
        with tempfile.TemporaryDirectory() as tmp:
            written = figures.all_figures(found, data, Path(plots or tmp))
            if plots:
                console.print(f"wrote {len(written)} figure(s) to {plots}")
            if html:
                atomic_write_bytes(Path(html), html_report.render(data, written).encode())
                console.print(f"wrote {html}")


def _fmt(v, spec: str = ".2f") -> str:
    return "-" if v is None or (isinstance(v, float) and v != v) else format(v, spec)


def render_report(data: dict) -> None:
    if data["runs"]:
        t = Table(title="runs: response time (e2el), TTFT, TPOT, queueing in seconds")
        cols = ("run", "policy", "engine", "load", "done/failed", "e2el mean", "p50", "p90", "p95", "p99", "ttft p50",
                "tpot p50", "queue p95", "req/s", "tok/s", "miss", "goodput", "pred us")
        for c in cols:
            t.add_column(c, justify="left" if c in ("run", "policy", "engine") else "right")
        for r in data["runs"]:
            t.add_row(r["run"], r["policy"], r["engine"], _fmt(r["offered_load"]), f"{r['completed']}/{r['failed']}",
                      _fmt(r["e2el_mean_s"]), _fmt(r["e2el_p50_s"]), _fmt(r["e2el_p90_s"]), _fmt(r["e2el_p95_s"]),
                      _fmt(r["e2el_p99_s"]), _fmt(r["ttft_p50_s"]), _fmt(r["tpot_p50_s"], ".3f"), _fmt(r["queue_p95_s"]),
                      _fmt(r["throughput_rps"], ".3f"), _fmt(r["throughput_tps"], ".1f"), _fmt(r["deadline_miss_rate"], ".1%"),
                      _fmt(r["goodput_rps"], ".3f"), _fmt(r["prediction_cost_us"], ".0f"))
        out_console.print(t)
        b = Table(title="response time by predicted-length bucket")
        for c in ("run", "predicted tokens", "requests", "e2el mean s", "e2el p95 s"):
            b.add_column(c)
        for r in data["run_buckets"]:
            b.add_row(r["run"], r["predicted_tokens"], str(r["requests"]), _fmt(r["e2el_mean_s"]), _fmt(r["e2el_p95_s"]))
        out_console.print(b)
    for r in data["profiles"]:
        t = Table(title=f"profile {r['profile']}: {r['model']} on {r['device']}, {r['requests']} requests", show_header=False)
        t.add_row("capped at the token limit", f"{r['capped_share']:.0%}")
        t.add_row("output tokens, mean", f"{r['output_tokens_mean']:.1f}")
        t.add_row("e2e / ttft / tpot, median", f"{r['e2e_p50_s']:.2f} s / {r['ttft_p50_s'] * 1e3:.0f} ms / {r['tpot_p50_s'] * 1e3:.1f} ms")
        t.add_row("peak RSS / GPU memory", f"{_fmt(r['rss_peak_bytes'] / 2**30)} GiB / {_fmt(r['gpu_mem_peak_bytes'] / 2**30)} GiB")
        for k, v in r.items():
            if k.startswith("spearman_tokens_vs_"):
                t.add_row(f"Spearman(output tokens, {k.removeprefix('spearman_tokens_vs_')})", _fmt(v, ".3f"))
        out_console.print(t)
        q = Table(title="by uncertainty quartile")
        for c in ("quartile", "requests", "score", "output tokens", "capped", "e2e s"):
            q.add_column(c)
        for row in data["profile_quartiles"][r["profile"]]:
            q.add_row(row["quartile"], str(row["requests"]), f"{row['score_mean']:.3f}", f"{row['output_tokens_mean']:.1f}",
                      f"{row['capped_share']:.0%}", f"{row['e2e_mean_s']:.2f}")
        out_console.print(q)
    by_pred: dict[str, list] = {}
    for r in data["predictors"]:
        by_pred.setdefault(r["predictor"], []).append(r)
    for name, rows in by_pred.items():
        out_console.print(evaluation_table(rows, f"predictor {name}"))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
