"""``--memory-snapshot``: a record of every allocation during a probe, for a person to inspect.

- CUDA: the caching allocator's history (``torch.cuda.memory._record_memory_history``), dumped
  as a pickle (``_dump_snapshot``) that https://pytorch.org/memory_viz opens: every
  allocation/free with its Python stack, segments, and the OOM if there was one.
- CPU: the memory timeline ``torch.profiler`` exports (``export_memory_timeline``) from a
  session with ``profile_memory``, ``record_shapes`` and ``with_stack``: bytes over time by
  category (parameters, optimizer state, activations, gradients, temporaries). The file's
  suffix picks the format: ``.json`` (``[times_us, [bytes per category]]``), ``.json.gz``,
  ``.raw.json.gz`` (every event), or ``.html`` (a plot; its title quotes torch.cuda's peak
  figures, which read 0 on a CPU run).

Two entry points:

- :func:`snapshot_probe` runs one probe (the max-batch probe, in ``batchprof run``) while
  recording, on either device. This is the one to call.
- :func:`memory_snapshot` is the recording context itself, around any code (the device calls
  are the backends' ``cuda_allocator_history`` and ``cpu_memory_profile``). On the CPU it owns
  a ``torch.profiler`` session, and sessions do not nest: code inside must not start its own
  (the CPU backend's memory window does; :func:`snapshot_probe` handles that).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from batchprof.backends import (
    Backend,
    MemoryReading,
    cpu_memory_profile,
    cuda_allocator_history,
    make_backend,
    resolve_device,
    unique_storage_bytes,
)
from batchprof.errors import ConfigError
from batchprof.records.measurement import Measurement
from batchprof.render.snapshot import export_cpu_timeline
from batchprof.units import parse_bytes
from batchprof.workloads.base import Workload

# Alloc/free events the CUDA ring buffer keeps (older ones are overwritten). A training step
# of a mid-size model makes a few thousand; each entry costs a few KB of host memory.
DEFAULT_MAX_ENTRIES = 100_000


MEMORY_VIZ_URL = "https://pytorch.org/memory_viz"


CPU_SUFFIXES = (".raw.json.gz", ".json.gz", ".json", ".html")


@dataclass(frozen=True)
class MemorySnapshot:
    """Where a snapshot went and how to look at it (``written`` once the file exists)."""

    device: str  # "cuda" or "cpu"
    path: Path
    kind: str  # "cuda-allocator-history" | "torch-profiler-memory-timeline"
    viewer: str  # how a person opens it

    @property
    def written(self) -> bool:
        return self.path.is_file() and self.path.stat().st_size > 0

    def to_dict(self) -> dict[str, Any]:
        return {"device": self.device, "path": str(self.path), "kind": self.kind,
                "viewer": self.viewer}


def snapshot_filename(device: str) -> str:
    """The default file name for ``device`` ("cpu", "cuda", "cuda:N" or "auto")."""
    if resolve_device(device) == "cpu":
        return "memory_timeline.json"
    return "memory_snapshot.pickle"


def _device_type(device: str | torch.device) -> str:
    if isinstance(device, torch.device):
        return device.type
    return "cpu" if resolve_device(device) == "cpu" else "cuda"


@contextlib.contextmanager
def memory_snapshot(device: str | torch.device, path: str | Path, *,
                    max_entries: int = DEFAULT_MAX_ENTRIES) -> Iterator[MemorySnapshot]:
    """Record memory activity inside the ``with`` block and write it to ``path`` on exit.

    The file is written only when the block exits normally (an OOM inside ``measure`` is
    normal exit: measure returns an infeasible Measurement). Recording is always switched off.
    Raises DeviceUnavailableError (no CUDA, or a torch without allocator history),
    ConfigError (a CPU path with an unsupported suffix, ``max_entries`` < 1), TraceError (on
    the CPU, another profiler session ran inside the block and took the events).
    """
    if isinstance(max_entries, bool) or not isinstance(max_entries, int) or max_entries < 1:
        raise ConfigError(f"max_entries must be a positive integer, got {max_entries!r}")
    path = Path(path)
    kind = _device_type(device)
    if kind == "cuda":
        cm = _cuda_history(path, max_entries)
    else:
        cm = _cpu_timeline(path)
    with cm as snapshot:
        yield snapshot


@contextlib.contextmanager
def _cuda_history(path: Path, max_entries: int) -> Iterator[MemorySnapshot]:
    with cuda_allocator_history(path, max_entries):
        path.parent.mkdir(parents=True, exist_ok=True)
        yield MemorySnapshot("cuda", path, "cuda-allocator-history",
                             f"open it at {MEMORY_VIZ_URL}")


def _cpu_suffix(path: Path) -> str:
    name = path.name.lower()
    for suffix in CPU_SUFFIXES:
        if name.endswith(suffix):
            return suffix
    raise ConfigError(f"a CPU memory timeline is written as {', '.join(CPU_SUFFIXES)}; "
                      f"{path.name!r} has none of these suffixes")


@contextlib.contextmanager
def _cpu_timeline(path: Path) -> Iterator[MemorySnapshot]:
    suffix = _cpu_suffix(path)
    with cpu_memory_profile() as prof:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield MemorySnapshot("cpu", path, "torch-profiler-memory-timeline",
                             "a web browser" if suffix == ".html" else "JSON data")
    export_cpu_timeline(prof, path, suffix)


class _TimelineBackend:
    """A CPU backend whose memory window is only the budget guard, so the snapshot's
    profiler session is the only one (peak figures of this probe are not read)."""

    def __init__(self, inner: Backend):
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    @contextlib.contextmanager
    def memory_window(self, resident: Iterable[torch.Tensor]) -> Iterator[MemoryReading]:
        resident = list(resident)
        with self._inner.budget_guard(resident):
            yield MemoryReading(resident_bytes=unique_storage_bytes(resident))


def snapshot_probe(workload: Workload | str, batch_size: int, path: str | Path, *,
                   device: str = "cpu", memory_limit: int | str | None = None,
                   backend: Backend | None = None,
                   max_entries: int = DEFAULT_MAX_ENTRIES) -> tuple[MemorySnapshot, Measurement]:
    """Run one probe of ``workload`` at ``batch_size`` (build, warm-up, one step, one timed
    step) while recording, and write the snapshot to ``path``.

    On CUDA the Measurement is a full one. On the CPU its peak figures are None: the CPU
    backend reads peaks from a profiler session of its own, which cannot run inside the
    snapshot's; use the probe measured without a snapshot for the numbers.
    """
    from batchprof.probe.step import TimingPolicy, measure

    owned = backend is None  # built here, so closed here
    if backend is None:
        limit = parse_bytes(memory_limit) if memory_limit is not None else None
        backend = make_backend(device, limit)
    one_step = TimingPolicy(timed_steps=1, warmup_steps=1, max_timed_steps=1)
    probe_backend = backend if backend.device.type == "cuda" else _TimelineBackend(backend)
    try:
        with memory_snapshot(backend.device, path, max_entries=max_entries) as snapshot:
            m = measure(workload, batch_size, backend=probe_backend, timing=one_step)
    finally:
        if owned:
            backend.close()
    return snapshot, m
