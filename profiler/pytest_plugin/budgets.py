"""Budgets (peak bytes, activation bytes, samples/s, max batch): pure checks, plain-words failures."""

from __future__ import annotations

from typing import Any

PER_BATCH_BUDGETS = ("max_peak", "max_activation", "min_samples_per_s")


BUDGET_KEYS = (*PER_BATCH_BUDGETS, "min_max_batch")


# ---- budgets --------------------------------------------------------------------------------
def _fmt_bytes(n: int | None) -> str:
    from batchprof.units import format_bytes

    return "n/a" if n is None else f"{format_bytes(n)} ({n} bytes)"


def _budget_bytes(name: str, value: Any) -> int:
    from batchprof.errors import ConfigError
    from batchprof.units import parse_bytes

    try:
        return parse_bytes(value)
    except ConfigError as err:
        raise ConfigError(f"budget {name}={value!r}: {err}") from None


def budget_violations(measurement: Any = None, result: Any = None, *,
                      max_peak: int | str | None = None,
                      max_activation: int | str | None = None,
                      min_samples_per_s: float | None = None,
                      min_max_batch: int | None = None) -> list[str]:
    """Every budget missed, one plain-words line each (empty when all are met).

    Per-batch budgets read ``measurement``; ``min_max_batch`` reads ``result`` (a
    ProfileResult). A bad budget, or one without the figure it needs, raises ConfigError.
    """
    from batchprof.errors import ConfigError
    from batchprof.units import format_bytes

    lines: list[str] = []
    per_batch = {"max_peak": max_peak, "max_activation": max_activation,
                 "min_samples_per_s": min_samples_per_s}
    asked = {k: v for k, v in per_batch.items() if v is not None}
    if asked and measurement is None:
        raise ConfigError(f"budgets {', '.join(asked)} need a measurement at one batch size: "
                          "give batch_size")
    if measurement is not None and asked:
        where = f"at batch {measurement.batch_size} on {measurement.device}"
        if not measurement.feasible:
            limit = measurement.memory_limit_bytes or measurement.capacity_bytes
            budgets = ", ".join(f"{k}={v!r}" for k, v in asked.items())
            return [f"batchprof budget exceeded: workload {measurement.workload!r} ran out of "
                    f"memory {where} (memory limit {format_bytes(limit)}), so {budgets} cannot "
                    f"be met: {measurement.reason}"]
        if max_peak is not None:
            budget = _budget_bytes("max_peak", max_peak)
            peak = measurement.peak_allocated_bytes
            if peak is not None and peak > budget:
                lines.append(f"batchprof budget exceeded: peak allocated {_fmt_bytes(peak)} "
                             f"{where} > max_peak {format_bytes(budget)}")
        if max_activation is not None:
            budget = _budget_bytes("max_activation", max_activation)
            act = measurement.activation_bytes
            if act is not None and act > budget:
                lines.append(f"batchprof budget exceeded: activations saved for backward "
                             f"{_fmt_bytes(act)} {where} > max_activation {format_bytes(budget)}")
        if min_samples_per_s is not None:
            rate = measurement.samples_per_s
            if rate is None or rate < float(min_samples_per_s):
                shown = "n/a" if rate is None else f"{rate:.4g} samples/s"
                lines.append(f"batchprof budget not met: throughput {shown} {where} (median of "
                             f"{len(measurement.step_times_s)} timed steps) < min_samples_per_s "
                             f"{float(min_samples_per_s):.4g}")
    if min_max_batch is not None:
        if result is None:
            raise ConfigError("budget min_max_batch needs a profile() result")
        probes = result.probes
        device = getattr(result, "device", None) or (probes[0].device if probes else "?")
        limit = getattr(result, "memory_limit_bytes", None)
        found = result.max_batch
        if found is None or found < int(min_max_batch):
            shown = "none (no batch size fit)" if found is None else str(found)
            lines.append(f"batchprof budget not met: max feasible batch {shown} on {device} "
                         f"(memory limit {format_bytes(limit)}, {len(probes)} probes) < "
                         f"min_max_batch {int(min_max_batch)}")
    return lines
