"""A ProfileResult as pandas tables (pandas is imported lazily, on first use)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from batchprof.records.result import BatchPoint, ProfileResult
from batchprof.spec import RunSpec, throughput_ladder

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd



# Per-batch figures beyond memory and time, when the run gathered them: the mean of each
# sampled metric over a probe's timed window, and the roofline view.
UTILIZATION_METRICS = ("kernel_busy_pct", "memory_busy_pct", "cpu_pct", "power_w")


# ---------------------------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------------------------
def _row(label: str, p: BatchPoint, result: ProfileResult) -> dict[str, Any]:
    fitted = dict(result.knee.fitted) if result.knee else {}
    best = result.knee.max_samples_per_s if result.knee else None
    fit = fitted.get(p.batch_size)
    median = p.step_time_median_s
    steps = result.steps_per_epoch(p.batch_size)
    row = {
        "row": label, "batch_size": p.batch_size, "feasible": p.feasible, "runs": p.runs,
        "peak_allocated_bytes": p.peak_allocated_bytes, "activation_bytes": p.activation_bytes,
        "step_time_median_s": median, "step_time_iqr_fraction": p.step_time_iqr_fraction,
        "samples_per_s": p.samples_per_s, "fitted_samples_per_s": fit,
        "share_of_best": fit / best if fit is not None and best else None,
    }
    latest = next((m for m in reversed(result.probes)
                   if m.feasible and m.batch_size == p.batch_size), None)
    for key in ("achieved_flops_per_s", "mfu_pct", "mfu_spec_pct",
                "arithmetic_intensity_flop_per_byte", "bound"):
        row[key] = latest.extra.get(key) if latest is not None else None
    for name in UTILIZATION_METRICS:
        sample = latest.sample(name) if latest is not None else None
        row[f"{name}_mean"] = sample.mean if sample is not None else None
    if result.dataset_size is not None:
        row["steps_per_epoch"] = steps
        row["epoch_time_s"] = steps * median if steps is not None and median else None
    return row


def result_frame(result: ProfileResult) -> pd.DataFrame:
    """Max batch, then the throughput ladder (min, powers of two, max), then the knee.

    With ``dataset_size`` N: steps per epoch = ceil(N / batch) and time per epoch =
    steps x median step time, per row. Missing figures are NaN/None, never 0.
    """
    import pandas as pd

    points = {p.batch_size: p for p in result.points()}
    rows = []
    if result.max_batch is not None and result.max_batch in points:
        rows.append(_row("max batch", points[result.max_batch], result))
        if result.ladder:  # the sizes the run timed for the knee
            ladder = list(result.ladder)
        else:  # knee=False: the sizes the ladder would have timed, where they were probed
            spec = result.spec or RunSpec()
            ladder = throughput_ladder(spec.min_batch, result.max_batch, spec.multiple_of)
    else:  # partial run: whatever fit so far
        ladder = [b for b, p in points.items() if p.feasible]
    rows += [_row("ladder", points[b], result) for b in ladder if b in points]
    if result.knee_batch is not None and result.knee_batch in points:
        rows.append(_row("knee", points[result.knee_batch], result))
    columns = list(_row("", BatchPoint(1, True, 1, None, None, ()), result))
    return pd.DataFrame(rows, columns=columns)


def probes_frame(result: ProfileResult) -> pd.DataFrame:
    import pandas as pd

    return pd.DataFrame([{"probe": i + 1, **m.to_row()} for i, m in enumerate(result.probes)])
