"""Profiling through a serving engine (vLLM, any OpenAI-compatible server): many requests in flight
(``--max-concurrency``, spread in turn over every ``--url``), each journaled the moment its stream
ends.

The server batches continuously, so requests share steps and there are no batches: ``batch_id`` is
-1, ``batch_size`` is how many requests were in flight when this one was sent (itself included),
and ``service_s`` is its end-to-end time. Latencies are the client's, from the send: ``ttft_s`` to
the first text, ``e2e_s`` to the last token, ``tpot_s`` the mean gap between them; a request that
waited in the server's queue carries the wait in its TTFT. A failed request is not recorded (it has
no length): the summary counts it and a rerun retries it. When sampling, each request carries its
own seed (``generate.sample_seed``), recorded in its row.
"""

from __future__ import annotations

import asyncio
import time

from rtlm_cli.engines.base import BatchResult
from rtlm_cli.engines.server import generation
from rtlm_cli.progress import progress


def run_streaming(engine, cfg, todo, make_rows, shards, console) -> tuple[int, list[str]]:
    """(requests recorded, errors of the failed ones). ``make_rows(prompts, result, batch_id,
    started, batch_size)`` turns one finished request into its profile row."""
    client, settings = engine.client, cfg.generation
    urls = client.settings.urls  # several servers of one model share the prompts, in turn
    errors: list[str] = []
    done = tokens = 0
    t_start = time.perf_counter()

    async def main(update):
        gate = asyncio.Semaphore(cfg.max_concurrency)
        in_flight = 0

        async def one(i, p):
            nonlocal in_flight, done, tokens
            async with gate:
                in_flight += 1
                sent_with = in_flight
                started = time.time()
                try:
                    o = await client.stream(*client.chat_body(p.text, settings.max_new_tokens, settings.temperature,
                                                              settings.top_p, p.seed), urls[i % len(urls)])
                finally:
                    in_flight -= 1
            if o.status != "finished":
                errors.append(o.error)
                update(1, f"{len(errors)} failed")
                return
            shards.append(make_rows([p], BatchResult([generation(o)], wall_s=o.e2e_s), -1, started, sent_with))
            done += 1
            tokens += o.output_tokens
            update(1, f"{tokens / (time.perf_counter() - t_start):.1f} tok/s")

        await asyncio.gather(*(one(i, p) for i, p in enumerate(todo)))

    with progress(console, f"profiling through {engine.name}", len(todo)) as update:
        engine.run(main(update))
    return done, errors
