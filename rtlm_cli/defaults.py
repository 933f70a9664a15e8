"""Defaults that more than one module needs, each defined once here (configs and the CLI read them).

Defaults that belong to one thing live with it instead: a policy's parameters on its class
(``serve/scheduling/policies.py``), a job's settings on its config dataclass, with their help.
"""

TOKENS_PER_WORD = 1.3  # English words -> tokens, where no tokenizer is at hand (an estimate)
TEMPLATE_TOKENS = 30  # SmolLM2's chat template around a user turn (its default system prompt): measured
MAX_NEW_TOKENS = 512  # token cap per answer of `rtlm profile` and real replays without a profile
