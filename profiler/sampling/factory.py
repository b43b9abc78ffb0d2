"""make_sampler: a sampler by kind."""

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


def make_sampler(kind: str = "auto", *, device_index: int = 0, interval_s: float = DEFAULT_INTERVAL_S,
                 clock: Clock = time.perf_counter, nvml_module: Any = None) -> BackgroundSampler:
    """Build a sampler (not started; use it as a context manager).

    ``kind``: ``"nvml"`` (GPU ``device_index``, a CUDA ordinal mapped through
    ``CUDA_VISIBLE_DEVICES``; raises SamplerUnavailable with the reason when NVML cannot
    serve it), ``"psutil"`` (this process on the CPU), ``"none"`` (NullSampler), or
    ``"auto"``: NVML when it answers, else psutil with ``fallback_reason`` saying why.
    ``nvml_module`` replaces ``pynvml`` (tests pass a fake).
    Raises ValueError for an unknown kind.
    """
    if kind not in SAMPLER_KINDS:
        raise ValueError(f"unknown sampler kind {kind!r}; expected one of {', '.join(SAMPLER_KINDS)}")
    if kind == "none":
        return NullSampler(interval_s, clock=clock)
    if kind == "psutil":
        return PsutilSampler(interval_s, clock=clock)
    from batchprof.sampling import libnvml, nvml

    ok, reason = libnvml.availability(device_index, nvml_module=nvml_module)
    if ok:
        return nvml.NvmlSampler(device_index, interval_s, clock=clock, nvml_module=nvml_module)
    if kind == "nvml":
        raise SamplerUnavailable(reason)
    sampler = PsutilSampler(interval_s, clock=clock)
    sampler.fallback_reason = f"NVML sampler unavailable ({reason}); sampling the CPU with psutil"
    return sampler
