"""Device telemetry sampled on a background thread: GPU memory, utilization, power (pynvml) and the
process's RSS and CPU share (psutil). Whatever cannot be read is recorded as absent (NaN), never an error.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass

from rtlm_cli.formats.profile import TELEMETRY_COLUMNS as COLUMNS

NAN = float("nan")


@dataclass(frozen=True)
class Sample:
    t: float  # time.time()
    rss_bytes: float
    cpu_percent: float
    gpu_mem_bytes: float = NAN
    gpu_util_percent: float = NAN
    gpu_power_w: float = NAN


def _nvml_handle(device: str):
    """An NVML handle for a ``cuda[:N]`` device, or None where NVML or the GPU is absent."""
    if not device.startswith("cuda"):
        return None
    try:
        import pynvml

        pynvml.nvmlInit()
        index = int(device.split(":")[1]) if ":" in device else 0
        return pynvml.nvmlDeviceGetHandleByIndex(index)
    except Exception:  # pynvml.NVMLError and its LibraryNotFound / NotSupported kin, or no pynvml
        return None


def _read_gpu(handle) -> tuple[float, float, float]:
    import pynvml

    def read(fn):
        try:
            return float(fn(handle))
        except pynvml.NVMLError:
            return NAN

    mem = read(lambda h: pynvml.nvmlDeviceGetMemoryInfo(h).used)
    util = read(lambda h: pynvml.nvmlDeviceGetUtilizationRates(h).gpu)
    power = read(lambda h: pynvml.nvmlDeviceGetPowerUsage(h) / 1000.0)
    return mem, util, power


class TelemetrySampler:
    """Samples every ``interval_s`` while running; ``window(t0, t1)`` summarizes a span of it."""

    def __init__(self, device: str = "cpu", interval_s: float = 0.5):
        import psutil

        self.interval_s = interval_s
        self.proc = psutil.Process()
        self.proc.cpu_percent(None)  # the first reading only starts the meter
        self.gpu = _nvml_handle(device)
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rtlm-telemetry", daemon=True)

    @property
    def has_gpu(self) -> bool:
        return self.gpu is not None

    def sample(self) -> Sample:
        mem, util, power = _read_gpu(self.gpu) if self.gpu is not None else (NAN, NAN, NAN)
        return Sample(time.time(), float(self.proc.memory_info().rss), self.proc.cpu_percent(None), mem, util, power)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.samples.append(self.sample())

    def __enter__(self) -> "TelemetrySampler":
        self.samples.append(self.sample())
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=2 * self.interval_s + 1)

    def window(self, t0: float, t1: float) -> dict[str, float]:
        """Peak memory, mean utilization/CPU/power over [t0, t1]; the nearest sample if none fell inside."""
        inside = [s for s in list(self.samples) if t0 <= s.t <= t1]
        if not inside and self.samples:
            inside = [min(self.samples, key=lambda s: abs(s.t - t1))]
        if not inside:
            return dict.fromkeys(COLUMNS, NAN)

        def mean(vals):
            vals = [v for v in vals if not math.isnan(v)]
            return sum(vals) / len(vals) if vals else NAN

        def peak(vals):
            vals = [v for v in vals if not math.isnan(v)]
            return max(vals) if vals else NAN

        return {
            "rss_bytes": peak(s.rss_bytes for s in inside),
            "cpu_percent": mean(s.cpu_percent for s in inside),
            "gpu_mem_bytes": peak(s.gpu_mem_bytes for s in inside),
            "gpu_util_percent": mean(s.gpu_util_percent for s in inside),
            "gpu_power_w": mean(s.gpu_power_w for s in inside),
        }
