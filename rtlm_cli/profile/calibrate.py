"""The device's timing table (``--calibrate``): median prefill and decode-step seconds per
(batch, context), from synthetic tokens, so that the simulator can price any batch."""

from __future__ import annotations

import statistics

from rtlm_cli.profile.config import (
    CALIBRATION_CONTEXTS,
    CPU_CALIBRATION_BATCHES,
    CUDA_CALIBRATION_BATCHES,
    FULL_CALIBRATION_CONTEXTS,
    FULL_CPU_CALIBRATION_BATCHES,
    ProfileConfig,
)
from rtlm_cli.progress import progress


def calibrate(engine, cfg: ProfileConfig, console=None):
    import pandas as pd

    grid = calibration_grid(cfg, engine.info.device)
    engine.timing_point(1, 16, 2)  # warm-up: first calls allocate and compile kernels
    rows = []
    # progress (and its ETA) in units of work, not cells: a cell costs about batch x (context + steps) tokens
    with progress(console, "calibrating", sum(cell_cost(b, c, cfg) for b, c in grid), percent=True) as update:
        for b, c in grid:
            points = [engine.timing_point(b, c, cfg.calibration_steps) for _ in range(cfg.calibration_repeats)]
            rows.append({
                "batch": b, "context": c,
                "prefill_s": statistics.median(p for p, _ in points),
                "decode_step_s": statistics.median(s for _, s in points),
                "decode_steps": cfg.calibration_steps, "repeats": cfg.calibration_repeats,
            })
            update(cell_cost(b, c, cfg), f"b={b} ctx={c}: {rows[-1]['decode_step_s'] * 1000:.1f} ms/step")
    return pd.DataFrame(rows)


def calibration_grid(cfg: ProfileConfig, device: str) -> list[tuple[int, int]]:
    """The (batch, context) cells to time: as given, else the default grid (or the full one)."""
    cuda = device.startswith("cuda")
    batches = cfg.calibration_batches or (
        CUDA_CALIBRATION_BATCHES if cuda else FULL_CPU_CALIBRATION_BATCHES if cfg.full_calibration else CPU_CALIBRATION_BATCHES)
    contexts = cfg.calibration_contexts or (FULL_CALIBRATION_CONTEXTS if cfg.full_calibration else CALIBRATION_CONTEXTS)
    return [(b, c) for c in contexts for b in batches]


def cell_cost(batch: int, context: int, cfg: ProfileConfig) -> int:
    """A cell's cost in tokens processed: its prefills (batch x context) and decode steps (batch
    each), times the repeats: what the ETA is counted in."""
    return batch * (context + cfg.calibration_steps) * cfg.calibration_repeats
