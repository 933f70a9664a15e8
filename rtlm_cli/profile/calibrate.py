"""The device's timing table (``--calibrate``): median prefill and decode-step seconds per
(batch, context), from synthetic tokens, so that the simulator can price any batch."""

from __future__ import annotations

import statistics

from rtlm_cli.profile.config import (
    CPU_CALIBRATION_BATCHES,
    CUDA_CALIBRATION_BATCHES,
    ProfileConfig,
)
from rtlm_cli.progress import progress


def calibrate(engine, cfg: ProfileConfig, console=None):
    import pandas as pd

    batches = cfg.calibration_batches or (
        CUDA_CALIBRATION_BATCHES if engine.info.device.startswith("cuda") else CPU_CALIBRATION_BATCHES
    )
    grid = [(b, c) for c in cfg.calibration_contexts for b in batches]
    engine.timing_point(1, 16, 2)  # warm-up: first calls allocate and compile kernels
    rows = []
    with progress(console, "calibrating", len(grid)) as update:
        for b, c in grid:
            points = [engine.timing_point(b, c, cfg.calibration_steps) for _ in range(cfg.calibration_repeats)]
            rows.append({
                "batch": b, "context": c,
                "prefill_s": statistics.median(p for p, _ in points),
                "decode_step_s": statistics.median(s for _, s in points),
                "decode_steps": cfg.calibration_steps, "repeats": cfg.calibration_repeats,
            })
            update(1, f"b={b} ctx={c}: {rows[-1]['decode_step_s'] * 1000:.1f} ms/step")
    return pd.DataFrame(rows)
