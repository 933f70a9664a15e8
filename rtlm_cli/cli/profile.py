"""``rtlm profile``."""

from __future__ import annotations

from typing import Optional

import typer

from rtlm_cli.cli.app import app, console, out_console, print_json
from rtlm_cli.cli.options import engine_options, numbers, option, user_errors
from rtlm_cli.engines import EngineConfig
from rtlm_cli.engines.base import GenerationSettings
from rtlm_cli.profile.config import ProfileConfig

P, G = ProfileConfig, GenerationSettings


@app.command()
@user_errors
@engine_options
def profile(
    out: str = option(P, "out", "--out", "-o"),
    model: str = option(P, "model", "--model", "-m"),
    prompts: str = option(P, "prompts", "--prompts", "-p"),
    text_column: Optional[str] = option(P, "text_column", "--text-column"),
    num_prompts: int = option(P, "num_prompts", "--num-prompts", "-n"),
    seed: int = option(P, "seed", "--seed"),
    samples: int = option(P, "samples", "--samples"),
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
    calibration_contexts: Optional[str] = option(P, "calibration_contexts", "--calibration-contexts"),
    full_calibration: bool = option(P, "full_calibration", "--full-calibration"),
    calibration_steps: int = option(P, "calibration_steps", "--calibration-steps"),
    calibration_repeats: int = option(P, "calibration_repeats", "--calibration-repeats"),
    max_concurrency: int = option(P, "max_concurrency", "--max-concurrency"),
    as_json: bool = typer.Option(False, "--json", help="Print the profile's summary as JSON on stdout."),
    engine: EngineConfig = None,
):
    """Measure a model on this device over real prompts: a latency-versus-uncertainty dataset.

    One row per request with its uncertainty features, token counts and timings (TTFT, TPOT,
    end-to-end) and device telemetry; --calibrate adds the device's timing table.

    Through a serving engine (--engine vllm, or openai --url URL) many requests are in flight at
    once (--max-concurrency) and each is timed on its own stream.

    Example: [bold]rtlm profile -n 8 --max-new-tokens 64 --out profiles/demo[/bold]
    Example: [bold]rtlm profile --engine vllm -n 200 --max-new-tokens 256 --out profiles/vllm[/bold]
    Example: [bold]rtlm profile --engine vllm -n 200 --samples 4 --temperature 0.7 --out profiles/sampled[/bold]
    """
    from rtlm_cli.profile.job import profile as run_profile
    from rtlm_cli.render import profile_table

    batches = numbers(calibration_batches, "--calibration-batches", int, "1,2,4,8")
    contexts = numbers(calibration_contexts, "--calibration-contexts", int, "128,512")
    cfg = ProfileConfig(
        out=out, model=model, prompts=prompts, text_column=text_column, num_prompts=num_prompts, seed=seed,
        samples=samples, device=device, dtype=dtype, batch_size=batch_size, max_prompt_tokens=max_prompt_tokens,
        generation=GenerationSettings(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                                      repetition_penalty=repetition_penalty, seed=seed),
        calibrate=calibrate, calibration_batches=tuple(batches) if batches else None,
        calibration_contexts=tuple(contexts) if contexts else None, full_calibration=full_calibration,
        calibration_steps=calibration_steps, calibration_repeats=calibration_repeats, engine=engine, max_concurrency=max_concurrency,
    )
    result = run_profile(cfg, console=console)
    if as_json:
        print_json({"out": str(result.out), "new_requests": result.new_requests, **result.meta["summary"]})
    else:
        out_console.print(profile_table(result))
