"""Figures for pytest-benchmark's ``benchmark.extra_info``."""

from __future__ import annotations

from typing import Any


# ---- figures for pytest-benchmark ------------------------------------------------------------
def _kernel_busy_pct(measurement: Any) -> float | None:
    series = measurement.sample("kernel_busy_pct")
    return None if series is None else series.mean  # no sampler / no NVML: None, never 0


def extra_info_for(measurement: Any = None, result: Any = None) -> dict[str, Any]:
    """The figures batchprof puts into ``benchmark.extra_info`` (JSON-able; None = n/a)."""
    info: dict[str, Any] = {}
    if measurement is not None:
        info.update(
            workload=measurement.workload,
            batch_size=measurement.batch_size,
            device=measurement.device,
            feasible=measurement.feasible,
            peak_allocated_bytes=measurement.peak_allocated_bytes,
            peak_reserved_bytes=measurement.peak_reserved_bytes,
            activation_bytes=measurement.activation_bytes,
            samples_per_s=measurement.samples_per_s,
            step_time_median_s=measurement.step_time_median_s,
            kernel_busy_pct=_kernel_busy_pct(measurement),
        )
    if result is not None:
        info.update(max_batch=result.max_batch, knee_batch=result.knee_batch,
                    recommended_batch=getattr(result, "recommended_batch", None),
                    profile_probes=len(result.probes))
    return info


def record_extra_info(benchmark: Any, measurement: Any = None, result: Any = None
                      ) -> dict[str, Any]:
    """Put a Measurement's (and/or a ProfileResult's) figures into ``benchmark.extra_info``.

    Returns what was recorded. Keys: workload, batch_size, device, feasible,
    peak_allocated_bytes, peak_reserved_bytes, activation_bytes, samples_per_s,
    step_time_median_s, kernel_busy_pct (None where unavailable); with a result also
    max_batch, knee_batch, recommended_batch, profile_probes.
    """
    info = extra_info_for(measurement, result)
    benchmark.extra_info.update(info)  # update, not assign: pytest-benchmark holds this dict
    return info
