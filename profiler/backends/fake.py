"""A scriptable backend for testing the layers above the hardware seam.

The step still runs (on the CPU, so the code path is real), but memory readings, OOMs and step
times come from the script: ``peak_bytes_fn(batch_size)``, ``step_time_fn(batch_size)`` and an
optional set of batch sizes that OOM regardless (flaky or non-monotonic memory).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator

import torch

from .base import BudgetExceeded, DeviceInfo, MemoryReading, null_context, unique_storage_bytes


class FakeBackend:
    keeps_model_between_probes = False  # scripted readings; tests count fresh probes
    name = "fake"

    def __init__(
        self,
        peak_bytes_fn: Callable[[int], int],
        capacity_bytes: int | None,
        step_time_fn: Callable[[int], float] = lambda b: 0.01 + 1e-4 * b,
        oom_at: Iterable[int] = (),
    ):
        self.device = torch.device("cpu")
        self.memory_limit_bytes = capacity_bytes
        self._peak_bytes_fn = peak_bytes_fn
        self._step_time_fn = step_time_fn
        self._oom_at = set(oom_at)
        self._batch_size = 0
        self.probes: list[int] = []  # batch sizes in the order they were probed
        self.closed = False

    def capacity_bytes(self) -> int | None:
        return self.memory_limit_bytes

    def prepare(self) -> None:
        pass

    def start_probe(self, batch_size: int) -> None:
        self._batch_size = batch_size
        self.probes.append(batch_size)

    def start_timing(self, batch_size: int) -> None:
        self._batch_size = batch_size  # scripted times follow the size; not a probe

    def budget_guard(self, resident: Iterable[torch.Tensor]) -> contextlib.AbstractContextManager:
        return null_context()

    @contextlib.contextmanager
    def memory_window(self, resident: Iterable[torch.Tensor]) -> Iterator[MemoryReading]:
        reading = MemoryReading(resident_bytes=unique_storage_bytes(resident))
        yield reading
        peak = int(self._peak_bytes_fn(self._batch_size))
        reading.peak_allocated_bytes = reading.peak_reserved_bytes = peak
        over = self.memory_limit_bytes is not None and peak > self.memory_limit_bytes
        if over or self._batch_size in self._oom_at:
            raise BudgetExceeded(f"fake OOM at batch {self._batch_size} (peak {peak} bytes)")

    def time_step(self, step: Callable[[], object]) -> float:
        step()
        return float(self._step_time_fn(self._batch_size))

    def cleanup(self) -> None:
        pass

    def is_oom(self, exc: BaseException) -> bool:
        return isinstance(exc, torch.OutOfMemoryError)

    def device_info(self) -> DeviceInfo:
        return DeviceInfo(self.name, None, self.memory_limit_bytes)

    def close(self) -> None:
        self.closed = True
