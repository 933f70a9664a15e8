"""The README's tour as a newcomer reads it: its commands, one parser for the test that checks them
(``tests/test_tour.py``) and the benchmark that times them (``scripts/bench/tour.py``)."""

from __future__ import annotations

import re
import shlex

TOUR_HEADING = "## A five-minute tour"


def tour_commands(text: str) -> list[list[str]]:
    """The tour's commands (the first ``bash`` block under its heading in ``text``), continuation
    lines joined, comments dropped."""
    section = text.split(TOUR_HEADING, 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    joined = re.sub(r"\\\n\s*", " ", block)
    return [shlex.split(line) for line in joined.splitlines() if line.strip() and not line.lstrip().startswith("#")]
