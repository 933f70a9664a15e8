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


def main() -> None:
    app()


if __name__ == "__main__":
    main()
