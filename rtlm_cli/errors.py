"""User-facing errors: one line that says what is wrong and what to do; the CLI exits with 2."""


class RtlmError(Exception):
    """A bad input or an unmet precondition. The message is shown to the user as is."""

    exit_code = 2
