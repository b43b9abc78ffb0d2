"""Device backends behind one protocol. ``make_backend`` is the only factory."""

from __future__ import annotations

import re

import torch

from ..errors import ConfigError, DeviceUnavailableError
from .base import (
    AllocatorEvent,
    AllocatorTimeline,
    AllocatorWindow,
    Backend,
    BudgetExceeded,
    DeviceInfo,
    MarkedSpan,
    MemoryReading,
    unique_storage_bytes,
)
from .cpu import CpuBackend, cpu_memory_profile, cpu_model_name, quiet_stderr
from .cuda import cuda_allocator_history

# Code outside this package imports these names from here, never a backend's module (the layout
# test checks): the protocol, its records and the factory are the seam.
__all__ = ["AllocatorEvent", "AllocatorTimeline", "AllocatorWindow", "Backend", "BudgetExceeded",
           "CpuBackend", "DeviceInfo", "MarkedSpan", "MemoryReading", "cpu_memory_profile",
           "cpu_model_name", "cuda_allocator_history",
           "device_notice", "make_backend", "quiet_stderr", "resolve_device",
           "unique_storage_bytes"]

_CUDA_INDEX = re.compile(r"cuda:[0-9]+", re.ASCII)
CPU_FALLBACK_NOTICE = "no CUDA device found; running on the CPU"


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when CUDA is available, else ``cpu``; validates the name."""
    if not isinstance(device, str):
        raise ConfigError(f"device must be a string such as 'cpu', 'cuda' or 'auto', got {device!r}")
    dev = device.strip().lower()
    if dev == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if dev == "cpu" or dev == "cuda" or _CUDA_INDEX.fullmatch(dev):
        return dev
    raise ConfigError(f"unknown device {device!r}; expected 'auto', 'cpu', 'cuda' or 'cuda:N' "
                      "with N a device index such as 0")


def device_notice(requested: str, resolved: str) -> str | None:
    """The one-line notice for the CLI when ``auto`` fell back to the CPU; None otherwise."""
    if requested.strip().lower() == "auto" and resolved == "cpu":
        return CPU_FALLBACK_NOTICE
    return None


def make_backend(device: str = "cpu", memory_limit_bytes: int | None = None) -> Backend:
    """Build the backend for ``device`` ('cpu', 'cuda', 'cuda:N' or 'auto')."""
    dev = resolve_device(device)
    if dev == "cpu":
        return CpuBackend(memory_limit_bytes)
    if not torch.cuda.is_available():
        raise DeviceUnavailableError(
            f"device {device!r} requested but CUDA is not available on this machine "
            f"(torch {torch.__version__}); use --device cpu, or --device auto to fall back"
        )
    from .cuda import CudaBackend  # noqa: PLC0415 - only on machines with CUDA

    return CudaBackend(dev, memory_limit_bytes)
