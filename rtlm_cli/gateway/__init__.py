"""``rtlm gateway``: rtlm's decisions as an OpenAI-compatible service in front of serving engines."""
