"""One NVIDIA GPU sampled through NVML (via :mod:`batchprof.sampling.libnvml`)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from batchprof.sampling.base import (
    DEFAULT_INTERVAL_S,
    BackgroundSampler,
    Clock,
    Metric,
    Wait,
    event_wait,
)
from batchprof.sampling.libnvml import NvmlSession


class NvmlSampler(BackgroundSampler):
    """One NVIDIA GPU through NVML. Per sample:

    - ``kernel_busy_pct``: % of the last sample period in which at least one kernel ran
      (``utilization.gpu``). NOT SM occupancy: one tiny kernel keeps it at 100.
    - ``memory_busy_pct``: % of that period the memory controller was reading or writing.
    - ``memory_used_bytes``: device memory in use by all processes (v2 info: excluding the
      driver's reserve; v1 fallback: including it).
    - ``memory_driver_reserved_bytes``: memory the driver/firmware reserve (v2 info; None on v1).
      Not torch's caching-allocator "reserved".
    - ``power_w``: board power, instantaneous where supported (see ``NvmlSession.power_w``).
    - ``sm_clock_mhz``, ``temperature_c``.

    Per window: ``energy_j``, the energy counter's delta (None before Volta).
    A metric the GPU does not support is None for the whole run; ``unsupported`` says why.
    """

    kind = "nvml"
    metrics = (Metric("kernel_busy_pct", "%"), Metric("memory_busy_pct", "%"),
               Metric("memory_used_bytes", "B"), Metric("memory_driver_reserved_bytes", "B"),
               Metric("power_w", "W"), Metric("sm_clock_mhz", "MHz"), Metric("temperature_c", "C"))
    counter_metrics = (Metric("energy_j", "J"),)

    def __init__(self, device_index: int = 0, interval_s: float = DEFAULT_INTERVAL_S, *,
                 device_uuid: str | None = None, clock: Clock = time.perf_counter,
                 wait: Wait = event_wait, threaded: bool = True,
                 env: Mapping[str, str] | None = None, nvml_module: Any = None):
        super().__init__(interval_s, clock=clock, wait=wait, threaded=threaded)
        self.device_index = device_index
        self._device_uuid = device_uuid
        self._env = env
        self._nvml_module = nvml_module
        self._session: NvmlSession | None = None
        self.unsupported: dict[str, str] = {}  # metric group -> NVML's reason, after a run

    def _open(self) -> None:
        self._session = NvmlSession(self.device_index, device_uuid=self._device_uuid,
                                    env=self._env, nvml_module=self._nvml_module)
        self.unsupported = self._session.unsupported

    def _close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None

    def _read(self) -> tuple[float | None, ...]:
        s = self._session
        assert s is not None  # only called between _open and _close
        kernel_busy, memory_busy = s.utilization_pct()
        used, reserved = s.memory_bytes()
        return (kernel_busy, memory_busy, used, reserved, s.power_w(), s.sm_clock_mhz(),
                s.temperature_c())

    def _read_counters(self) -> tuple[float | None, ...]:
        assert self._session is not None
        return (self._session.energy_j(),)
