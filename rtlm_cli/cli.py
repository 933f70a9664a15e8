"""The ``rtlm`` command line: thin commands that build a config, call one library function, render."""

from __future__ import annotations

import functools
import json
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
out_console = Console()


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
    """Run a model over real prompts on this device: one row per request with its uncertainty
    features, token counts and timings (TTFT, TPOT, end-to-end), plus device telemetry.

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
    rounds: int = typer.Option(400, "--rounds", help="LightGBM boosting rounds."),
    ablation: bool = typer.Option(True, "--ablation/--no-ablation", help="Also evaluate each feature family alone and each one left out."),
    device: str = typer.Option("cpu", "--device", help="Device for the prefill family."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing predictor directory (only once training succeeded)."),
    as_json: bool = typer.Option(False, "--json", help="Print the evaluation as JSON on stdout."),
):
    """Train a LightGBM predictor of output length from profiles, and evaluate it on held-out prompts
    against baselines (constant mean, prompt length only), with a feature-family ablation.

    Example: [bold]rtlm train-predictor profiles/reference-smollm2-sharegpt --out predictors/smollm2[/bold]
    """
    from rtlm_cli.features import parse_families
    from rtlm_cli.predictor import TrainConfig, train

    cfg = TrainConfig(profiles=tuple(profiles), out=out, families=parse_families(features), target=target,
                      method=method, test_size=test_size, seed=seed, eval_profiles=tuple(eval_profiles),
                      ablation=ablation, threads=threads, rounds=rounds, device=device, overwrite=overwrite)
    with console.status("training ..."):
        result = train(cfg, console=console)
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
        style = "bold" if r["kind"] == "chosen" else ("dim" if r["kind"] == "baseline" else None)
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
    """Score prompts with a predictor: predicted output tokens, P90, P(capped), predicted latency,
    and the features used (computed by the same function as in training).

    Example: [bold]rtlm predict --predictor predictors/smollm2 --prompts my.jsonl --out preds.parquet[/bold]
    """
    from rtlm_cli.predict import predict_file

    result = predict_file(predictor, prompts, out, text_column=text_column, num_prompts=num_prompts, seed=seed,
                          device=device)
    out_console.print(f"wrote {result['rows']} predictions to {result['out']} "
                      f"({result['us_per_prompt']:.0f} us per prompt, features + model)")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
