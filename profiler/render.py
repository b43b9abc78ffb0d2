"""Turn results into rich renderables. No computation here, only presentation."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from .types import Measurement
from .units import format_bytes


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


def _compared(metric: str, value: float | None) -> str:
    if value is None:
        return "n/a"
    if metric == "peak_allocated_bytes":
        return format_bytes(value)
    if metric == "samples_per_s":
        return f"{value:,.1f}"
    return f"{value:g}"


def comparison_tables(cmp: Any) -> list[Table]:
    """A batchprof.compare.Comparison, one table per subject: per batch size the peak memory
    and throughput of both runs with the change, then the max batch; regressions marked."""
    tables = []
    for subject in dict.fromkeys(r.subject for r in cmp.rows):
        rows = [r for r in cmp.rows if r.subject == subject]
        table = Table(title=f"{subject}: {cmp.old_source} -> {cmp.new_source}",
                      title_justify="left")
        for name in ("batch", "peak old", "peak new", "change", "samples/s old",
                     "samples/s new", "change", "verdict"):
            table.add_column(name, justify="left" if name == "verdict" else "right")
        by_batch: dict[Any, dict[str, Any]] = {}
        for r in rows:
            by_batch.setdefault(r.batch_size, {})[r.metric] = r
        for batch, metrics in by_batch.items():
            cells = ["max batch" if batch is None else str(batch)]
            for metric in (("max_batch",) if batch is None
                           else ("peak_allocated_bytes", "samples_per_s")):
                r = metrics.get(metric)
                cells += ["n/a"] * 3 if r is None else [
                    _compared(metric, r.old), _compared(metric, r.new),
                    "n/a" if r.change is None else f"{r.change:+.1%}"]
            if batch is None:
                cells += ["", "", ""]
            flagged = [r for r in metrics.values() if r.regression]
            cells.append("[bold red]REGRESSION[/]" if flagged else "")
            table.add_row(*cells)
        tables.append(table)
    return tables
