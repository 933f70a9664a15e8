"""``rtlm report``: gather runs, profiles and predictors, and write the tables (CSV), the figures
(PNG) and one self-contained HTML page that were asked for."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from rtlm_cli.formats.store import atomic_write_bytes
from rtlm_cli.report import figures, html
from rtlm_cli.report.build import build

CSV_TABLES = ("headline", "runs", "run_buckets", "run_distributions", "profiles", "predictors", "predictor_distributions")


@dataclass(frozen=True)
class ReportConfig:
    paths: tuple[str, ...] = field(metadata={"help": "Run, profile or predictor directories (a directory of runs, e.g. a sweep, stands for all of them)."})
    csv: str | None = field(default=None, metadata={"help": f"Directory to write the tables to as CSV ({', '.join(t + '.csv' for t in CSV_TABLES)})."})
    plots: str | None = field(default=None, metadata={"help": "Directory for PNG figures: response-time CDF, latency vs load, queue length, predicted vs actual, the calibration of predicted length quantiles, latency vs uncertainty."})
    html: str | None = field(default=None, metadata={"help": "Write one self-contained HTML report (figures embedded)."})
    baseline: str = field(default="fcfs", metadata={"help": "The policy every other one in a comparable group is set against."})


@dataclass
class ReportResult:
    data: dict
    written: list[str]  # what was written, for the user


def report(cfg: ReportConfig) -> ReportResult:
    import pandas as pd

    found, data = build(list(cfg.paths), cfg.baseline)
    written = []
    if cfg.csv:
        for name in CSV_TABLES:
            if data[name]:
                atomic_write_bytes(Path(cfg.csv) / f"{name}.csv", pd.DataFrame(data[name]).to_csv(index=False).encode())
        written.append(f"CSV tables to {cfg.csv}")
    if cfg.plots or cfg.html:
        with tempfile.TemporaryDirectory() as tmp:
            pngs = figures.all_figures(found, data, Path(cfg.plots or tmp))
            if cfg.plots:
                written.append(f"{len(pngs)} figure(s) to {cfg.plots}")
            if cfg.html:
                atomic_write_bytes(Path(cfg.html), html.render(data, pngs).encode())
                written.append(cfg.html)
    return ReportResult(data, written)
