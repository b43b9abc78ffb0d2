"""The Backend protocol: the only seam between batchprof and a device's memory/timing APIs.

``probe.measure`` drives one training step through these methods; a backend never runs the
step itself. Implementations: ``cpu`` (real runs, allocator-level accounting, enforced budget),
``cuda`` (torch.cuda statistics, CUDA events) and ``fake`` (scripted, for tests of the layers
above). Backends are passed explicitly; there is no module-level singleton.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import NamedTuple, Protocol, runtime_checkable

import torch


class BudgetExceeded(torch.OutOfMemoryError):
    """Raised mid-step when tracked allocations pass the memory limit.

    A subclass of ``torch.OutOfMemoryError`` so every layer treats it exactly like a device OOM.
    """


@dataclass
class MemoryReading:
    """What a memory window saw during one step. Filled in when the window closes."""

    resident_bytes: int = 0
    peak_allocated_bytes: int | None = None
    peak_reserved_bytes: int | None = None
    num_alloc_retries: int | None = None


@dataclass(frozen=True)
class DeviceInfo:
    """Which device a backend measures on: what the roofline matches a GPU datasheet by, and
    what a report names. None: the device does not say."""

    device: str  # the backend's name: "cpu", "cuda:0", "fake"
    name: str | None  # the model, e.g. "NVIDIA H100 80GB HBM3"
    total_memory_bytes: int | None  # the whole device's memory, not the budget


class AllocatorEvent(NamedTuple):
    """One allocation or free the device allocator reported."""

    time_ns: int
    delta_bytes: int  # bytes this event allocated; negative: freed
    total_bytes: int  # bytes the allocator held after it (its own counter)


class MarkedSpan(NamedTuple):
    """A named range of an allocator window (``AllocatorWindow.mark`` or a
    ``torch.profiler.record_function`` whose name starts with the window's prefix)."""

    start_ns: int
    end_ns: int
    name: str


@dataclass(frozen=True)
class AllocatorTimeline:
    """What an allocator window recorded: every event and every marked span, in time order."""

    events: tuple[AllocatorEvent, ...]
    spans: tuple[MarkedSpan, ...]

    def held(self) -> list[tuple[int, int]]:
        """``(time_ns, bytes held above the level before the first event)`` after each event."""
        if not self.events:
            return []
        first = self.events[0]
        baseline = first.total_bytes - first.delta_bytes
        return [(e.time_ns, e.total_bytes - baseline) for e in self.events]

    @property
    def peak_bytes(self) -> int:
        """Most bytes held above the level at the window's first event (0: no events)."""
        return max((held for _, held in self.held()), default=0)


class AllocatorWindow:
    """The handle an allocator window yields: ``mark`` ranges inside it; ``timeline`` is
    filled in when the window exits (None until then), like ``MemoryReading``."""

    def __init__(self, marker: Callable[[str], contextlib.AbstractContextManager]) -> None:
        self._marker = marker
        self.timeline: AllocatorTimeline | None = None

    def mark(self, name: str) -> contextlib.AbstractContextManager:
        """Record the block as a span called ``name`` (kept if it starts with the window's
        prefix). Python's cyclic collector stays off inside it: a collection mid-range frees
        earlier objects and shifts the running sum the range is read from."""
        return self._marker(name)


@runtime_checkable
class Backend(Protocol):
    name: str  # "cpu", "cuda:0", "fake"
    device: torch.device
    memory_limit_bytes: int | None
    # Whether a step's reading is independent of what ran before it in the process, so that
    # memory-only probes may share one built model (probe.step.KeptModel): the CPU's windows
    # count allocator events; CUDA's caching allocator keeps earlier sizes' blocks.
    keeps_model_between_probes: bool

    def capacity_bytes(self) -> int | None:
        """Bytes a step may peak at: the memory limit, else the device's usable memory.

        None means unbounded (CPU with no limit).
        """

    def prepare(self) -> None:
        """One-time device warm-up (e.g. cuBLAS workspace) before the first measured step."""

    def start_probe(self, batch_size: int) -> None:
        """Called once at the start of each probe (the fake backend scripts readings by it)."""

    def start_timing(self, batch_size: int) -> None:
        """Called before timing steps at ``batch_size`` outside a probe (a throughput sweep)."""

    def budget_guard(self, resident: Iterable[torch.Tensor]) -> contextlib.AbstractContextManager:
        """Enforce the limit while a step runs, raising an OutOfMemoryError past it."""

    def memory_window(
        self, resident: Iterable[torch.Tensor]
    ) -> contextlib.AbstractContextManager[MemoryReading]:
        """Measure one step: peak allocated/reserved, counting ``resident`` tensors as held at
        the start. Also enforces the limit. The reading is complete when the window exits."""

    def time_step(self, step: Callable[[], object]) -> float:
        """Run ``step`` once and return its duration in seconds (device-synchronized)."""

    def cleanup(self) -> None:
        """Release cached memory after a probe (called after leaving any ``except`` block)."""

    def is_oom(self, exc: BaseException) -> bool:
        """Whether ``exc`` means out-of-memory on this device (by type where a type exists)."""

    def device_info(self) -> DeviceInfo:
        """The device's model name and total memory (no warm-up, nothing allocated)."""

    def allocator_window(
        self, mark_prefix: str | None = None, *, pause_collector: bool = False
    ) -> contextlib.AbstractContextManager[AllocatorWindow] | None:
        """A window recording the device allocator's alloc/free events over its block, with
        the spans whose names start with ``mark_prefix``; ``pause_collector`` keeps Python's
        cyclic collector off over the whole block (after one collection before it starts).
        The window's ``timeline`` is complete when it exits. Other sessions of
        ``torch.profiler`` must not run inside it. None: this device cannot record its
        allocator's events (read peaks with ``memory_window`` instead)."""

    def close(self) -> None:
        """Undo what the backend changed for the whole process (CUDA: the memory fraction of
        its limit). Idempotent. Whoever builds a backend closes it: ``measure``, ``profile``
        and the CLI do, in a ``finally``."""


def unique_storage_bytes(tensors: Iterable[torch.Tensor]) -> int:
    """Bytes of the distinct storages behind ``tensors`` (views and shared weights once)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for t in tensors:
        if t is None or not isinstance(t, torch.Tensor) or t.device.type == "meta":
            continue
        storage = t.untyped_storage()
        key = (storage.data_ptr(), storage.nbytes())
        if key not in seen and storage.nbytes() > 0:
            seen.add(key)
            total += storage.nbytes()
    return total


@contextlib.contextmanager
def null_context() -> Iterator[None]:
    yield
