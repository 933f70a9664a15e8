"""Model backends, chosen by the ``--model`` spec: ``fake[:opts]`` or anything transformers loads."""

from __future__ import annotations


def load_backend(model: str, device: str = "auto", dtype: str = "auto"):
    if model == "fake" or model.startswith("fake:"):
        from rtlm_cli.backends.fake import FakeBackend

        if device not in ("auto", "cpu"):
            from rtlm_cli.backends.hf import resolve_device

            resolve_device(device)  # the same error for a missing CUDA device as a real model
        return FakeBackend(model)
    from rtlm_cli.backends.hf import HFBackend

    return HFBackend(model, device=device, dtype=dtype)
