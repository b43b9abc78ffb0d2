"""Allocator models: replay a trace's alloc/free events and predict peak allocated/reserved bytes.

Two models behind one small protocol (``AllocatorModel``):

- ``CpuAllocatorModel``: exact bytes. The CPU allocator hands out what was asked for and does
  not cache, so allocated == reserved == the running sum of live request sizes.
- ``CudaCachingAllocatorModel``: PyTorch's CUDA caching allocator
  (c10/cuda/CUDACachingAllocator.cpp, native backend) with its default configuration:

  * sizes round up to a multiple of 512 B (kMinBlockSize); a request of 0 bytes never reaches
    the allocator (``allocate(0)`` returns a null pointer) and counts nothing;
  * rounded sizes <= 1 MiB (kSmallSize) use the small pool, larger ones the large pool; a
    block never moves between pools;
  * a cache miss cudaMallocs a new segment: 2 MiB (kSmallBuffer) for small requests, 20 MiB
    (kLargeBuffer) for requests in (1 MiB, 10 MiB), otherwise the size rounded up to 2 MiB
    (kRoundLarge);
  * a hit is best fit: the smallest cached free block of the pool with size >= request, ties
    to the lowest address (the pool is ordered by (size, address));
  * the found block is split, the request taking its front, when the remainder is >= 512 B
    (small pool) or > 1 MiB (large pool); otherwise the whole block is handed out;
  * a freed block merges with free neighbours of its segment;
  * segments are never returned to the driver (no ``empty_cache`` during a step).

  ``allocated_bytes`` counts *block* sizes, i.e. after rounding and including an unsplit
  remainder, because that is what ``torch.cuda.max_memory_allocated()`` reports.
  ``reserved_bytes`` is the sum of segment sizes (``max_memory_reserved()``).

  Not modelled, because they are off by default: ``PYTORCH_CUDA_ALLOC_CONF`` options
  ``max_split_size_mb`` (default unlimited, so the "oversize block" rules never fire),
  ``roundup_power2_divisions``, ``garbage_collection_threshold`` and
  ``expandable_segments:True``; see ``unmodelled_alloc_conf``. Also not modelled: multiple
  streams (one stream is assumed), CUDA graphs' private pools, and the OOM path (when cudaMalloc
  fails the real allocator frees cached segments and retries, so near capacity its reserved
  bytes can be lower than predicted here). Addresses of new segments are assumed to increase;
  they only matter for tie-breaking between equal-sized cached blocks.

CUDA-only fixed terms that are not in a traced event list (cuBLAS workspaces, the context) and the
allocator options this model does not follow live in overheads.py.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Protocol, runtime_checkable

from ..errors import ConfigError
from .events import MemEvent

KiB = 1024
MiB = 1024 * KiB

# c10/cuda/CUDACachingAllocator.cpp constants (names there in parentheses).
MIN_BLOCK_BYTES = 512  # (kMinBlockSize) every size rounds up to a multiple of this
SMALL_SIZE_BYTES = 1 * MiB  # (kSmallSize) largest request served by the small pool
SMALL_BUFFER_BYTES = 2 * MiB  # (kSmallBuffer) small-pool segment size
MIN_LARGE_ALLOC_BYTES = 10 * MiB  # (kMinLargeAlloc) below this, large requests share 20 MiB
LARGE_BUFFER_BYTES = 20 * MiB  # (kLargeBuffer) segment for requests in (1 MiB, 10 MiB)
ROUND_LARGE_BYTES = 2 * MiB  # (kRoundLarge) larger segments round up to this


def round_size(nbytes: int) -> int:
    """Block size the caching allocator uses for a request of ``nbytes`` (> 0) bytes."""
    if nbytes < MIN_BLOCK_BYTES:
        return MIN_BLOCK_BYTES
    return -(-nbytes // MIN_BLOCK_BYTES) * MIN_BLOCK_BYTES


def segment_size(rounded_bytes: int) -> int:
    """Size of the segment cudaMalloc'd when no cached block fits a rounded request."""
    if rounded_bytes <= SMALL_SIZE_BYTES:
        return SMALL_BUFFER_BYTES
    if rounded_bytes < MIN_LARGE_ALLOC_BYTES:
        return LARGE_BUFFER_BYTES
    return -(-rounded_bytes // ROUND_LARGE_BYTES) * ROUND_LARGE_BYTES


@runtime_checkable
class AllocatorModel(Protocol):
    """What ``replay`` drives. Sizes in bytes; peaks are since construction or ``reset_peak``."""

    def malloc(self, storage_id: int, nbytes: int) -> None: ...

    def free(self, storage_id: int) -> None: ...

    def reset_peak(self) -> None:
        """Like ``torch.cuda.reset_peak_memory_stats()``: peaks restart from current values."""
        ...

    @property
    def allocated_bytes(self) -> int: ...

    @property
    def reserved_bytes(self) -> int: ...

    @property
    def peak_allocated_bytes(self) -> int: ...

    @property
    def peak_reserved_bytes(self) -> int: ...


class _PeakTracking:
    """Current and peak counters shared by both models."""

    def __init__(self) -> None:
        self._allocated = 0
        self._reserved = 0
        self._peak_allocated = 0
        self._peak_reserved = 0

    @property
    def allocated_bytes(self) -> int:
        return self._allocated

    @property
    def reserved_bytes(self) -> int:
        return self._reserved

    @property
    def peak_allocated_bytes(self) -> int:
        return self._peak_allocated

    @property
    def peak_reserved_bytes(self) -> int:
        return self._peak_reserved

    def reset_peak(self) -> None:
        self._peak_allocated = self._allocated
        self._peak_reserved = self._reserved

    def _check_new(self, storage_id: int, nbytes: int, live: Mapping[int, Any]) -> None:
        if nbytes < 0:
            raise ValueError(f"storage {storage_id}: nbytes must be >= 0, got {nbytes}")
        if storage_id in live:
            raise ValueError(f"storage {storage_id} allocated twice without a free in between")


class CpuAllocatorModel(_PeakTracking):
    """Exact bytes: allocated == reserved == sum of live request sizes."""

    def __init__(self) -> None:
        super().__init__()
        self._live: dict[int, int] = {}

    def malloc(self, storage_id: int, nbytes: int) -> None:
        self._check_new(storage_id, nbytes, self._live)
        self._live[storage_id] = nbytes
        self._allocated += nbytes
        self._reserved = self._allocated
        if self._allocated > self._peak_allocated:
            self._peak_allocated = self._peak_reserved = self._allocated

    def free(self, storage_id: int) -> None:
        try:
            nbytes = self._live.pop(storage_id)
        except KeyError:
            raise ValueError(f"free of storage {storage_id}, which is not allocated") from None
        self._allocated -= nbytes
        self._reserved = self._allocated


class _Block:
    """A contiguous range of one segment, allocated or cached-free."""

    __slots__ = ("addr", "size", "allocated", "prev", "next", "small")

    def __init__(self, addr: int, size: int, small: bool) -> None:
        self.addr = addr
        self.size = size
        self.allocated = False
        self.prev: _Block | None = None
        self.next: _Block | None = None
        self.small = small


class CudaCachingAllocatorModel(_PeakTracking):
    """PyTorch's CUDA caching allocator, default settings, one stream (see module docstring)."""

    def __init__(self, *, expandable_segments: bool = False) -> None:
        if expandable_segments:
            raise ConfigError(
                "expandable_segments=True is not modelled; predictions assume the default "
                "PYTORCH_CUDA_ALLOC_CONF (expandable_segments:False)"
            )
        super().__init__()
        self._live: dict[int, _Block | None] = {}  # None: a zero-byte storage
        # Cached free blocks per pool, sorted by (size, address) like the C++ std::set.
        self._free_small: list[tuple[int, int, _Block]] = []
        self._free_large: list[tuple[int, int, _Block]] = []
        self._next_addr = 0
        self._segments: list[int] = []

    @property
    def segment_bytes(self) -> tuple[int, ...]:
        """Sizes of the segments cudaMalloc'd so far, in order."""
        return tuple(self._segments)

    def malloc(self, storage_id: int, nbytes: int) -> None:
        self._check_new(storage_id, nbytes, self._live)
        if nbytes == 0:
            self._live[storage_id] = None
            return
        size = round_size(nbytes)
        small = size <= SMALL_SIZE_BYTES
        pool = self._free_small if small else self._free_large
        i = bisect.bisect_left(pool, (size,))
        if i < len(pool):
            block = pool.pop(i)[2]
        else:
            block = self._new_segment(segment_size(size), small)
        remainder = block.size - size
        # should_split(): the large pool keeps remainders of <= 1 MiB inside the handed-out block.
        split = remainder >= MIN_BLOCK_BYTES if small else remainder > SMALL_SIZE_BYTES
        if split:
            rest = _Block(block.addr + size, remainder, small)
            rest.prev, rest.next = block, block.next
            if block.next is not None:
                block.next.prev = rest
            block.next = rest
            block.size = size
            bisect.insort(pool, (rest.size, rest.addr, rest))
        block.allocated = True
        self._live[storage_id] = block
        self._allocated += block.size
        if self._allocated > self._peak_allocated:
            self._peak_allocated = self._allocated

    def free(self, storage_id: int) -> None:
        try:
            block = self._live.pop(storage_id)
        except KeyError:
            raise ValueError(f"free of storage {storage_id}, which is not allocated") from None
        if block is None:
            return
        block.allocated = False
        self._allocated -= block.size
        pool = self._free_small if block.small else self._free_large
        prev, nxt = block.prev, block.next
        if prev is not None and not prev.allocated:
            self._remove_free(pool, prev)
            block.addr = prev.addr
            block.size += prev.size
            block.prev = prev.prev
            if prev.prev is not None:
                prev.prev.next = block
        if nxt is not None and not nxt.allocated:
            self._remove_free(pool, nxt)
            block.size += nxt.size
            block.next = nxt.next
            if nxt.next is not None:
                nxt.next.prev = block
        bisect.insort(pool, (block.size, block.addr, block))

    def _new_segment(self, nbytes: int, small: bool) -> _Block:
        block = _Block(self._next_addr, nbytes, small)
        self._next_addr += nbytes
        self._segments.append(nbytes)
        self._reserved += nbytes
        if self._reserved > self._peak_reserved:
            self._peak_reserved = self._reserved
        return block

    @staticmethod
    def _remove_free(pool: list[tuple[int, int, _Block]], block: _Block) -> None:
        i = bisect.bisect_left(pool, (block.size, block.addr))
        del pool[i]


@dataclass(frozen=True)
class AllocatorPeak:
    """What one replay predicts. Bytes as the allocator counts them (rounded, on CUDA).

    ``peak_event_index`` is the index of the event after which allocated bytes first reached
    the peak, or None when the peak is simply the state at the reset (nothing exceeded it).
    ``live_bytes_by_category_at_peak`` splits the allocated peak by the events' categories.
    """

    peak_allocated_bytes: int
    peak_reserved_bytes: int
    final_allocated_bytes: int
    final_reserved_bytes: int
    peak_event_index: int | None
    live_bytes_by_category_at_peak: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "live_bytes_by_category_at_peak",
                           MappingProxyType(dict(self.live_bytes_by_category_at_peak)))

    def to_dict(self) -> dict[str, Any]:
        return {
            "peak_allocated_bytes": self.peak_allocated_bytes,
            "peak_reserved_bytes": self.peak_reserved_bytes,
            "final_allocated_bytes": self.final_allocated_bytes,
            "final_reserved_bytes": self.final_reserved_bytes,
            "peak_event_index": self.peak_event_index,
            "live_bytes_by_category_at_peak": dict(self.live_bytes_by_category_at_peak),
        }


def replay(
    events: Sequence[MemEvent],
    allocator: AllocatorModel,
    *,
    reset_peak_at: int | None = None,
) -> AllocatorPeak:
    """Feed ``events`` to ``allocator`` in order and report its peaks.

    ``reset_peak_at``: index of the first event of the measured step. Peaks are reset just
    before that event, like ``torch.cuda.reset_peak_memory_stats()`` at step start, so the
    events before it (resident state, a warm-up step) shape the cache without setting the peak.
    None: peaks count from the first event. A fresh allocator is expected; its current state at
    the call is taken as the starting point otherwise.

    Raises ValueError for an inconsistent event list (double allocation, free of an unknown
    storage, unknown kind) or an out-of-range ``reset_peak_at``.
    """
    n = len(events)
    if reset_peak_at is not None and not 0 <= reset_peak_at <= n:
        raise ValueError(f"reset_peak_at must be in [0, {n}], got {reset_peak_at}")
    live: dict[int, tuple[str, int]] = {}  # storage -> (category, bytes the allocator counted)
    by_category: dict[str, int] = {}
    peak = allocator.allocated_bytes
    peak_index: int | None = None
    at_peak: dict[str, int] = {}
    for i, event in enumerate(events):
        if i == reset_peak_at:
            allocator.reset_peak()
            peak, peak_index, at_peak = allocator.allocated_bytes, None, dict(by_category)
        if event.kind == "alloc":
            before = allocator.allocated_bytes
            allocator.malloc(event.storage_id, event.nbytes)
            counted = allocator.allocated_bytes - before
            live[event.storage_id] = (event.category, counted)
            by_category[event.category] = by_category.get(event.category, 0) + counted
            if allocator.allocated_bytes > peak:
                peak, peak_index, at_peak = allocator.allocated_bytes, i, dict(by_category)
        elif event.kind == "free":
            allocator.free(event.storage_id)
            if event.storage_id in live:  # absent only if the allocator came pre-filled
                category, counted = live.pop(event.storage_id)
                by_category[category] -= counted
        else:
            raise ValueError(f"event {i}: kind must be 'alloc' or 'free', got {event.kind!r}")
    if reset_peak_at == n:
        allocator.reset_peak()
        peak_index, at_peak = None, dict(by_category)
    return AllocatorPeak(
        peak_allocated_bytes=allocator.peak_allocated_bytes,
        peak_reserved_bytes=allocator.peak_reserved_bytes,
        final_allocated_bytes=allocator.allocated_bytes,
        final_reserved_bytes=allocator.reserved_bytes,
        peak_event_index=peak_index,
        live_bytes_by_category_at_peak={k: v for k, v in at_peak.items() if v},
    )
