"""``ProfileResult.to_frame()``: one row per batch size, tidy and numeric.

Indexed by ``batch_size`` (increasing), one row for each size probed, fits or not. Columns:

- what fit: ``feasible`` (bool), ``runs``; flags ``is_max``, ``is_knee``, ``is_knee_95``,
  ``is_recommended`` (bool);
- memory, measured beside predicted: ``peak_allocated_bytes``,
  ``predicted_peak_allocated_bytes``, ``prediction_error_fraction`` ((predicted - measured) /
  measured), ``peak_reserved_bytes``, ``activation_bytes``, ``resident_bytes`` (nullable Int64);
- time: ``step_time_median_s``, ``step_time_iqr_fraction``, ``timed_steps``, ``samples_per_s``,
  ``fitted_samples_per_s`` (the knee's monotone fit), ``share_of_best`` (float64);
- with a data set size: ``steps_per_epoch``, ``epoch_time_s``;
- when the run gathered them: each sampled metric's ``<name>_mean`` / ``_std`` / ``_max`` over
  the timed window (``cpu_pct_mean``, ``kernel_busy_pct_mean``...), and the roofline figures
  (``achieved_flops_per_s``, ``mfu_pct``, ``arithmetic_intensity_flop_per_byte``, ``bound``...).

A column a run could not fill at all (no sampler, no roofline) is left out rather than shipped
as all-missing; a figure missing at one size is <NA>/NaN there, never 0.
"""

from __future__ import annotations

import statistics
from typing import TYPE_CHECKING, Any

from batchprof.records.measurement import Measurement
from batchprof.records.result import ProfileResult

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

BYTE_COLUMNS = ("peak_allocated_bytes", "predicted_peak_allocated_bytes", "peak_reserved_bytes",
                "activation_bytes", "resident_bytes")
INT_COLUMNS = ("runs", "timed_steps", "steps_per_epoch")
FLAG_COLUMNS = ("feasible", "is_max", "is_knee", "is_knee_95", "is_recommended")
# The RooflinePoint figures a probe may carry (roofline.efficiency); ``bound`` is a label.
ROOFLINE_COLUMNS = ("flops_per_step", "bytes_per_step", "achieved_flops_per_s", "mfu_pct",
                    "mfu_spec_pct", "arithmetic_intensity_flop_per_byte",
                    "ridge_point_flop_per_byte", "roofline_step_time_s", "bound")
OPTIONAL_PREFIXES = ROOFLINE_COLUMNS


def _latest(probes: list[Measurement]) -> Measurement | None:
    fit = [m for m in probes if m.feasible]
    return fit[-1] if fit else None


def _first_present(probes: list[Measurement], attr: str) -> Any:
    values = [getattr(m, attr) for m in probes if getattr(m, attr) is not None]
    return max(values) if values else None


def _sample_figures(m: Measurement | None) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for s in (m.samples if m is not None else ()):
        present = [v for v in s.values if v is not None]
        out[f"{s.name}_mean"] = s.mean
        out[f"{s.name}_std"] = statistics.pstdev(present) if len(present) >= 2 else None
        out[f"{s.name}_max"] = s.max
    return out


def batch_rows(result: ProfileResult) -> list[dict[str, Any]]:
    """The rows of :func:`result_frame` as plain dicts (no pandas), increasing batch size."""
    fitted = dict(result.knee.fitted) if result.knee else {}
    # share of best: the sweep's measured throughput against the best measured one, the
    # figures the knee rule read (a fitted value is in its own, labelled column)
    sweep = {b: rate for b, rate, _ in result.knee.measured} if result.knee else {}
    best = result.knee.best_measured_samples_per_s if result.knee else None
    by_size: dict[int, list[Measurement]] = {}
    for m in result.probes:
        by_size.setdefault(m.batch_size, []).append(m)
    rows = []
    for p in result.points():
        probes = by_size[p.batch_size]
        latest = _latest(probes)
        peak = p.peak_allocated_bytes
        predicted = _first_present(probes, "predicted_peak_allocated_bytes")
        fit = fitted.get(p.batch_size)
        median = p.step_time_median_s
        row: dict[str, Any] = {
            "batch_size": p.batch_size, "feasible": p.feasible, "runs": p.runs,
            "is_max": p.batch_size == result.max_batch,
            "is_knee": p.batch_size == result.knee_batch,
            "is_knee_95": p.batch_size == result.knee_batch_95,
            "is_recommended": p.batch_size == result.recommended_batch,
            "peak_allocated_bytes": peak,
            "predicted_peak_allocated_bytes": predicted,
            "prediction_error_fraction": (predicted - peak) / peak
            if predicted is not None and peak else None,
            "peak_reserved_bytes": _first_present(probes, "peak_reserved_bytes"),
            "activation_bytes": p.activation_bytes,
            "resident_bytes": _first_present(probes, "resident_bytes"),
            "step_time_median_s": median, "step_time_iqr_fraction": p.step_time_iqr_fraction,
            "timed_steps": len(p.step_times_s), "samples_per_s": p.samples_per_s,
            "tokens_per_s": result.tokens_per_s(p.samples_per_s),
            "sweep_samples_per_s": sweep.get(p.batch_size),
            "fitted_samples_per_s": fit,
            "share_of_best": (sweep[p.batch_size] / best
                              if p.batch_size in sweep and best else None),
        }
        if result.dataset_size is not None:
            steps = result.steps_per_epoch(p.batch_size)
            row["steps_per_epoch"] = steps
            # the probe's own median step time, else the sweep's (a memory-only probe of the
            # max search has none: the sweep timed that size)
            step_s = median or (p.batch_size / sweep[p.batch_size]
                                if sweep.get(p.batch_size) else None)
            row["epoch_time_s"] = steps * step_s if steps is not None and step_s else None
        row.update(_sample_figures(latest))
        point = latest.roofline if latest is not None else None
        for key in ROOFLINE_COLUMNS:
            row[key] = getattr(point, key) if point is not None else None
        rows.append(row)
    return rows


def result_frame(result: ProfileResult) -> pd.DataFrame:
    """One row per batch size probed, indexed by batch size; see the module docstring."""
    import pandas as pd

    rows = batch_rows(result)
    frame = pd.DataFrame(rows)
    if frame.empty:
        frame = pd.DataFrame(columns=["batch_size", *FLAG_COLUMNS, *BYTE_COLUMNS])
    # Optional figures the run never produced: left out, not a column of nothing.
    optional = [c for c in frame.columns if c.startswith(OPTIONAL_PREFIXES)
                or c.endswith(("_mean", "_std", "_max"))]
    frame = frame.drop(columns=[c for c in optional if frame[c].isna().all()])
    for col in frame.columns:
        if col in FLAG_COLUMNS:
            frame[col] = frame[col].astype(bool)
        elif col in BYTE_COLUMNS or col in INT_COLUMNS or col == "batch_size":
            frame[col] = frame[col].astype("Int64")
        elif col == "bound":
            frame[col] = frame[col].astype("string")
        else:
            frame[col] = pd.to_numeric(frame[col], errors="coerce").astype("float64")
    return frame.set_index("batch_size")


def probes_frame(result: ProfileResult) -> pd.DataFrame:
    """One row per probe, in run order (every Measurement's flat row)."""
    import pandas as pd

    return pd.DataFrame([{"probe": i + 1, **m.to_row()} for i, m in enumerate(result.probes)])
