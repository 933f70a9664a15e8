"""Progress of long jobs: a rich bar on a terminal, a plain line every few seconds elsewhere (logs, CI)."""

from __future__ import annotations

import contextlib
import time


class _Lines:
    def __init__(self, console, description: str, total: int, every_s: float, percent: bool = False):
        self.console, self.description, self.total, self.every_s = console, description, total, every_s
        self.percent = percent
        self.done, self.t0, self.last = 0, time.monotonic(), 0.0

    def __call__(self, advance: int = 1, note: str = "") -> None:
        self.done += advance
        now = time.monotonic()
        if now - self.last >= self.every_s or self.done >= self.total:
            self.last = now
            elapsed = now - self.t0
            eta = elapsed / self.done * (self.total - self.done) if self.done else float("nan")
            done = f"{100 * self.done / max(self.total, 1):.0f}%" if self.percent else f"{self.done}/{self.total}"
            self.console.print(
                f"{self.description}: {done} {note} elapsed {elapsed:.0f}s eta {eta:.0f}s",
                highlight=False,
            )


@contextlib.contextmanager
def progress(console, description: str, total: int, every_s: float = 10.0, percent: bool = False):
    """Yields ``update(advance=1, note="")``; ``note`` is a short rate such as '28.1 tok/s'.
    ``percent``: ``total`` counts units of work (the ETA follows them), shown as a percentage."""
    from rich.console import Console

    console = console or Console(stderr=True)
    if not console.is_terminal:
        yield _Lines(console, description, total, every_s, percent)
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    with Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), TaskProgressColumn() if percent else MofNCompleteColumn(), TextColumn("{task.fields[note]}"),
        TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), console=console,
    ) as bar:
        task = bar.add_task(description, total=total, note="")
        yield lambda advance=1, note="": bar.update(task, advance=advance, note=note)
