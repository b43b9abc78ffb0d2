"""The CUDA backend: torch.cuda's caching-allocator statistics, CUDA-event timing, and an
emulated smaller GPU.

What each figure is (DESIGN.md, "What every number means"):

- ``resident_bytes``: ``memory_allocated()`` when the measured step begins (parameters, buffers,
  gradients, optimizer state, the batch, and library workspaces such as cuBLAS's).
- ``peak_allocated_bytes`` / ``peak_reserved_bytes``: ``max_memory_allocated()`` /
  ``max_memory_reserved()`` after ``reset_peak_memory_stats()`` at step start.
- ``num_alloc_retries``: the step's delta of ``memory_stats()["num_alloc_retries"]``, the
  number of times the allocator had to flush its cache and retry a ``cudaMalloc`` (thrash near
  the limit). None with the ``cudaMallocAsync`` allocator, which does not count them.
- ``capacity_bytes()``: what the step can use, i.e. what the caching allocator could hold in
  total: free device memory plus what this process's allocator already reserves, read once
  after the warm-up (so the CUDA context and library handles are already taken out). Not the
  card's total: the context and other processes' memory can never hold a tensor. With a
  ``memory_limit_bytes``, the smaller of the limit and that.

``memory_limit_bytes`` emulates a smaller GPU with ``set_per_process_memory_fraction(limit /
total)``: the allocator then refuses to reserve (cudaMalloc) past the limit and raises
``torch.OutOfMemoryError``, exactly like a full card. The cap is on *reserved* memory (the
allocator's segments), not on the CUDA context: to emulate a card of T bytes pass T minus its
context overhead (``batchprof.gpus.usable_bytes``). The fraction is process-wide; it is set at
the first probe and restored to its previous value by ``close()`` (or when the backend is
garbage-collected).

All device calls go through ``self._cuda`` (``torch.cuda`` unless a test passes a fake), the
hardware seam.
"""

from __future__ import annotations

import contextlib
import gc
import os
import weakref
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError, DeviceUnavailableError
from ..units import format_bytes
from .base import BudgetExceeded, DeviceInfo, MemoryReading, null_context

# cudaErrorMemoryAllocation: a cudaMalloc outside the caching allocator failed (raised as
# torch.AcceleratorError with this error_code).
_CUDA_ERROR_MEMORY_ALLOCATION = 2


def warm_up_libraries(device: torch.device) -> None:
    """Create cuBLAS/cuBLASLt handles and workspaces before the first measured step.

    They are allocated lazily by the first matmul on each thread and stream and then kept for
    the life of the process, so without this the first probe would pay for them inside its
    memory window (and in its first timed step). The backward pass runs on autograd's device
    thread, which gets its own handle: hence forward *and* backward.
    """
    x = torch.ones(64, 64, device=device, requires_grad=True)
    w = torch.ones(64, 64, device=device, requires_grad=True)
    b = torch.ones(64, device=device, requires_grad=True)
    # addmm with a bias takes the cuBLASLt path; its backward runs plain cuBLAS GEMMs.
    torch.nn.functional.linear(x, w, b).sum().backward()


def _restore_fraction(cuda: Any, index: int, fraction: float) -> None:
    cuda.set_per_process_memory_fraction(fraction, index)


class CudaBackend:
    """One CUDA device. Use as a context manager (or call ``close()``) when a memory limit is
    set, so the process-wide memory fraction is restored promptly."""

    keeps_model_between_probes = False  # the caching allocator keeps earlier sizes' blocks

    def __init__(self, device: str | torch.device = "cuda",
                 memory_limit_bytes: int | None = None, *, cuda: Any = None):
        self._cuda = torch.cuda if cuda is None else cuda
        if not self._cuda.is_available():
            raise DeviceUnavailableError(
                f"device {str(device)!r} requested but CUDA is not available "
                f"(torch {torch.__version__}, built for CUDA {torch.version.cuda}); "
                "use --device cpu, or --device auto to fall back")
        if "PYTORCH_NO_CUDA_MEMORY_CACHING" in os.environ:
            # Set to anything (even ""), torch bypasses the caching allocator and its
            # bookkeeping: every statistic would read 0.
            raise DeviceUnavailableError(
                "PYTORCH_NO_CUDA_MEMORY_CACHING is set, which turns off the caching allocator "
                "and with it every torch.cuda memory statistic batchprof reads; unset it")
        try:
            dev = torch.device(device)
        except RuntimeError as err:
            raise ConfigError(f"invalid device {device!r}; expected 'cuda' or 'cuda:N'") from err
        if dev.type != "cuda":
            raise ConfigError(f"CudaBackend needs a CUDA device such as 'cuda:0', got {dev}")
        index = self._cuda.current_device() if dev.index is None else dev.index
        count = self._cuda.device_count()
        if not 0 <= index < count:
            raise DeviceUnavailableError(
                f"CUDA device {index} requested but this process sees {count} device(s) "
                f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r}); "
                f"use cuda:0..cuda:{count - 1}")
        self.index = index
        self.device = torch.device("cuda", index)
        self.name = f"cuda:{index}"
        properties = self._cuda.get_device_properties(index)
        self.total_bytes = int(properties.total_memory)
        self.device_name = str(properties.name)
        get_backend = getattr(self._cuda, "get_allocator_backend", None)
        self.allocator_backend = get_backend() if get_backend is not None else "native"
        if memory_limit_bytes is not None:
            if isinstance(memory_limit_bytes, bool) or not isinstance(memory_limit_bytes, int) \
                    or memory_limit_bytes <= 0:
                raise ConfigError(f"memory limit must be a positive number of bytes, got "
                                  f"{memory_limit_bytes!r}")
            if memory_limit_bytes > self.total_bytes:
                raise ConfigError(
                    f"memory limit {format_bytes(memory_limit_bytes)} is more than {self.name} "
                    f"has ({format_bytes(self.total_bytes)}); a limit can only emulate a "
                    "smaller GPU. Lower --memory-limit or leave it out")
        self.memory_limit_bytes = memory_limit_bytes
        self._prepared = False
        self._usable_bytes: int | None = None
        self._fraction_restorer: weakref.finalize | None = None

    # ---- lifecycle ----------------------------------------------------------------------
    def prepare(self) -> None:
        """Warm cuBLAS up and read the usable memory. Idempotent; run by the first probe."""
        if self._prepared:
            return
        with self._cuda.device(self.index):
            warm_up_libraries(self.device)
            self._cuda.synchronize(self.index)
        free, _total = self._cuda.mem_get_info(self.index)
        self._usable_bytes = int(free) + int(self._cuda.memory_reserved(self.index))
        self._prepared = True

    def start_probe(self, batch_size: int) -> None:
        # measure() calls start_probe, not prepare: warm up here so no caller can forget.
        self.prepare()
        self._apply_memory_limit()

    def start_timing(self, batch_size: int) -> None:
        self.start_probe(batch_size)  # idempotent: warm-up and limit, nothing counted

    def _apply_memory_limit(self) -> None:
        if self.memory_limit_bytes is None or self._fraction_restorer is not None:
            return
        get_fraction = getattr(self._cuda, "get_per_process_memory_fraction", None)
        previous = float(get_fraction(self.index)) if get_fraction is not None else 1.0
        # The allocator's cap is int(fraction * total memory): the limit, to within a byte.
        fraction = min(1.0, self.memory_limit_bytes / self.total_bytes)
        self._cuda.set_per_process_memory_fraction(fraction, self.index)
        self._fraction_restorer = weakref.finalize(self, _restore_fraction, self._cuda,
                                                   self.index, previous)
        self._fraction_restorer.atexit = False  # at exit the fraction no longer matters
        # Segments already cached above the cap would stay usable (the cap is checked only
        # when the allocator asks CUDA for more), so give them back first.
        self._cuda.empty_cache()

    def close(self) -> None:
        """Restore the memory fraction in force before this backend set one. Idempotent."""
        if self._fraction_restorer is not None:
            self._fraction_restorer()
            self._fraction_restorer = None

    def device_info(self) -> DeviceInfo:
        return DeviceInfo(self.name, self.device_name, self.total_bytes)

    def allocator_window(self, mark_prefix: str | None = None, *,
                         pause_collector: bool = False) -> None:
        """Not supported: None. A window could be built on the caching allocator's event
        record (``torch.cuda.memory._record_memory_history``, marks from its
        ``record_function`` annotations), but that record is one process-wide ring buffer
        which ``--memory-snapshot`` already owns for a whole probe (a window here would switch
        it off under the snapshot), and the default test run has no GPU to check it on.
        Nothing on CUDA needs the events: ``memory_window``'s ``max_memory_allocated``
        already counts every CUDA tensor, and CUDA calibration fits ``measure()``."""
        return None

    def __enter__(self) -> CudaBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- the Backend protocol -----------------------------------------------------------
    def capacity_bytes(self) -> int | None:
        self.prepare()
        assert self._usable_bytes is not None  # set by prepare()
        if self.memory_limit_bytes is None:
            return self._usable_bytes
        return min(self.memory_limit_bytes, self._usable_bytes)

    def budget_guard(self, resident: Iterable[torch.Tensor]) -> contextlib.AbstractContextManager:
        # The allocator itself enforces the limit (the memory fraction): nothing to add.
        return null_context()

    @contextlib.contextmanager
    def memory_window(self, resident: Iterable[torch.Tensor]) -> Iterator[MemoryReading]:
        # `resident` is not needed: the allocator already counts every live CUDA tensor.
        reading = MemoryReading(resident_bytes=int(self._cuda.memory_allocated(self.index)))
        retries_before = self._alloc_retries()
        self._cuda.reset_peak_memory_stats(self.index)
        yield reading
        reading.peak_allocated_bytes = int(self._cuda.max_memory_allocated(self.index))
        reading.peak_reserved_bytes = int(self._cuda.max_memory_reserved(self.index))
        retries_after = self._alloc_retries()
        if retries_before is not None and retries_after is not None:
            reading.num_alloc_retries = retries_after - retries_before
        limit = self.memory_limit_bytes
        if limit is not None and reading.peak_reserved_bytes > limit:
            # Only reachable when segments were reserved before the fraction took effect
            # (e.g. by another backend in this process); the verdict must still be the limit's.
            raise BudgetExceeded(
                f"step reserved {format_bytes(reading.peak_reserved_bytes)} on {self.name}, "
                f"above the {format_bytes(limit)} memory limit")

    def _alloc_retries(self) -> int | None:
        if self.allocator_backend != "native":
            return None  # cudaMallocAsync reports 0 for counters it does not keep
        value = self._cuda.memory_stats(self.index).get("num_alloc_retries")
        return None if value is None else int(value)

    def time_step(self, step: Callable[[], object]) -> float:
        """The step's duration on the device, from CUDA events on the current stream.

        The device is synchronized first so the start event fires when this step's first
        work is queued, not when earlier work drains; the end event is waited for, so the
        time covers every kernel the step launched on this stream (and any CPU gaps between
        them). Work the step puts on other streams counts only if it joins this stream.
        """
        with self._cuda.device(self.index):
            self._cuda.synchronize(self.index)
            stream = self._cuda.current_stream(self.index)
            start = self._cuda.Event(enable_timing=True)
            end = self._cuda.Event(enable_timing=True)
            start.record(stream)
            step()
            end.record(stream)
            end.synchronize()
            return start.elapsed_time(end) / 1e3  # elapsed_time is in milliseconds

    def cleanup(self) -> None:
        """Release the probe's memory: collect cycles, then hand cached segments back to CUDA
        so the next probe starts from the same reserved memory. Call it after leaving any
        ``except`` block (a live traceback still pins the step's tensors)."""
        gc.collect()
        with self._cuda.device(self.index):
            self._cuda.empty_cache()

    def is_oom(self, exc: BaseException) -> bool:
        if isinstance(exc, torch.OutOfMemoryError):  # the caching allocator's OOM
            return True
        # A cudaMalloc outside the allocator (a library, a custom kernel) that failed.
        accelerator_error = getattr(torch, "AcceleratorError", None)
        if accelerator_error is not None and isinstance(exc, accelerator_error):
            return getattr(exc, "error_code", None) == _CUDA_ERROR_MEMORY_ALLOCATION
        # cuBLAS reports a failed allocation of its own as a status in a plain RuntimeError;
        # no type exists for it, so its status name is the signal (matched here only).
        return isinstance(exc, RuntimeError) and "CUBLAS_STATUS_ALLOC_FAILED" in str(exc)


@contextlib.contextmanager
def cuda_allocator_history(path: Path, max_entries: int) -> Iterator[None]:
    """Record the caching allocator's history (every alloc/free with its Python stack) inside
    the block; dump it as a memory_viz pickle to ``path`` when the block exits normally.
    Recording is always switched off. Raises DeviceUnavailableError without CUDA or with a
    torch that cannot record it."""
    if not torch.cuda.is_available():
        raise DeviceUnavailableError("a CUDA memory snapshot needs a CUDA device and none is "
                                     "available; record the CPU timeline with device='cpu'")
    memory = torch.cuda.memory
    if not hasattr(memory, "_record_memory_history") or not hasattr(memory, "_dump_snapshot"):
        raise DeviceUnavailableError(
            f"torch {torch.__version__} cannot record CUDA allocator history "
            "(torch.cuda.memory._record_memory_history); upgrade torch to 2.1 or newer")
    # stacks="python": C++ frames make the dump take minutes (symbolization) for little gain.
    memory._record_memory_history(enabled="all", context="all", stacks="python",
                                  max_entries=max_entries)
    try:
        yield
        memory._dump_snapshot(str(path))
    finally:
        memory._record_memory_history(enabled=None)
