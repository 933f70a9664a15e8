import os
import shutil
import tempfile
import threading
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rtlm_cli.cli import app
from rtlm_cli.testing import FakeOpenAI


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` need a CUDA device: they skip cleanly where torch sees none."""
    gpu = [item for item in items if "gpu" in item.keywords]
    if not gpu:
        return
    import torch

    if not torch.cuda.is_available():
        for item in gpu:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA device (torch sees none)"))


# vLLM servers that real-vLLM tests share (fixture name -> VLLMSettings): the embedded SmolLM2, one
# request at a time, as rtlm starts it (priority scheduling) or in arrival order.
VLLM_SERVERS = {
    "priority_server": {"max_num_seqs": 1, "kv_cache_gib": 1},
    "fcfs_server": {"max_num_seqs": 1, "kv_cache_gib": 1, "vllm_args": ("--scheduling-policy", "fcfs")},
}


class EarlyVLLM:
    """The vLLM servers the collected tests will use, launched one after another in a background thread
    as soon as collection ends, so that each one's start (about 25 s of one core importing vLLM) overlaps
    the tests that run before it instead of adding to the session. The fixture that uses a server takes
    it (waiting until it is healthy) and stops it; any not taken are stopped when the session ends."""

    def __init__(self, names: list[str]):
        from rtlm_cli.engines.vllm import VLLMServer, VLLMSettings

        self.servers = {n: VLLMServer("smollm2", VLLMSettings(**VLLM_SERVERS[n])) for n in names}
        self.launched = {n: threading.Event() for n in names}
        self.lock = threading.Lock()
        threading.Thread(target=self._launch_all, daemon=True, name="early-vllm").start()

    def _launch_all(self):
        for name, server in list(self.servers.items()):
            with self.lock:
                if name in self.servers:  # not taken (or stopped) meanwhile
                    try:
                        server.launch()
                    except Exception:  # the fixture launches it again and says why
                        server.proc = None
            self.launched[name].set()
            if server.proc is not None:
                try:  # one start at a time: the next waits until this one answers (VLLMServer's own wait)
                    server._wait_healthy()
                except Exception:  # died or too slow: the fixture's wait_healthy says why and stops it
                    pass

    def take(self, name: str):
        """The server launched for fixture ``name`` (None when it was not launched early)."""
        if name not in self.launched:
            return None
        self.launched[name].wait(300)
        with self.lock:
            return self.servers.pop(name, None)

    def stop_rest(self):
        with self.lock:
            for server in self.servers.values():
                server.stop()
            self.servers.clear()


_early: EarlyVLLM | None = None


def pytest_collection_finish(session):
    """After selection (``-m``, ``-k`` included): launch the vLLM servers the selected tests use."""
    global _early
    names = [n for n in VLLM_SERVERS if any(n in getattr(item, "fixturenames", ()) for item in session.items)]
    if names and not session.config.option.collectonly and missing_requirement_vllm() is None:
        from rtlm_cli.engines.vllm import model_source

        # The embedded model is converted here, in the main thread, if it is not yet: a conversion
        # redirects the process's stderr while it runs, which must not happen beside a running test.
        try:
            model_source("smollm2")
        except Exception:  # the tests that need it say why
            return
        _early = EarlyVLLM(names)


def pytest_sessionfinish(session, exitstatus):
    if _early is not None:
        _early.stop_rest()


def vllm_server(name: str):
    """A started, healthy vLLM server for fixture ``name`` (the early one when there is one); stopped
    when the fixture ends."""
    from rtlm_cli.engines.vllm import VLLMServer, VLLMSettings

    server = _early.take(name) if _early is not None else None
    if server is None or server.proc is None:
        server = VLLMServer("smollm2", VLLMSettings(**VLLM_SERVERS[name])).launch()
    try:
        yield server.wait_healthy()
    finally:
        server.stop()


@pytest.fixture(scope="session")
def priority_server():
    """vLLM as rtlm starts it (priority scheduling), running one request at a time."""
    yield from vllm_server("priority_server")


@pytest.fixture
def fcfs_server():
    """vLLM started in arrival order (``--scheduling-policy fcfs``), one request at a time; the test that
    uses it may kill it."""
    yield from vllm_server("fcfs_server")


def missing_requirement_vllm() -> str | None:
    from rtlm_cli.engines.vllm import vllm_python
    from rtlm_cli.errors import RtlmError

    try:
        vllm_python()
    except RtlmError as e:
        return str(e)
    return None


def missing_requirement(item) -> str | None:
    """Why a test marked ``vllm``, ``ray`` or ``browser`` cannot run here, or None."""
    if "vllm" in item.keywords and (reason := missing_requirement_vllm()):
        return reason
    if "ray" in item.keywords:
        import importlib.util

        if importlib.util.find_spec("ray") is None:
            return "Ray is not installed: `bash scripts/setup.sh --ray` installs it (pip install -e '.[ray]')"
    if "browser" in item.keywords:
        from browser import chromium

        if not chromium():
            return "chromium is not installed: `bash scripts/test.sh` installs it (apt-get install chromium)"
    return None


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """Tests that need vLLM, Ray or Chromium skip with the reason where those are missing, and fail in CI
    (``CI=true``), so that CI still proves them."""
    reason = missing_requirement(item)
    if reason is None:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true and this test cannot run: {reason}", pytrace=False)
    pytest.skip(reason)


_saved_env: dict[str, str | None] = {}


def pytest_configure(config):
    """One RTLM_HOME per test session (the embedded model converts once), and no hub access: set before
    collection, so that the vLLM servers launched early (``EarlyVLLM``) use it too."""
    home = tempfile.mkdtemp(prefix="rtlm-home-")
    _saved_env.update({k: os.environ.get(k) for k in ("RTLM_HOME", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")})
    os.environ.update(RTLM_HOME=home, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")


def pytest_unconfigure(config):
    home = os.environ.get("RTLM_HOME")
    for k, v in _saved_env.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    if home and Path(home).name.startswith("rtlm-home-"):
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def run_cli():
    runner = CliRunner()

    def run(*args):
        result = runner.invoke(app, [str(a) for a in args], catch_exceptions=False)
        return result

    return run


@pytest.fixture
def servers():
    """``servers(**kw)`` starts a fake OpenAI server (``rtlm_cli.testing.FakeOpenAI``); every one is
    stopped when the test ends, also when it fails."""
    made = []

    def start(**kw):
        made.append(FakeOpenAI(**kw))
        return made[-1]

    yield start
    for s in made:
        s.close()


@pytest.fixture
def prompt_file(tmp_path):
    path = tmp_path / "prompts.jsonl"
    lines = [
        '{"prompt": "What is the capital of France?"}',
        '{"prompt": "Write a detailed essay about the history of the Roman empire and explain why it fell."}',
        '{"prompt": "Answer in one word: is water wet?"}',
        '{"prompt": "List 10 ideas for a birthday party, and also describe how to plan each one step by step."}',
        '{"prompt": "Translate \\"good morning\\" into French."}',
        '{"prompt": "Why is the sky blue? How does scattering work? Maybe explain it simply."}',
    ]
    path.write_text("\n".join(lines) + "\n")
    return path
