"""A scriptable backend for testing the layers above the hardware seam.

The step still runs (on the CPU, so the code path is real), but memory readings, OOMs and step
times come from the script: ``peak_bytes_fn(batch_size)``, ``step_time_fn(batch_size)`` and an
optional set of batch sizes that OOM regardless (flaky or non-monotonic memory).

Its allocator window is scripted too, on a clock of its own (one tick per event or span edge):
each marked range allocates and frees ``allocator_deltas_fn(batch_size)`` bytes inside it (by
default ``peak_bytes_fn(batch_size)`` then its free), and a window with no marks does so once,
as it exits. ``records_allocator_events=False`` makes ``allocator_window`` None, like a device
that cannot record its allocator's events.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Sequence

import torch

from .base import (
    AllocatorEvent,
    AllocatorTimeline,
    AllocatorWindow,
    BudgetExceeded,
    DeviceInfo,
    MarkedSpan,
    MemoryReading,
    null_context,
    unique_storage_bytes,
)


class FakeBackend:
    keeps_model_between_probes = False  # scripted readings; tests count fresh probes
    name = "fake"

    def __init__(
        self,
        peak_bytes_fn: Callable[[int], int],
        capacity_bytes: int | None,
        step_time_fn: Callable[[int], float] = lambda b: 0.01 + 1e-4 * b,
        oom_at: Iterable[int] = (),
        *,
        allocator_deltas_fn: Callable[[int], Sequence[int]] | None = None,
        records_allocator_events: bool = True,
    ):
        self.device = torch.device("cpu")
        self.memory_limit_bytes = capacity_bytes
        self._peak_bytes_fn = peak_bytes_fn
        self._step_time_fn = step_time_fn
        self._oom_at = set(oom_at)
        self._allocator_deltas_fn = allocator_deltas_fn or (
            lambda b: (int(peak_bytes_fn(b)), -int(peak_bytes_fn(b))))
        self.records_allocator_events = records_allocator_events
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

    def allocator_window(self, mark_prefix: str | None = None, *,
                         pause_collector: bool = False
                         ) -> contextlib.AbstractContextManager[AllocatorWindow] | None:
        """The scripted window (module docstring); ``pause_collector`` changes nothing here."""
        if not self.records_allocator_events:
            return None
        return _ScriptedWindow(self._allocator_deltas_fn(self._batch_size), mark_prefix).run()

    def close(self) -> None:
        self.closed = True


class _ScriptedWindow:
    def __init__(self, deltas: Sequence[int], mark_prefix: str | None):
        self._deltas = [int(d) for d in deltas]
        self._prefix = mark_prefix
        self._clock = 0
        self._total = 0
        self._events: list[AllocatorEvent] = []
        self._spans: list[MarkedSpan] = []
        self._marked = False

    def _tick(self) -> int:
        self._clock += 1
        return self._clock

    def _emit(self) -> None:
        for delta in self._deltas:
            self._total += delta
            self._events.append(AllocatorEvent(self._tick(), delta, self._total))

    @contextlib.contextmanager
    def _mark(self, name: str) -> Iterator[None]:
        self._marked = True
        start = self._tick()
        yield
        self._emit()
        if self._prefix is not None and name.startswith(self._prefix):
            self._spans.append(MarkedSpan(start, self._tick(), name))

    @contextlib.contextmanager
    def run(self) -> Iterator[AllocatorWindow]:
        window = AllocatorWindow(self._mark)
        yield window
        if not self._marked:  # the window itself ran the scripted step
            self._emit()
        window.timeline = AllocatorTimeline(tuple(self._events), tuple(sorted(self._spans)))
