"""This process on the CPU, through psutil."""

from __future__ import annotations

import time
from typing import Any

from batchprof.sampling.base import (
    DEFAULT_INTERVAL_S,
    BackgroundSampler,
    Clock,
    Metric,
    SamplerUnavailable,
    Wait,
    event_wait,
)


class PsutilSampler(BackgroundSampler):
    """This process on the CPU: ``cpu_pct`` (process CPU %, 100 = one core busy, so it can
    exceed 100 with several threads), ``rss_bytes`` (resident set), ``system_available_bytes``
    (memory the OS could hand out without swapping)."""

    kind = "psutil"
    metrics = (Metric("cpu_pct", "%"), Metric("rss_bytes", "B"),
               Metric("system_available_bytes", "B"))

    def __init__(self, interval_s: float = DEFAULT_INTERVAL_S, *, clock: Clock = time.perf_counter,
                 wait: Wait = event_wait, threaded: bool = True, pid: int | None = None):
        super().__init__(interval_s, clock=clock, wait=wait, threaded=threaded)
        self._pid = pid
        self._psutil: Any = None
        self._process: Any = None

    def _open(self) -> None:
        try:
            import psutil
        except ImportError as err:  # a declared dependency, but say what to do if it is gone
            raise SamplerUnavailable("psutil is not installed; `pip install psutil`") from err
        self._psutil = psutil
        self._process = psutil.Process(self._pid)
        self._process.cpu_percent(None)  # the first call only sets the reference point

    def _close(self) -> None:
        self._process = None

    def _read(self) -> tuple[float | None, ...]:
        psutil = self._psutil
        try:
            cpu: float | None = float(self._process.cpu_percent(None))
        except psutil.Error:
            cpu = None
        try:
            rss: float | None = float(self._process.memory_info().rss)
        except psutil.Error:
            rss = None
        try:
            available: float | None = float(psutil.virtual_memory().available)
        except psutil.Error:
            available = None
        return cpu, rss, available
