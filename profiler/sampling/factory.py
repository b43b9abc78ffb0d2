"""make_sampler: a sampler by kind; device_sampler: the one for a run on a device.

The "auto" policy lives here only: on a CUDA device, NVML for that device's ordinal when NVML
answers, else psutil with the reason; on the CPU, psutil. The CLI, the pytest fixture and
``batchprof doctor`` all ask these functions rather than deciding for themselves."""

from __future__ import annotations

import time
from typing import Any

from batchprof.sampling.base import (
    DEFAULT_INTERVAL_S,
    SAMPLER_KINDS,
    BackgroundSampler,
    Clock,
    NullSampler,
    SamplerUnavailable,
)
from batchprof.sampling.psutil import PsutilSampler


def cuda_ordinal(device: str) -> int:
    """The CUDA ordinal a resolved device name means: N for ``"cuda:N"``, else 0 (``"cuda"``,
    the current default; ``"cpu"``, where no GPU is sampled)."""
    return int(device.split(":", 1)[1]) if device.startswith("cuda:") else 0


def auto_kind(device_index: int = 0, *, nvml_module: Any = None) -> tuple[str, str]:
    """What ``"auto"`` picks for CUDA ordinal ``device_index``: ``("nvml", reason)`` when NVML
    answers for it, else ``("psutil", reason)``; ``reason`` names the GPU NVML samples, or
    says why it cannot."""
    from batchprof.sampling import libnvml

    ok, reason = libnvml.availability(device_index, nvml_module=nvml_module)
    return ("nvml" if ok else "psutil"), reason


def make_sampler(kind: str = "auto", *, device_index: int = 0, interval_s: float = DEFAULT_INTERVAL_S,
                 clock: Clock = time.perf_counter, nvml_module: Any = None) -> BackgroundSampler:
    """Build a sampler (not started; use it as a context manager).

    ``kind``: ``"nvml"`` (GPU ``device_index``, a CUDA ordinal mapped through
    ``CUDA_VISIBLE_DEVICES``; raises SamplerUnavailable with the reason when NVML cannot
    serve it), ``"psutil"`` (this process on the CPU), ``"none"`` (NullSampler), or
    ``"auto"``: NVML when it answers (:func:`auto_kind`), else psutil with
    ``fallback_reason`` saying why. ``nvml_module`` replaces ``pynvml`` (tests pass a fake).
    Raises ValueError for an unknown kind.
    """
    if kind not in SAMPLER_KINDS:
        raise ValueError(f"unknown sampler kind {kind!r}; expected one of {', '.join(SAMPLER_KINDS)}")
    if kind == "none":
        return NullSampler(interval_s, clock=clock)
    if kind == "psutil":
        return PsutilSampler(interval_s, clock=clock)
    chosen, reason = auto_kind(device_index, nvml_module=nvml_module)
    if chosen == "nvml":
        from batchprof.sampling import nvml

        return nvml.NvmlSampler(device_index, interval_s, clock=clock, nvml_module=nvml_module)
    if kind == "nvml":
        raise SamplerUnavailable(reason)
    sampler = PsutilSampler(interval_s, clock=clock)
    sampler.fallback_reason = f"NVML sampler unavailable ({reason}); sampling the CPU with psutil"
    return sampler


def device_sampler(kind: str, device: str, *, interval_s: float = DEFAULT_INTERVAL_S,
                   clock: Clock = time.perf_counter, nvml_module: Any = None) -> BackgroundSampler:
    """The sampler for a run on ``device`` (resolved: ``"cpu"``, ``"cuda"``, ``"cuda:N"``):
    ``"auto"`` is NVML on that GPU (psutil, with ``fallback_reason``, when NVML cannot serve
    it) and psutil on the CPU; any other kind as :func:`make_sampler` builds it, for that
    GPU's ordinal. Raises as make_sampler does."""
    if kind == "auto" and not device.startswith("cuda"):
        kind = "psutil"
    return make_sampler(kind, device_index=cuda_ordinal(device), interval_s=interval_s,
                        clock=clock, nvml_module=nvml_module)
