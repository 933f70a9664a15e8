"""``rtlm train-predictor`` and ``rtlm predict``."""

from __future__ import annotations

from typing import Optional

import typer

from rtlm_cli.cli.app import app, console, out_console, print_json
from rtlm_cli.cli.options import option, user_errors
from rtlm_cli.predict.job import PredictConfig
from rtlm_cli.predict.train import TrainConfig

T = TrainConfig


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
    quantiles: str = option(T, "quantiles", "--quantiles"),
    ablation: bool = typer.Option(T.ablation, "--ablation/--no-ablation", help=T.__dataclass_fields__["ablation"].metadata["help"]),
    device: str = option(T, "device", "--device"),
    overwrite: bool = option(T, "overwrite", "--overwrite"),
    as_json: bool = typer.Option(False, "--json", help="Print the evaluation as JSON on stdout."),
):
    """Train a LightGBM predictor of output length (and latency) from profiles.

    It is evaluated on held-out prompts against baselines (constant mean, the uncertainty score,
    prompt length), with a feature-family ablation, and cross-validated over every prompt: the
    out-of-fold predictions (crossfit.parquet) are what serve-local uses for these prompts.

    On a sampled profile (rtlm profile --samples) it trains on every answer and also predicts the
    length distribution (quantiles, --quantiles), evaluated against a prompt-blind distribution and
    the point model with conformal intervals (pinball loss, interval coverage, calibration).

    Example: [bold]rtlm train-predictor reference --out predictors/smollm2[/bold]
    Example: [bold]rtlm train-predictor reference-sampled --out predictors/sampled[/bold]
    """
    from rtlm_cli.predict.features import parse_families
    from rtlm_cli.predict.train import train
    from rtlm_cli.render import training_tables

    cfg = TrainConfig(profiles=tuple(profiles), out=out, families=parse_families(features), target=target,
                      method=method, test_size=test_size, seed=seed, eval_profiles=tuple(eval_profiles),
                      ablation=ablation, threads=threads, rounds=rounds, cross_fit=cross_fit, device=device,
                      quantiles=quantiles, overwrite=overwrite)
    with console.status("training ...") as status:
        result = train(cfg, console=console, stage=lambda text: status.update(f"training ... {text}"))
    if as_json:
        print_json({"out": str(result.out), "evaluation": result.evaluation, "importance": result.importance[:15]})
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
    """Score prompts with a predictor: predicted tokens, P90, P(capped), latency, and the length
    distribution's quantiles (q10_tokens ... q90_tokens) when the predictor has them.

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
