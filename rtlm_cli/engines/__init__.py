"""What generates tokens, behind one interface (``engines/base.py``), chosen by ``--engine``.

- ``hf``: transformers' ``generate`` in this process (the model by ``--model``: ``smollm2``, a
  ``.gguf``, a directory, a hub name; ``fake[:opts]`` is a deterministic test double); static,
  padded batches.
- ``vllm``: a vLLM server rtlm starts for the model on 127.0.0.1 and stops (``vllm.py``);
  continuous batching, its own queue.
- ``openai``: any running OpenAI-compatible server (``--url``, repeatable), local or remote.

The last two are reached over HTTP (``server.py``, ``openai.py``). Both the profiler and the
serving executors use engines; engines know nothing of either.
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass, field

from rtlm_cli.engines.openai import ClientSettings
from rtlm_cli.engines.vllm import VLLMSettings
from rtlm_cli.errors import RtlmError

ENGINES = ("hf", "vllm", "openai")
SERVER_ENGINES = ("vllm", "openai")


@dataclass(frozen=True)
class EngineConfig:
    name: str = field(default="hf", metadata={"help": "What generates: hf (transformers in this process; the embedded demo's default), vllm (a vLLM server rtlm starts and stops), openai (a running OpenAI-compatible server at --url)."})
    client: ClientSettings = field(default_factory=ClientSettings)
    vllm: VLLMSettings = field(default_factory=VLLMSettings)

    @property
    def is_server(self) -> bool:
        return self.name in SERVER_ENGINES

    def validate(self) -> "EngineConfig":
        if self.name not in ENGINES:
            raise RtlmError(f"unknown engine {self.name!r}: use one of {', '.join(ENGINES)}")
        if self.name == "openai" and not self.client.urls:
            raise RtlmError("--engine openai needs --url (the server's base URL, e.g. http://127.0.0.1:8000)")
        if self.name != "openai" and self.client.urls:
            raise RtlmError(f"--url is for --engine openai (this is --engine {self.name})")
        self.client.validate()
        if self.name == "vllm":
            self.vllm.validate()
        return self


def engine_name(model: str, engine: str = "hf") -> str:
    """The engine recorded for a run: ``fake`` for the test double, else the engine's name."""
    return "fake" if engine == "hf" and (model == "fake" or model.startswith("fake:")) else engine


def load_engine(model: str, device: str = "auto", dtype: str = "auto"):
    """An engine that runs in this process (hf, or the fake double)."""
    if engine_name(model) == "fake":
        from rtlm_cli.engines.fake import FakeEngine

        if device not in ("auto", "cpu"):
            from rtlm_cli.engines.hf import resolve_device

            resolve_device(device)  # the same error for a missing CUDA device as a real model
        return FakeEngine(model)
    from rtlm_cli.engines.hf import HFEngine

    return HFEngine(model, device=device, dtype=dtype)


@contextlib.contextmanager
def open_engine(cfg: EngineConfig, model: str, device: str = "auto", dtype: str = "auto", console=None,
                max_in_flight: int = 0):
    """The engine for ``cfg``, open for the block: a managed vLLM server is started before it and
    stopped after it (also on errors and Ctrl-C). ``max_in_flight`` sizes a server client's
    connection pool (0: as many as there are requests)."""
    cfg.validate()
    if cfg.name == "hf":
        yield load_engine(model, device, dtype)
        return
    from rtlm_cli.engines.server import ServerEngine

    if cfg.name == "openai":
        engine = ServerEngine("openai", cfg.client, max_in_flight)
        try:
            yield engine
        finally:
            engine.close()
        return
    from rtlm_cli.engines.resolve import resolve
    from rtlm_cli.engines.vllm import VLLMServer

    with VLLMServer(model, cfg.vllm, console) as server:
        engine = ServerEngine("vllm", dataclasses.replace(cfg.client, urls=(server.url,)), max_in_flight,
                              model_hash=resolve(model).model_hash, server=server.describe())
        try:
            yield engine
        finally:
            engine.close()
