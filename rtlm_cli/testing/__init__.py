"""Fakes for tests, benchmarks and examples, shipped with rtlm so that none of them imports a test
module: ``FakeOpenAI`` (an OpenAI-compatible server with a deterministic answer per prompt, a queue,
priorities and faults on request; ``fake_openai.py``) and ``ScriptedBackend`` (a backend that plays
a fixed list of server-sent-event lines, to test how rtlm reads and times a stream; ``scripted.py``).
No torch here."""

from rtlm_cli.testing.fake_openai import FakeOpenAI, tokens_for
from rtlm_cli.testing.scripted import ScriptedBackend, Ticks

__all__ = ["FakeOpenAI", "ScriptedBackend", "Ticks", "tokens_for"]
