"""Background samplers (psutil on the CPU, NVML on a GPU) with Zeus-style measurement windows.

``pynvml`` is imported only by :mod:`batchprof.sampling.libnvml`."""

from __future__ import annotations

from .base import (
    DEFAULT_INTERVAL_S,
    SAMPLER_KINDS,
    THREAD_NAME_PREFIX,
    BackgroundSampler,
    Metric,
    NullSampler,
    Sampler,
    SamplerUnavailable,
)
from .factory import device_sampler, make_sampler
from .psutil import PsutilSampler

__all__ = ["BackgroundSampler", "DEFAULT_INTERVAL_S", "Metric", "NullSampler", "PsutilSampler", "SAMPLER_KINDS", "Sampler", "SamplerUnavailable", "THREAD_NAME_PREFIX", "device_sampler", "make_sampler"]
