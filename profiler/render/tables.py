"""Turn results into rich renderables. No computation here, only presentation."""

from __future__ import annotations

from rich.table import Table

from batchprof.records.measurement import Measurement
from batchprof.units import format_bytes


def fmt_float(value: float | None, fmt: str = "{:.1f}") -> str:
    return "n/a" if value is None else fmt.format(value)


def measurement_table(m: Measurement) -> Table:
    table = Table(title=f"{m.workload} @ batch {m.batch_size} on {m.device}", show_header=False)
    table.add_column("figure", style="bold")
    table.add_column("value", justify="right")
    table.add_row("feasible", "yes" if m.feasible else f"no ({m.reason})")
    table.add_row("memory limit", format_bytes(m.memory_limit_bytes))
    table.add_row("resident at step start", format_bytes(m.resident_bytes))
    table.add_row("peak allocated", format_bytes(m.peak_allocated_bytes))
    table.add_row("peak reserved", format_bytes(m.peak_reserved_bytes))
    table.add_row("activations (saved for backward)", format_bytes(m.activation_bytes))
    if m.num_alloc_retries is not None:
        table.add_row("allocator retries", str(m.num_alloc_retries))
    median = m.step_time_median_s
    table.add_row("step time (median)", fmt_float(median * 1e3 if median else None, "{:.2f} ms"))
    frac = m.step_time_iqr_fraction
    table.add_row("spread (IQR / median)",
                  "n/a" if frac is None else f"{frac:.0%}" + ("  noisy" if m.noisy else ""))
    table.add_row("throughput", fmt_float(m.samples_per_s, "{:.1f} samples/s"))
    table.add_row("timed steps", str(len(m.step_times_s)))
    for s in m.samples:
        if s.unit == "B":
            value = f"{format_bytes(s.mean)} / {format_bytes(s.max)}"
        else:
            value = f"{fmt_float(s.mean)} / {fmt_float(s.max)} {s.unit}"
        table.add_row(f"{s.name} (mean / max)", value)
    return table
