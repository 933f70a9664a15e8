"""Generating a profile's requests and the rows they become: batch by batch on rtlm's own engine
(``run_batches``), or many in flight through a serving engine (``streaming.run_streaming``). Each
finished request is journaled at once."""

from __future__ import annotations

import dataclasses
import time

from rtlm_cli.engines.base import GenerationSettings
from rtlm_cli.profile.streaming import run_streaming
from rtlm_cli.progress import progress
from rtlm_cli.prompts import uncertainty
from rtlm_cli.prompts.sources import Prompt


def generate(engine, cfg, todo, index, features, shards, telemetry, console, first_batch: int, meta: dict) -> int:
    """Profile ``todo`` after a short warm-up: through a server, many requests in flight (failures
    counted in ``meta``); on rtlm's own engine, batch by batch. Returns the requests profiled."""
    warm = GenerationSettings(max_new_tokens=min(8, cfg.generation.max_new_tokens))
    engine.generate([p.text for p in todo[: cfg.batch_size]], warm)
    if getattr(engine, "client", None) is None:
        return run_batches(engine, cfg, todo, index, features, shards, telemetry, console, first_batch)

    def rows(batch, result, batch_id, started, size):
        return rows_of(batch, index, result, batch_id, started, cfg.generation,
                        telemetry.window(started, time.time()), features, size)

    new, errors = run_streaming(engine, cfg, todo, rows, shards, console)
    meta["failed_requests"] = {"count": len(errors), "first_error": errors[0] if errors else None}
    if errors and console:
        console.print(f"[yellow]warning:[/yellow] {len(errors)} request(s) failed ({errors[0]}); "
                      "rerun the same command to retry them")
    return new


def run_batches(engine, cfg, todo, index, features, shards, telemetry, console, first_batch: int) -> int:
    """rtlm's own engine: ``todo`` in batches of ``--batch-size``, each journaled when it ends."""
    settings = cfg.generation
    done = tokens = 0
    t_start = time.perf_counter()
    with progress(console, "profiling", len(todo)) as update:
        for b, start in enumerate(range(0, len(todo), cfg.batch_size)):
            batch = todo[start:start + cfg.batch_size]
            batch_id = first_batch + b
            run_settings = dataclasses.replace(settings, seed=settings.seed + batch_id)
            started = time.time()
            result = engine.generate([p.text for p in batch], run_settings)
            window = telemetry.window(started, time.time())
            shards.append(rows_of(batch, index, result, batch_id, started, run_settings, window, features))
            done += len(batch)
            tokens += sum(g.output_tokens for g in result.generations)
            rate = tokens / (time.perf_counter() - t_start)
            update(len(batch), f"{rate:.1f} tok/s")
    return done


def rows_of(batch: list[Prompt], index: dict[str, int], result, batch_id: int, started: float,
           settings: GenerationSettings, telemetry: dict, features: dict[str, list[float]],
           batch_size: int | None = None) -> list[dict]:
    """One profile row per request of a finished batch (``docs/formats.md``)."""
    rows = []
    for p, g in zip(batch, result.generations):
        decode_s = g.e2e_s - g.ttft_s
        steps = g.output_tokens - 1
        row = {
            "prompt_id": p.prompt_id, "prompt_index": index[p.prompt_id], "prompt": p.text,
            "output_text": g.text, "prompt_tokens": g.prompt_tokens, "output_tokens": g.output_tokens,
            "max_new_tokens": settings.max_new_tokens, "ended": g.ended,
            "finish_reason": "stop" if g.ended else "length",
            "ttft_s": g.ttft_s, "e2e_s": g.e2e_s,
            "tpot_s": decode_s / steps if steps > 0 else float("nan"),
            "decode_tokens_per_s": steps / decode_s if steps > 0 and decode_s > 0 else float("nan"),
            "service_s": result.wall_s, "batch_size": batch_size or len(batch), "batch_id": batch_id,
            "started_at": started,
        }
        row.update(telemetry)
        row.update(zip(uncertainty.ALL_COLUMNS, features[p.prompt_id]))
        rows.append(row)
    return rows
