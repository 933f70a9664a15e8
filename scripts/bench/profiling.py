"""Benchmark for `rtlm profile`: feature throughput and the profiler's overhead.

Prints, in one run:
1. uncertainty-feature throughput over every bundled ShareGPT prompt, on one core (prompts/s);
2. the profiler's tokens/s over a bare ``model.generate`` loop on the same prompts and settings
   (the ratio; target >= 0.95). Bare and profiled passes alternate, and the median of each is used,
   so that drift of this shared 2-core machine hits both alike.

Usage: .venv/bin/python scripts/bench/profiling.py [--prompts 8] [--max-new-tokens 64] [--rounds 2] [--json OUT]
(--json: the raw figures, with the command, times, machine and revision; docs/bench/profile.json)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from rtlm_cli.engines import load_engine
from rtlm_cli.engines.base import GenerationSettings
from rtlm_cli.profile.config import ProfileConfig
from rtlm_cli.profile.job import profile
from rtlm_cli.prompts import uncertainty
from rtlm_cli.prompts.sources import load_prompts, sample_prompts

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import now, write_record  # noqa: E402


def feature_throughput() -> dict:
    texts = [p.text for p in load_prompts("sharegpt")]
    uncertainty.extract_rows(texts[:200])  # warm caches
    t0 = time.perf_counter()
    uncertainty.extract_rows(texts)
    dt = time.perf_counter() - t0
    return {"prompts": len(texts), "mean_chars": sum(map(len, texts)) / len(texts),
            "seconds": dt, "prompts_per_s": len(texts) / dt, "us_per_prompt": 1e6 * dt / len(texts)}


def profiler_overhead(n: int, max_new_tokens: int, rounds: int, device: str) -> dict:
    engine = load_engine("smollm2", device=device)
    chosen = [p.text for p in sample_prompts(load_prompts("sharegpt"), 200, seed=7) if len(p.text) < 400][:n]
    settings = GenerationSettings(max_new_tokens=max_new_tokens)
    engine.generate(chosen[:1], GenerationSettings(max_new_tokens=8))  # warm-up for the bare loop
    bare, prof = [], []
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "prompts.jsonl"
        src.write_text("".join(json.dumps({"prompt": t}) + "\n" for t in chosen))
        for r in range(rounds):
            t0 = time.perf_counter()
            tokens = sum(engine.bare_generate([t], settings) for t in chosen)
            bare.append(tokens / (time.perf_counter() - t0))
            cfg = ProfileConfig(out=str(Path(tmp) / f"p{r}"), prompts=str(src), num_prompts=n, device=device,
                                generation=settings)
            t0 = time.perf_counter()
            result = profile(cfg, engine=engine)  # prompt loading, warm-up, telemetry, shards: all counted
            prof.append(result.meta["summary"]["output_tokens_mean"] * n / (time.perf_counter() - t0))
    return {"device": engine.info.device_name, "prompts": n, "max_new_tokens": max_new_tokens,
            "bare_tokens_per_s": statistics.median(bare), "profiler_tokens_per_s": statistics.median(prof),
            "ratio": statistics.median(prof) / statistics.median(bare), "rounds": rounds}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", help="write the raw figures here (stamped with command, times, machine, revision)")
    args = ap.parse_args()
    started = now()
    feat = feature_throughput()
    print(f"features: {feat['prompts_per_s']:,.0f} prompts/s on one core "
          f"({feat['us_per_prompt']:.0f} us/prompt, {feat['prompts']} ShareGPT prompts, mean {feat['mean_chars']:.0f} chars; target >= 5,000)")
    over = profiler_overhead(args.prompts, args.max_new_tokens, args.rounds, args.device)
    print(f"profiler: {over['profiler_tokens_per_s']:.1f} tok/s vs bare generate {over['bare_tokens_per_s']:.1f} tok/s "
          f"-> ratio {over['ratio']:.3f} (target >= 0.95; {over['prompts']} prompts x {over['max_new_tokens']} tokens, {over['device']})")
    out = {"features": feat, "profiler": over}
    write_record(args.json, out, started)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
