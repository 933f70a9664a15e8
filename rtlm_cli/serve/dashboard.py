"""The live view of a real replay: a rich Live panel on a terminal, a plain line every 5 s elsewhere."""

from __future__ import annotations

import time

import numpy as np


class Dashboard:
    def __init__(self, policy: str, workers: list[str], total: int, console=None, live: bool = True,
                 every_s: float = 5.0):
        from rich.console import Console

        self.console = console or Console(stderr=True)
        self.policy, self.workers, self.total = policy, workers, total
        self.live = None
        self.plain = not (live and self.console.is_terminal)
        self.every_s, self.last = every_s, -1e9
        self.state: dict = {}

    def __enter__(self):
        if not self.plain:
            from rich.live import Live

            self.live = Live(self._render(), console=self.console, refresh_per_second=4, transient=False)
            self.live.__enter__()
        return self

    def __exit__(self, *exc):
        if self.live is not None:
            self.live.update(self._render())
            self.live.__exit__(*exc)
        elif self.state:
            self.console.print(self._line(), highlight=False)

    def update(self, now: float, arrived: int, queued: int, running: dict[str, int], records: list[dict]) -> None:
        done = [r for r in records if r["status"] == "finished"]
        e2e = np.asarray([r["finish_s"] - r["arrival_s"] for r in done])
        missed = sum(1 for r in done if r["finish_s"] > r["deadline_s"])
        self.state = {
            "elapsed": now, "arrived": arrived, "queued": queued, "running": running,
            "completed": len(done), "failed": sum(1 for r in records if r["status"] == "failed"),
            "rps": len(done) / now if now > 0 else 0.0,
            "tps": sum(r["output_tokens"] for r in done) / now if now > 0 else 0.0,
            "mean": float(e2e.mean()) if len(e2e) else float("nan"),
            "p95": float(np.percentile(e2e, 95)) if len(e2e) else float("nan"), "missed": missed,
        }
        if self.live is not None:
            self.live.update(self._render())
        elif time.monotonic() - self.last >= self.every_s:
            self.last = time.monotonic()
            self.console.print(self._line(), highlight=False)

    def _line(self) -> str:
        s = self.state
        run = " ".join(f"{w}:{s['running'].get(w, 0)}" for w in self.workers)
        return (f"[{s['elapsed']:6.1f}s] {self.policy}: arrived {s['arrived']}/{self.total} queued {s['queued']} "
                f"running {run} done {s['completed']} failed {s['failed']} | {s['rps']:.2f} req/s {s['tps']:.1f} tok/s | "
                f"response mean {s['mean']:.2f}s p95 {s['p95']:.2f}s | deadline misses {s['missed']}")

    def _render(self):
        from rich.table import Table

        s = self.state
        t = Table(title=f"rtlm serve-local: policy [bold]{self.policy}[/bold]", show_header=False, min_width=60)
        if not s:
            t.add_row("starting", "")
            return t
        t.add_row("elapsed", f"{s['elapsed']:.1f} s")
        t.add_row("arrived", f"{s['arrived']} / {self.total}")
        t.add_row("queue length", str(s["queued"]))
        for w in self.workers:
            b = s["running"].get(w, 0)
            t.add_row(f"worker {w}", f"batch of {b}" if b else "idle")
        t.add_row("completed / failed", f"{s['completed']} / {s['failed']}")
        t.add_row("throughput", f"{s['rps']:.2f} req/s, {s['tps']:.1f} tok/s")
        t.add_row("response time", f"mean {s['mean']:.2f} s, p95 {s['p95']:.2f} s")
        t.add_row("deadline misses", str(s["missed"]))
        return t
