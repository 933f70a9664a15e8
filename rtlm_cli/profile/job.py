"""``rtlm profile``: run a model over prompts on this device and record latency against uncertainty.

Measurement hygiene lives here, not in callers: a warm-up batch before any timing, CUDA
synchronized around every timer (in the engine), telemetry sampled on its own thread, and every
finished request journaled at once so that Ctrl-C or a kill keeps it and a rerun resumes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import signal
from dataclasses import dataclass
from pathlib import Path

from rtlm_cli.engines import open_engine
from rtlm_cli.errors import RtlmError
from rtlm_cli.formats import profile as fmt
from rtlm_cli.formats.store import (
    RecordShards,
    atomic_write_json,
    atomic_write_parquet,
    now_iso,
    provenance,
    read_records,
)
from rtlm_cli.profile.calibrate import calibrate
from rtlm_cli.profile.config import ProfileConfig
from rtlm_cli.profile.generate import generate, jobs_of
from rtlm_cli.profile.telemetry import TelemetrySampler
from rtlm_cli.prompts import uncertainty
from rtlm_cli.prompts.sources import Prompt, load_prompts, sample_prompts


class Interrupted(RtlmError):
    exit_code = 130


@dataclass
class ProfileResult:
    out: Path
    meta: dict
    new_requests: int
    total_requests: int
    calibrated: bool


def identity(cfg: ProfileConfig, info) -> dict:
    """What makes two runs the same profile (so one may resume the other); -n is not part of it."""
    engine = {"engine": cfg.engine.name} if cfg.engine.is_server else {}  # hf profiles keep their old identity
    return {**engine,
        "model_hash": info.model_hash,
        "device_name": info.device_name,
        "dtype": info.dtype,
        "prompts": cfg.prompts,
        "text_column": cfg.text_column,
        "seed": cfg.seed,
        "batch_size": cfg.batch_size,
        "max_prompt_tokens": cfg.max_prompt_tokens,
        "generation": dataclasses.asdict(cfg.generation),
        "feature_set_version": uncertainty.FEATURE_SET_VERSION,
        **({"samples": cfg.samples} if cfg.samples > 1 else {}),  # greedy profiles keep their old identity
    }


def _check_existing(out: Path, ident: dict) -> dict | None:
    """The existing meta when ``out`` holds the same profile; an error when it holds anything else."""
    if not out.exists():
        return None
    if not out.is_dir():
        raise RtlmError(f"output {out} exists and is not a directory: choose another --out")
    if not (out / "meta.json").exists():
        if any(out.iterdir()):
            raise RtlmError(f"output directory {out} is not empty and holds no rtlm profile: choose another --out")
        return None
    meta = fmt.read_profile_meta(out)
    old = meta.get("identity", {})
    if old.get("model_hash") != ident["model_hash"]:
        raise RtlmError(
            f"output directory {out} holds a profile of another model ({meta.get('model', {}).get('model_id')}): "
            "choose another --out"
        )
    diff = sorted(k for k in ident if old.get(k) != ident[k])
    if diff:
        detail = ", ".join(f"{k}: {old.get(k)!r} there, {ident[k]!r} now" for k in diff)
        raise RtlmError(f"output directory {out} holds a profile made with other settings ({detail}): choose another --out")
    return meta


def _select(engine, cfg: ProfileConfig, pool: list[Prompt]) -> tuple[list[Prompt], int]:
    """The first ``num_prompts`` prompts of the seeded order that fit ``max_prompt_tokens``."""
    order = sample_prompts(pool, None, cfg.seed)
    chosen: list[Prompt] = []
    skipped = 0
    chunk = max(64, cfg.num_prompts)
    for start in range(0, len(order), chunk):
        part = order[start:start + chunk]
        for p, n in zip(part, engine.prompt_tokens([p.text for p in part])):
            if len(chosen) == cfg.num_prompts:
                break
            if n > cfg.max_prompt_tokens:
                skipped += 1
                continue
            chosen.append(p)
        if len(chosen) == cfg.num_prompts:
            break
    if not chosen:
        raise RtlmError(
            f"no prompt of {cfg.prompts!r} fits --max-prompt-tokens {cfg.max_prompt_tokens}: raise it or use other prompts"
        )
    return chosen, skipped


def _status(console, text: str):
    return console.status(text) if console is not None else contextlib.nullcontext()


def _sigterm_as_interrupt():
    def handler(signum, frame):
        raise KeyboardInterrupt

    try:
        return signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        return None


def profile(cfg: ProfileConfig, console=None, engine=None) -> ProfileResult:
    """Run the profile job; ``engine`` reuses an open engine (it must match ``cfg.model``)."""
    cfg.validate()
    pool = load_prompts(cfg.prompts, cfg.text_column) if cfg.num_prompts else []  # bad prompts fail fast
    if cfg.engine.name == "vllm" and not cfg.generation.greedy:  # every sampled request carries its seed
        from rtlm_cli.engines.vllm import seeded_sampling_safe

        settings, note = seeded_sampling_safe(cfg.engine.vllm)
        if note:
            cfg = dataclasses.replace(cfg, engine=dataclasses.replace(cfg.engine, vllm=settings))
            if console is not None:
                console.print(f"note: {note}")
    if engine is not None:
        return _profile(cfg, pool, engine, console)
    with contextlib.ExitStack() as stack:
        opened = open_engine(cfg.engine, cfg.model, cfg.device, cfg.dtype, console=console,
                             max_in_flight=cfg.max_concurrency if cfg.engine.is_server else 0)
        if cfg.engine.is_server:  # the server's start shows its own status
            engine = stack.enter_context(opened)
        else:
            with _status(console, f"loading model {cfg.model} (the first use of a GGUF converts it once)"):
                engine = stack.enter_context(opened)
        return _profile(cfg, pool, engine, console)


def _profile(cfg: ProfileConfig, pool: list[Prompt], engine, console) -> ProfileResult:
    out = Path(cfg.out)
    info = engine.info
    ident = identity(cfg, info)
    old_meta = _check_existing(out, ident)
    key = fmt.key_of(cfg.samples)
    shards = RecordShards(out / fmt.REQUESTS_DIR, key=key, flush_every=cfg.flush_every)
    done_df = read_records(out / fmt.REQUESTS_DIR, key=key) if old_meta else None
    done = set(done_df[key]) if done_df is not None and not done_df.empty else set()

    chosen, skipped = _select(engine, cfg, pool) if cfg.num_prompts else ([], 0)
    todo = [j for j in jobs_of(chosen, cfg) if j.key not in done]
    index = {p.prompt_id: i for i, p in enumerate(chosen)}
    texts = {j.prompt_id: j.text for j in todo}
    features = dict(zip(texts, uncertainty.extract_rows(texts.values())))

    meta = _meta(cfg, engine, ident, old_meta, skipped)
    out.mkdir(parents=True, exist_ok=True)
    recovered = shards.recover()
    atomic_write_json(out / "meta.json", meta)
    if recovered and console:
        console.print(f"recovered {recovered} request(s) journaled by an interrupted run")
    if console and done:
        console.print(f"resuming {out}: {len(done)} request(s) already profiled, {len(todo)} to go")

    previous = signal.getsignal(signal.SIGTERM)
    _sigterm_as_interrupt()
    telemetry = TelemetrySampler(info.device)
    new = 0
    try:
        with telemetry:
            if todo:
                first_batch = int(done_df["batch_id"].max()) + 1 if done else 0
                new = generate(engine, cfg, todo, index, features, shards, telemetry, console, first_batch, meta)
            if cfg.calibrate:
                table = calibrate(engine, cfg, console)
                atomic_write_parquet(table, out / fmt.TIMING_FILE)
                meta["calibration"] = {"file": fmt.TIMING_FILE, "engine": cfg.engine.name,
                                       "batches": sorted(set(table["batch"])),
                                       "contexts": sorted(set(table["context"])), "updated_at": now_iso()}
    except KeyboardInterrupt:
        shards.close()
        _finish(out, meta, telemetry, complete=False)
        total = len(read_records(out / fmt.REQUESTS_DIR, key=key))
        raise Interrupted(f"interrupted: {out} keeps {total} finished request(s); rerun the same command to resume") from None
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    shards.close()
    meta = _finish(out, meta, telemetry, complete=True)
    return ProfileResult(out, meta, new, meta["summary"].get("requests", 0), cfg.calibrate)


def _meta(cfg: ProfileConfig, engine, ident: dict, old_meta: dict | None, skipped: int) -> dict:
    """The profile's meta.json, before its summary (``docs/formats.md``)."""
    info = engine.info
    return {
        "kind": "rtlm.profile", "schema_version": fmt.SCHEMA_VERSION, "complete": False,
        "created_at": (old_meta or {}).get("created_at", now_iso()), "updated_at": now_iso(),
        "model": dataclasses.asdict(info),
        "device": {"device": info.device, "device_name": info.device_name},
        "decoding": {**cfg.generation.describe(), **({"samples": cfg.samples} if cfg.samples > 1 else {})},
        "prompts": {"source": cfg.prompts, "text_column": cfg.text_column, "seed": cfg.seed,
                    "num_prompts": cfg.num_prompts, "max_prompt_tokens": cfg.max_prompt_tokens,
                    "skipped_too_long": skipped},
        "batch_size": cfg.batch_size,
        "engine": {"name": cfg.engine.name, **({"max_concurrency": cfg.max_concurrency, "server": engine.server}
                                              if cfg.engine.is_server else {})},
        "feature_set_version": uncertainty.FEATURE_SET_VERSION,
        "features": list(uncertainty.FEATURE_NAMES),
        "family_scores": list(uncertainty.FAMILY_SCORE_NAMES),
        "identity": ident,
        "identity_hash": hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16],
        "calibration": (old_meta or {}).get("calibration"),
        **provenance(),
    }


def _finish(out: Path, meta: dict, telemetry: TelemetrySampler, complete: bool) -> dict:
    import pandas as pd

    samples = [dataclasses.asdict(s) for s in telemetry.samples]
    if samples:
        new = pd.DataFrame(samples).rename(columns={"t": "time"})
        old_path = out / fmt.TELEMETRY_FILE
        if old_path.exists():
            new = pd.concat([pd.read_parquet(old_path), new], ignore_index=True)
        atomic_write_parquet(new, old_path)
    df = read_records(out / fmt.REQUESTS_DIR, key=fmt.key_of(meta))
    meta.update(complete=complete, updated_at=now_iso(), summary=fmt.summarize(df),
                telemetry={"file": fmt.TELEMETRY_FILE, "gpu": telemetry.has_gpu})
    atomic_write_json(out / "meta.json", meta)
    return meta
