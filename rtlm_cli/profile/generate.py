"""Generating a profile's requests and the rows they become: batch by batch on rtlm's own engine
(``run_batches``), or many in flight through a serving engine (``streaming.run_streaming``). Each
finished request is journaled at once."""

from __future__ import annotations

import dataclasses
import hashlib
import time
from dataclasses import dataclass

from rtlm_cli.engines.base import GenerationSettings
from rtlm_cli.profile.streaming import run_streaming
from rtlm_cli.progress import progress
from rtlm_cli.prompts import uncertainty
from rtlm_cli.prompts.sources import Prompt


@dataclass(frozen=True)
class Job:
    """One answer to profile: a prompt and, in a sampled profile (``--samples`` S > 1), which of its
    S answers, with the seed that answer is generated with."""

    prompt_id: str
    text: str
    sample: int = 0
    seed: int = 0
    samples: int = 1

    @property
    def key(self) -> str:
        """What names its row: the prompt id, or PROMPT_ID#K in a sampled profile (``sample_id``)."""
        return self.prompt_id if self.samples == 1 else f"{self.prompt_id}#{self.sample}"


def sample_seed(seed: int, prompt_id: str, sample: int) -> int:
    """The seed of one answer: derived from --seed, the prompt and the answer's number (stable
    across runs and machines, so a resumed profile and a replay use the same one)."""
    return int(hashlib.sha256(f"{seed}:{prompt_id}:{sample}".encode()).hexdigest()[:8], 16) & 0x7FFFFFFF


def jobs_of(prompts: list[Prompt], cfg) -> list[Job]:
    return [Job(p.prompt_id, p.text, k, sample_seed(cfg.seed, p.prompt_id, k), cfg.samples)
            for p in prompts for k in range(cfg.samples)]


def generate(engine, cfg, todo, index, features, shards, telemetry, console, first_batch: int, meta: dict) -> int:
    """Profile ``todo`` after a short warm-up: through a server, many requests in flight (failures
    counted in ``meta``); on rtlm's own engine, batch by batch. Returns the requests profiled."""
    warm = GenerationSettings(max_new_tokens=min(8, cfg.generation.max_new_tokens))
    engine.generate([p.text for p in todo[: cfg.batch_size]], warm)
    if getattr(engine, "client", None) is None:
        return run_batches(engine, cfg, todo, index, features, shards, telemetry, console, first_batch)

    def rows(batch, result, batch_id, started, size):
        return rows_of(batch, index, result, batch_id, started, dataclasses.replace(cfg.generation, seed=batch[0].seed),
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
            # one seed per padded batch; a sampled profile runs batches of one, each answer with its own
            run_settings = dataclasses.replace(settings, seed=batch[0].seed if cfg.samples > 1 else settings.seed + batch_id)
            started = time.time()
            result = engine.generate([p.text for p in batch], run_settings)
            window = telemetry.window(started, time.time())
            shards.append(rows_of(batch, index, result, batch_id, started, run_settings, window, features))
            done += len(batch)
            tokens += sum(g.output_tokens for g in result.generations)
            rate = tokens / (time.perf_counter() - t_start)
            update(len(batch), f"{rate:.1f} tok/s")
    return done


def rows_of(batch: list[Job], index: dict[str, int], result, batch_id: int, started: float,
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
            "started_at": started, "sample": p.sample, "sample_seed": None if settings.greedy else settings.seed,
        }
        if p.samples > 1:
            row["sample_id"] = p.key
        row.update(telemetry)
        row.update(zip(uncertainty.ALL_COLUMNS, features[p.prompt_id]))
        rows.append(row)
    return rows
