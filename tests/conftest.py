import os

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


def missing_requirement(item) -> str | None:
    """Why a test marked ``vllm``, ``ray`` or ``browser`` cannot run here, or None."""
    if "vllm" in item.keywords:
        from rtlm_cli.engines.vllm import vllm_python
        from rtlm_cli.errors import RtlmError

        try:
            vllm_python()
        except RtlmError as e:
            return str(e)
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


@pytest.fixture(autouse=True, scope="session")
def _isolated_home(tmp_path_factory):
    """One RTLM_HOME per test session (the embedded model converts once), and no hub access."""
    home = tmp_path_factory.mktemp("rtlm-home")
    saved = {k: os.environ.get(k) for k in ("RTLM_HOME", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")}
    os.environ.update(RTLM_HOME=str(home), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    yield home
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


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
