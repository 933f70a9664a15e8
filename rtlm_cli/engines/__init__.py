"""What generates tokens, behind one interface (``engines/base.py``), chosen by name.

- ``hf``: transformers' ``generate`` in this process (the model by ``--model``: ``smollm2``, a
  ``.gguf``, a directory, a hub name); static, padded batches.
- ``fake``: a deterministic test double (``--model fake[:ms_per_token=N,ms_prefill=N]``), no weights.

Both the profiler and the serving executors use engines; engines know nothing of either.
"""

from __future__ import annotations


def engine_name(model: str) -> str:
    """The engine that runs a ``--model`` spec in this process."""
    return "fake" if model == "fake" or model.startswith("fake:") else "hf"


def load_engine(model: str, device: str = "auto", dtype: str = "auto"):
    if engine_name(model) == "fake":
        from rtlm_cli.engines.fake import FakeEngine

        if device not in ("auto", "cpu"):
            from rtlm_cli.engines.hf import resolve_device

            resolve_device(device)  # the same error for a missing CUDA device as a real model
        return FakeEngine(model)
    from rtlm_cli.engines.hf import HFEngine

    return HFEngine(model, device=device, dtype=dtype)
