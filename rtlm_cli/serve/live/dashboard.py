"""The live view of a real replay: a rich Live panel on a terminal, a plain line every 5 s elsewhere.

The same view for every executor: arrived, queued (rtlm's queue, or the server's own when it
reports one), running per worker or server, finished and failed, TTFT and inter-token percentiles
as answers arrive, throughput and response times.
"""

from __future__ import annotations

import time

import numpy as np


def _pct(values, q) -> float:
    v = np.asarray([x for x in values if x == x], dtype=float)
    return float(np.percentile(v, q)) if len(v) else float("nan")


class Dashboard:
    def __init__(self, policy: str, workers: list[str], total: int | None, console=None, live: bool = True,
                 every_s: float = 5.0, title: str = "rtlm serve-local"):
        """``total``: requests to come (None: a service, open-ended)."""
        from rich.console import Console

        self.console = console or Console(stderr=True)
        self.policy, self.workers, self.total, self.title = policy, workers, total, title
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

    def update(self, now: float, arrived: int, queued: int, running: dict[str, int], records, server: dict | None = None,
               span_s: float | None = None, speeds: dict[str, float] | None = None,
               predictor: dict[str, float] | None = None) -> None:
        """``records``: every record so far, or the latest ones over the last ``span_s`` seconds (a
        service); ``speeds``: each worker's tokens per second, if known better than from ``records``;
        ``predictor``: the predictor's rolling figures (``RollingQuality.figures``), shown when given."""
        span = now if span_s is None else span_s
        done = [r for r in records if r["status"] == "finished"]
        e2e = [r["finish_s"] - r["arrival_s"] for r in done]
        ttft = [r["first_token_s"] - r["arrival_s"] for r in done]
        itl = [r.get("itl_mean_s", (r["last_token_s"] - r["first_token_s"]) / max(r["output_tokens"] - 1, 1)) for r in done]
        self.state = {
            "elapsed": now, "arrived": arrived, "queued": queued, "running": running, "server": server or {},
            "completed": len(done), "failed": sum(1 for r in records if r["status"] == "failed"),
            "rps": len(done) / span if span > 0 else 0.0,
            "tps": sum(r["output_tokens"] for r in done) / span if span > 0 else 0.0,
            "mean": float(np.mean(e2e)) if e2e else float("nan"), "p95": _pct(e2e, 95),
            "ttft50": _pct(ttft, 50), "ttft95": _pct(ttft, 95), "itl50": _pct(itl, 50), "itl95": _pct(itl, 95),
            "missed": sum(1 for r in done if r["finish_s"] > r["deadline_s"]),  # NaN (no deadline) is never missed
            "predictor": predictor,
            "per_worker": {w: ((speeds or {}).get(w, sum(r["output_tokens"] for r in done if r["backend"] == w) / span if span > 0 else 0.0),
                               sum(1 for r in records if r["backend"] == w and r["status"] == "failed"))
                           for w in self.workers},
        }
        if self.live is not None:
            self.live.update(self._render())
        elif time.monotonic() - self.last >= self.every_s:
            self.last = time.monotonic()
            self.console.print(self._line(), highlight=False)

    def _line(self) -> str:
        s = self.state
        run = " ".join(f"{w}:{s['running'].get(w, 0)}" for w in self.workers)
        server = "".join(f" server {k.removeprefix('num_requests_')} {v:.0f}" for k, v in s["server"].items())
        return (f"[{s['elapsed']:6.1f}s] {self.policy}: arrived {s['arrived']}{self._of_total()} queued {s['queued']}{server} "
                f"running {run} done {s['completed']} failed {s['failed']} | {s['rps']:.2f} req/s {s['tps']:.1f} tok/s | "
                f"response mean {s['mean']:.2f}s p95 {s['p95']:.2f}s | ttft p50 {s['ttft50']:.2f}s p95 {s['ttft95']:.2f}s "
                f"| itl p50 {s['itl50'] * 1e3:.0f}ms p95 {s['itl95'] * 1e3:.0f}ms | deadline misses {s['missed']}"
                + (f" | predictor {self._predictor()}" if s.get("predictor") else ""))

    def _predictor(self) -> str:
        p = self.state["predictor"]
        return (f"tau {p['kendall_tau']:.2f}, |error| {p['abs_error_tokens']:.0f} tok over the last {p['requests']:.0f}"
                if p["kendall_tau"] == p["kendall_tau"] else f"{p['requests']:.0f} finished: too few to judge")

    def _of_total(self) -> str:
        return "" if self.total is None else f"/{self.total}"

    def _render(self):
        from rich.table import Table

        s = self.state
        t = Table(title=f"{self.title}: policy [bold]{self.policy}[/bold]", show_header=False, min_width=60)
        if not s:
            t.add_row("starting", "")
            return t
        t.add_row("elapsed", f"{s['elapsed']:.1f} s")
        t.add_row("arrived", f"{s['arrived']}{self._of_total()}")
        t.add_row("queue length", str(s["queued"]))
        for k, v in s["server"].items():
            t.add_row(f"server: {k.removeprefix('num_requests_')}", f"{v:.0f}")
        for w in self.workers:
            b = s["running"].get(w, 0)
            tps, failed = s["per_worker"][w]
            t.add_row(f"worker {w}", (f"{b} running" if b else "idle") + f", {tps:.1f} tok/s" + (f", {failed} failed" if failed else ""))
        t.add_row("completed / failed", f"{s['completed']} / {s['failed']}")
        t.add_row("throughput", f"{s['rps']:.2f} req/s, {s['tps']:.1f} tok/s")
        t.add_row("response time", f"mean {s['mean']:.2f} s, p95 {s['p95']:.2f} s")
        t.add_row("TTFT", f"p50 {s['ttft50']:.2f} s, p95 {s['ttft95']:.2f} s")
        t.add_row("inter-token", f"p50 {s['itl50'] * 1e3:.0f} ms, p95 {s['itl95'] * 1e3:.0f} ms")
        t.add_row("deadline misses", str(s["missed"]))
        if s.get("predictor"):
            t.add_row("predictor", self._predictor())
        return t
