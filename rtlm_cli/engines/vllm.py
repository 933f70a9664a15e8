"""A vLLM server that rtlm starts for a model, waits for, and stops (its whole process group), also
when rtlm is interrupted or killed (``guard.py``).

vLLM runs in a Python environment of its own when its pins (torch, transformers) differ from
rtlm's: ``scripts/setup.sh --vllm`` puts one at ``<rtlm's environment>/engines/vllm``, where rtlm
finds it; ``$RTLM_VLLM_PYTHON`` names another; a vLLM importable beside rtlm is used too.

Measurement defaults: prefix caching off (repeated prompts would hit it), priority scheduling on
(with equal priorities it serves in arrival order, so FCFS runs on the same server), per-request
metrics on, the KV cache sized by ``VLLM_CPU_KVCACHE_SPACE`` on a CPU.
"""

from __future__ import annotations

import dataclasses

import importlib.util
import os
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from rtlm_cli.errors import RtlmError
from rtlm_cli.paths import rtlm_home

SETUP_HINT = "install it with `bash scripts/setup.sh --vllm` (or set RTLM_VLLM_PYTHON to a Python that has vllm)"


@dataclass(frozen=True)
class VLLMSettings:
    max_num_seqs: int = field(default=16, metadata={"help": "vllm engine: requests it runs at once (its batch, max_num_seqs)."})
    max_model_len: int = field(default=2048, metadata={"help": "vllm engine: longest prompt + answer, in tokens."})
    kv_cache_gib: float = field(default=2.0, metadata={"help": "vllm engine: KV cache size in whole GiB (VLLM_CPU_KVCACHE_SPACE on a CPU); for a smaller cache, which makes it preempt, --vllm-arg=--num-gpu-blocks-override=N."})
    prefix_caching: bool = field(default=False, metadata={"help": "vllm engine: reuse the KV cache of shared prompt prefixes (off: measurements of repeated prompts stay honest)."})
    vllm_args: tuple[str, ...] = field(default=(), metadata={"help": "vllm engine: one more argument for `vllm serve`, repeatable (e.g. --vllm-arg=--max-num-batched-tokens=512)."})
    startup_timeout_s: float = field(default=600.0, metadata={"help": "vllm engine: seconds to wait for the server to become healthy."})

    def validate(self) -> "VLLMSettings":
        if self.max_num_seqs < 1 or self.max_model_len < 16:
            raise RtlmError("--max-num-seqs must be >= 1 and --max-model-len >= 16")
        if self.kv_cache_gib < 1 or not float(self.kv_cache_gib).is_integer():
            raise RtlmError(f"--kv-cache-gib {self.kv_cache_gib:g}: vLLM reads it as a whole number of GiB (>= 1); for a "
                            "smaller cache pass --vllm-arg=--num-gpu-blocks-override=N (N blocks of the KV cache)")
        return self


def vllm_python() -> str:
    """The Python interpreter that runs vLLM."""
    env = os.environ.get("RTLM_VLLM_PYTHON")
    if env:
        if not Path(env).is_file():
            raise RtlmError(f"RTLM_VLLM_PYTHON={env} does not exist: {SETUP_HINT}")
        return env
    beside = Path(sys.prefix) / "engines" / "vllm" / "bin" / "python"
    if beside.is_file():
        return str(beside)
    if importlib.util.find_spec("vllm") is not None:
        return sys.executable
    raise RtlmError(f"the vllm engine is not installed: {SETUP_HINT}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def model_source(spec: str) -> str:
    """What vLLM loads for a ``--model`` spec: rtlm's converted copy of a GGUF (the embedded model
    included), a model directory as is, or a hub name."""
    from rtlm_cli.engines.resolve import ensure_converted, resolve

    resolved = resolve(spec)
    if resolved.kind in ("embedded", "gguf"):
        return str(ensure_converted(resolved))
    return resolved.source


def on_cpu() -> bool:
    """Whether a vLLM started here runs on the CPU (no GPU visible)."""
    return not os.environ.get("CUDA_VISIBLE_DEVICES") and not Path("/dev/nvidia0").exists()


def seeded_sampling_safe(settings: VLLMSettings) -> tuple[VLLMSettings, str | None]:
    """vLLM-CPU 0.32 dies on the first seeded request whose sampled token it discards (a prefill
    split over steps: its model runner rewinds the request's generator with ``set_offset``, which
    only CUDA generators have: "CPU Generator does not use offset"). Whole prefills avoid it: on a
    CPU, unless the user chose ``--max-num-batched-tokens``, it is raised to max_model_len x
    max_num_seqs. The settings to start with, and a note saying so (None when nothing changed)."""
    if not on_cpu() or any(a.startswith("--max-num-batched-tokens") for a in settings.vllm_args):
        return settings, None
    tokens = settings.max_model_len * settings.max_num_seqs
    note = (f"seeded sampling on vLLM-CPU: --max-num-batched-tokens={tokens} (whole prefills; vLLM-CPU 0.32 dies on "
            "a seeded request whose prefill is split)")
    return dataclasses.replace(settings, vllm_args=(*settings.vllm_args, f"--max-num-batched-tokens={tokens}")), note


class VLLMServer:
    """``with VLLMServer(model, settings) as server: server.url`` — started, healthy, then stopped."""

    def __init__(self, model: str, settings: VLLMSettings, console=None, served_name: str | None = None):
        self.model, self.settings, self.console = model, settings.validate(), console
        self.served_name = served_name or model
        self.python = vllm_python()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.log_path = rtlm_home() / "logs" / f"vllm-{self.port}-{int(time.time())}.log"

    def command(self, source: str) -> list[str]:
        s = self.settings
        cmd = [self.python, "-m", "vllm.entrypoints.openai.api_server", "--model", source,
               "--served-model-name", self.served_name, "--max-model-len", str(s.max_model_len),
               "--max-num-seqs", str(s.max_num_seqs), "--host", "127.0.0.1", "--port", str(self.port),
               "--scheduling-policy", "priority", "--enable-per-request-metrics",
               "--enable-prefix-caching" if s.prefix_caching else "--no-enable-prefix-caching"]
        if self.on_cpu():
            cmd += ["--dtype", "float32", "--enforce-eager"]
        return cmd + list(s.vllm_args)

    def on_cpu(self) -> bool:
        return on_cpu()

    def describe(self) -> dict:
        """What the server was started with (for a profile's or a run's meta.json)."""
        return {"url": self.url, "python": self.python, "args": self.proc.args[4:] if self.proc else None,
                "kv_cache_gib": self.settings.kv_cache_gib, "prefix_caching": self.settings.prefix_caching,
                "max_num_seqs": self.settings.max_num_seqs, "scheduling_policy": "priority", "log": str(self.log_path)}

    def start(self) -> "VLLMServer":
        """Launch the server and wait until it is healthy (stopped again if that fails)."""
        return self.launch().wait_healthy()

    def launch(self) -> "VLLMServer":
        """Start the server's process (under the guard, in its own process group) without waiting."""
        source = model_source(self.model)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": f"{self.settings.kv_cache_gib:g}",
               "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"}
        log = open(self.log_path, "ab")
        guard = [sys.executable, "-m", "rtlm_cli.engines.guard", "--", *self.command(source)]
        self.proc = subprocess.Popen(guard, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)
        log.close()
        return self

    def wait_healthy(self) -> "VLLMServer":
        """Wait until a launched server answers /health; stop it and raise if it dies or times out."""
        status = self.console.status(f"starting vLLM for {self.model} on {self.url} (about a minute on a CPU)") \
            if self.console is not None else None
        try:
            if status:
                status.start()
            self._wait_healthy()
        except BaseException:
            self.stop()
            raise
        finally:
            if status:
                status.stop()
        return self

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + self.settings.startup_timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RtlmError(f"vLLM exited while starting (code {self.proc.returncode}): {self.last_log_line()} "
                                f"(log: {self.log_path})")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.5)
        raise RtlmError(f"vLLM did not become healthy within {self.settings.startup_timeout_s:.0f} s (log: {self.log_path})")

    def last_log_line(self) -> str:
        try:
            lines = [x for x in self.log_path.read_text(errors="replace").splitlines() if x.strip()]
        except OSError:
            return "no log"
        errors = [x for x in lines if "Error" in x or "error" in x]
        return (errors or lines or ["no log"])[-1].strip()[:300]

    def stop(self) -> None:
        """Ask the guard to end the process group, then make sure of it."""
        if self.proc is None:
            return
        try:
            self.proc.terminate()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(self.proc.pid, 9)
        except (ProcessLookupError, PermissionError):
            pass
        self.proc = None

    def __enter__(self) -> "VLLMServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
