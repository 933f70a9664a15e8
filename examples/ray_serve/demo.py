"""Run the example app on this machine: a local Ray cluster, two forwarder replicas routed by rtlm over
two fake OpenAI servers (``rtlm_cli.testing.FakeOpenAI``, priced by the vllm-cpu timing table and
answering each prompt with its true length in the shipped reference profile, capped at 128 tokens),
one burst of 24 ShareGPT prompts, and the order the servers started them. ``--url`` (twice) uses your servers instead
(e.g. two ``vllm serve`` on SmolLM2). Ray is shut down at the end.

    .venv/bin/python examples/ray_serve/demo.py [--policy rtlm|fcfs] [--url URL --url URL]
"""

import argparse
import asyncio
import statistics
import time

import aiohttp
import ray
from ray import serve

from rtlm_cli.engines.vllm import free_port
from rtlm_cli.formats.profile import load_nonempty
from rtlm_cli.integrations.ray_serve.app import build

CAP = 128


async def burst(url: str, prompts: list[str]) -> list[float]:
    async with aiohttp.ClientSession() as s:
        async def one(prompt: str) -> float:
            t0 = time.perf_counter()
            body = {"model": "smollm2", "messages": [{"role": "user", "content": prompt}], "max_tokens": CAP,
                    "stream": True}
            async with s.post(url + "/v1/chat/completions", json=body) as r:
                await r.read()
                r.raise_for_status()
            return time.perf_counter() - t0

        return await asyncio.gather(*[one(p) for p in prompts])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--policy", default="rtlm")
    ap.add_argument("--url", action="append", default=[])
    ap.add_argument("--requests", type=int, default=24)
    args = ap.parse_args()
    _, df = load_nonempty("reference")
    df = df.sample(args.requests, random_state=0)
    fakes = []
    if not args.url:
        from rtlm_cli.testing import FakeOpenAI

        lengths = dict(zip(df["prompt"], df["output_tokens"].astype(int)))
        fakes = [FakeOpenAI(timing="vllm-cpu", lengths=lengths) for _ in range(2)]
        args.url = [f"http://127.0.0.1:{f.port}" for f in fakes]
    ray.init(include_dashboard=False, log_to_driver=False)
    try:
        port = free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(build(args.url, policy=args.policy, predictor="reference", max_ongoing_requests=4,
                        replica_options={"ray_actor_options": {"num_cpus": 0.1}}), name="rtlm", route_prefix="/")
        print(f"serving on http://127.0.0.1:{port}/v1 (policy {args.policy}, 2 replicas, K = 4 each)")
        latencies = asyncio.run(burst(f"http://127.0.0.1:{port}", df["prompt"].tolist()))
        print(f"{len(latencies)} answered; mean end-to-end {statistics.mean(latencies):.2f} s, "
              f"max {max(latencies):.2f} s")
        true = dict(zip(df["prompt"], df["output_tokens"].clip(upper=CAP).astype(int)))
        for i, f in enumerate(fakes):
            print(f"server {i} started answers of these lengths, in order: {[true[p] for p in f.started]}")
    finally:
        serve.shutdown()
        ray.shutdown()
        for f in fakes:
            f.close()


if __name__ == "__main__":
    main()
