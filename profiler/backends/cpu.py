"""The CPU backend: the real step, allocator-level accounting, an enforced memory budget.

Peak memory: bytes resident when the step begins plus the highest running sum of the CPU
allocator's alloc/free events during the step. Those events come from ``torch.profiler`` with
``profile_memory=True``: the allocator itself reports every allocation, including buffers that
kernels allocate internally (which a dispatch-level trace cannot see).

Budget: the profiler delivers events only after the step, so a runaway step is stopped early by
:class:`StorageBudgetGuard`, a dispatch mode that counts live storages as ops create them and
raises :class:`BudgetExceeded` (a ``torch.OutOfMemoryError``) once resident + live bytes pass the
limit. It sees only storages that reach the dispatcher, a lower bound of the allocator's figure,
so the final verdict uses the allocator's peak: feasible iff peak <= limit.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import gc
import os
import sys
import time
import weakref
from collections.abc import Callable, Iterable, Iterator

import torch
from torch._C._profiler import _EventType
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from ..errors import TraceError
from ..units import format_bytes
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


class StorageBudgetGuard(TorchDispatchMode):
    """Counts bytes of storages created while active; raises BudgetExceeded past ``limit``."""

    def __init__(self, limit_bytes: int, resident_bytes: int):
        super().__init__()
        self.limit_bytes = limit_bytes
        self.resident_bytes = resident_bytes
        self.live_bytes = 0
        self.peak_live_bytes = 0
        self._seen: weakref.WeakSet = weakref.WeakSet()

    def _released(self, nbytes: int) -> None:
        self.live_bytes -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        # In-place ops and views return an input's storage: not a new allocation.
        inputs = {id(t.untyped_storage()) for t in tree_leaves((args, kwargs))
                  if isinstance(t, torch.Tensor)}
        for t in tree_leaves(out):
            if not isinstance(t, torch.Tensor):
                continue
            storage = t.untyped_storage()
            if id(storage) in inputs or storage in self._seen:
                continue
            nbytes = storage.nbytes()
            self._seen.add(storage)
            weakref.finalize(storage, self._released, nbytes)
            self.live_bytes += nbytes
        self.peak_live_bytes = max(self.peak_live_bytes, self.live_bytes)
        if self.resident_bytes + self.live_bytes > self.limit_bytes:
            raise BudgetExceeded(
                f"CPU memory budget exceeded: "
                f"{format_bytes(self.resident_bytes + self.live_bytes)} live "
                f"after {func}, limit {format_bytes(self.limit_bytes)}"
            )
        return out


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Collect Python's cyclic garbage, then keep the collector off for the block.

    A collection mid-step frees tensors of earlier steps (the Triton interpreter leaves cycles
    behind) and shifts the running sum of the allocator's events, so a peak read from them
    moved by 2-8 KiB between runs of a tiny custom-op model. timeit pauses it for the same
    reason.
    """
    gc.collect()
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@contextlib.contextmanager
def quiet_stderr() -> Iterator[None]:
    """Kineto prints start/stop banners on fd 2; keep the user's terminal clean."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


@functools.lru_cache(maxsize=1)
def _report_cpu_memory_flag() -> ctypes.c_bool:
    lib = ctypes.CDLL(os.path.join(os.path.dirname(torch.__file__), "lib", "libc10.so"))
    return ctypes.c_bool.in_dll(lib, "FLAGS_caffe2_report_cpu_memory_usage")


@contextlib.contextmanager
def allocator_counts_every_thread() -> Iterator[None]:
    """Make the CPU allocator keep its byte counter for frees on *every* thread.

    With ``profile_memory=True`` the profiler hears only the profiling thread's allocations
    and frees: a tensor that dies on another thread (gloo's worker thread drops the last
    reference to an all-gather's buffers when it finishes the collective after the main
    thread has moved on; a race, lost more often on a loaded machine) is never freed in a
    running sum of the events. c10's ``caffe2_report_cpu_memory_usage`` flag makes the
    allocator's own counter (``total_allocated`` on each profiled allocation event) count
    every thread's allocations and frees; read that instead (``AllocatorEvent.total_bytes``).
    The flag is a process-wide C global of libc10 (no Python binding), set through ctypes.
    """
    flag = _report_cpu_memory_flag()
    saved = flag.value
    flag.value = True
    try:
        yield
    finally:
        flag.value = saved


@contextlib.contextmanager
def allocator_events() -> Iterator[torch.autograd.profiler.profile]:
    """Record the CPU allocator's events over the block, every thread's frees counted.

    ``torch.autograd.profiler.profile(profile_memory=True)``, not ``torch.profiler.profile``:
    the latter (kineto) kept ~0.5-0.9 MiB of process memory per session (measured: +53 MiB of
    RSS over 100 sessions of a small matmul loop, against +0.7 MiB for this one, torch 2.13
    CPU), which a search of hundreds of probes turns into a leak. Read the events after the
    block with :func:`allocator_timeline`. Outside this module, ``CpuBackend.allocator_window``.
    """
    with quiet_stderr(), allocator_counts_every_thread(), \
            torch.autograd.profiler.profile(profile_memory=True) as prof:
        yield prof


def allocator_timeline(prof: torch.autograd.profiler.profile, mark_prefix: str | None = None
                       ) -> AllocatorTimeline:
    """The CPU allocator's events over a profile, in time order, and every ``record_function``
    span whose name starts with ``mark_prefix`` (none without one), in time order. The
    counter (``total_bytes``) includes every thread's allocations and frees under
    :func:`allocator_counts_every_thread` (otherwise only the profiled thread's)."""
    events, spans = [], []
    stack = list(prof.kineto_results.experimental_event_tree())
    while stack:
        e = stack.pop()
        stack.extend(e.children)
        kind, fields = e.typed
        if kind == _EventType.Allocation:
            if fields.device.type == "cpu":
                events.append(AllocatorEvent(e.start_time_ns, fields.alloc_size,
                                             fields.total_allocated))
        elif mark_prefix is not None and e.name.startswith(mark_prefix):
            spans.append(MarkedSpan(e.start_time_ns, e.end_time_ns, e.name))
    return AllocatorTimeline(tuple(sorted(events)), tuple(sorted(spans)))


@contextlib.contextmanager
def _marked(name: str, *, pause_collector: bool) -> Iterator[None]:
    with collector_paused() if pause_collector else null_context(), \
            torch.autograd.profiler.record_function(name):
        yield


@functools.lru_cache(maxsize=1)
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to trim
        return None


def _give_back_freed_heap() -> None:
    """Return the C heap's free pages to the OS after a probe (glibc ``malloc_trim``).

    glibc raises its mmap threshold after a large chunk is freed, so the next probes' tensors
    come from the heap and their pages stay in the process's RSS after free: 200 over-budget
    probes of the mlp at batch 4096 grew RSS by ~80 MiB without a live byte more (mallinfo2 and
    the live tensors unchanged; with MALLOC_MMAP_THRESHOLD_ fixed, +0.35 MiB). Trimming keeps
    RSS (what the user and the OS see, what psutil samples) equal to what is really held.
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def cpu_model_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` says."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine() or "cpu"


class CpuBackend:
    """Real CPU runs with an optional enforced ``memory_limit_bytes``."""

    name = "cpu"
    keeps_model_between_probes = True  # allocator-event windows: nothing earlier counts

    def __init__(self, memory_limit_bytes: int | None = None):
        self.device = torch.device("cpu")
        self.memory_limit_bytes = memory_limit_bytes

    def capacity_bytes(self) -> int | None:
        return self.memory_limit_bytes

    def prepare(self) -> None:
        pass

    def start_probe(self, batch_size: int) -> None:
        pass

    def start_timing(self, batch_size: int) -> None:
        pass

    def budget_guard(self, resident: Iterable[torch.Tensor]) -> contextlib.AbstractContextManager:
        if self.memory_limit_bytes is None:
            return null_context()
        return StorageBudgetGuard(self.memory_limit_bytes, unique_storage_bytes(resident))

    @contextlib.contextmanager
    def memory_window(self, resident: Iterable[torch.Tensor]) -> Iterator[MemoryReading]:
        reading = MemoryReading(resident_bytes=unique_storage_bytes(resident))
        with collector_paused(), allocator_events() as prof:
            with self.budget_guard(resident):
                yield reading
        peak = reading.resident_bytes + allocator_timeline(prof).peak_bytes
        reading.peak_allocated_bytes = peak
        reading.peak_reserved_bytes = peak  # no caching allocator on the CPU
        if self.memory_limit_bytes is not None and peak > self.memory_limit_bytes:
            raise BudgetExceeded(
                f"step peaked at {format_bytes(peak)}, above the "
                f"{format_bytes(self.memory_limit_bytes)} budget"
            )

    def time_step(self, step: Callable[[], object]) -> float:
        start = time.perf_counter()
        step()
        return time.perf_counter() - start

    def cleanup(self) -> None:
        gc.collect()
        _give_back_freed_heap()

    def is_oom(self, exc: BaseException) -> bool:
        if isinstance(exc, torch.OutOfMemoryError):
            return True
        # The CPU allocator raises a plain RuntimeError (no OOM type exists on the CPU path);
        # its message is the only signal, so it is matched here and nowhere else.
        return isinstance(exc, RuntimeError) and "DefaultCPUAllocator: can't allocate" in str(exc)

    def device_info(self) -> DeviceInfo:
        import psutil

        return DeviceInfo(self.name, cpu_model_name(), int(psutil.virtual_memory().total))

    @contextlib.contextmanager
    def allocator_window(self, mark_prefix: str | None = None, *,
                         pause_collector: bool = False) -> Iterator[AllocatorWindow]:
        """The allocator's events over the block (:func:`allocator_events`): the same events
        ``memory_window`` reads its peak from, so a window around one step has the step's
        peak above resident. A ``mark`` is a ``record_function`` range."""
        window = AllocatorWindow(functools.partial(_marked, pause_collector=not pause_collector))
        with collector_paused() if pause_collector else null_context(), \
                allocator_events() as prof:
            yield window
        window.timeline = allocator_timeline(prof, mark_prefix)

    def close(self) -> None:
        pass  # the budget is this backend's own guard: nothing process-wide to restore


@contextlib.contextmanager
def cpu_memory_profile() -> Iterator[torch.profiler.profile]:
    """A ``torch.profiler`` session with memory, shapes and stacks (what
    ``export_memory_timeline`` needs) around the block; the session is stopped on exit.
    Raises TraceError when a session is already running (sessions cannot nest) or when one
    started inside the block took the events."""
    if torch._C._autograd._profiler_enabled():
        raise TraceError("a torch.profiler session is already running; the CPU memory timeline "
                         "needs its own session and sessions cannot nest")
    prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU],
                                  profile_memory=True, record_shapes=True, with_stack=True)
    with quiet_stderr():  # Kineto prints start/stop banners on fd 2
        prof.start()
    stolen = False
    try:
        yield prof
    finally:
        # A session started inside ours ends it when it stops: ours has nothing left.
        stolen = not torch._C._autograd._profiler_enabled()
        if not stolen:
            with quiet_stderr():
                prof.stop()
    if stolen:
        raise TraceError("another torch.profiler session ran inside memory_snapshot('cpu') and "
                         "took its events (on the CPU, measure() profiles its memory window); "
                         "use batchprof.probe.snapshot.snapshot_probe, which avoids that")
