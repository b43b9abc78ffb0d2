"""Leak detection: memory a workload keeps from one probe to the next.

After each probe's cleanup nothing of the step should remain, so the bytes in use must come
back to where they were. Each probe records, after cleanup, the process's resident set and the
bytes in use by the C heap (glibc ``mallinfo2``: every CPU tensor's storage is a malloc or an
mmap chunk, counted while live and not after free, unlike RSS, which keeps freed pages) or, on
CUDA, ``torch.cuda.memory_allocated``. A figure that grows probe after probe is a leak (a
workload appending tensors to a global list, a cache keyed by batch): the budget never sees
those bytes, so the max batch it reports is optimistic, and a long run can eat the machine.
"""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Sequence
from typing import Any

from batchprof.records.measurement import Measurement
from batchprof.units import format_bytes

# Growth per probe below this is noise (Python objects, allocator bookkeeping).
NOISE_BYTES = 256 * 1024
# A leak: retained bytes rose at each of the last LEAK_PROBES probes and by LEAK_BYTES in all.
LEAK_PROBES = 3
# 2 MiB: a memory-only probe on a kept model (probe.step.KeptModel) runs one step, not two, so
# a leak of 1 MiB a step grows about 3 MiB over three probes (it was 6 MiB with two steps).
LEAK_BYTES = 2 * 1024**2


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


@functools.lru_cache(maxsize=1)
def _mallinfo2() -> Any:
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = _MallInfo2
    except (OSError, AttributeError):
        return None
    return libc.mallinfo2


def heap_in_use_bytes() -> int | None:
    """Bytes the C heap holds for live allocations (small chunks + mmapped); None off glibc."""
    fn = _mallinfo2()
    if fn is None:
        return None
    info = fn()
    return int(info.uordblks + info.hblkhd)


def rss_bytes() -> int | None:
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except Exception:  # noqa: BLE001 - no psutil or no /proc: the figure is unavailable
        return None


def memory_after_probe(device: Any) -> dict[str, int | None]:
    """The figures a probe records after its cleanup (``Measurement.extra``)."""
    figures: dict[str, int | None] = {"rss_after_bytes": rss_bytes(),
                                      "heap_in_use_after_bytes": heap_in_use_bytes()}
    if getattr(device, "type", None) == "cuda":
        import torch

        figures["cuda_allocated_after_bytes"] = int(torch.cuda.memory_allocated(device))
    return figures


def retained_bytes(m: Measurement) -> int | None:
    """The figure a leak shows in: CUDA allocated bytes on a GPU, C-heap bytes on the CPU."""
    for key in ("cuda_allocated_after_bytes", "heap_in_use_after_bytes"):
        value = m.extra.get(key)
        if value is not None:
            return int(value)
    return None


def find_leak(probes: Sequence[Measurement]) -> str | None:
    """A loud one-line note when memory kept after cleanup grew probe after probe; else None.

    Crashed probes are skipped (their worker was replaced, so its figures restart).
    """
    series = [(m.batch_size, retained_bytes(m)) for m in probes if m.outcome != "crashed"]
    series = [(b, v) for b, v in series if v is not None]
    rises = 0
    for (_, before), (_, after) in zip(series, series[1:], strict=False):
        rises = rises + 1 if after - before > NOISE_BYTES else 0
    if rises < LEAK_PROBES:
        return _same_size_leak(series)
    first = series[-rises - 1][1]
    grown = series[-1][1] - first
    if grown < LEAK_BYTES:
        return _same_size_leak(series)
    return (f"LEAK: memory kept after each probe's cleanup grew {format_bytes(grown)} over the "
            f"last {rises} probes ({format_bytes(first)} -> {format_bytes(series[-1][1])}); the "
            "workload holds tensors between steps (a global list, a cache?). The budget does not "
            "see them, so the max batch is optimistic and a long run will exhaust memory")


def _same_size_leak(series: list[tuple[int, int]]) -> str | None:
    """Two probes at one batch size, the second keeping LEAK_BYTES more than the first."""
    last: dict[int, int] = {}
    for b, value in series:
        if b in last and value - last[b] >= LEAK_BYTES:
            return (f"LEAK: a second probe at batch {b} kept {format_bytes(value - last[b])} "
                    "more after cleanup than the first; the workload holds tensors between "
                    "steps, which the budget does not see")
        last[b] = value
    return None
