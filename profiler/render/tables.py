"""Turn results into rich renderables. No computation here, only presentation."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from batchprof.records.measurement import Measurement
from batchprof.records.step_times import StepTimes
from batchprof.units import format_bytes, format_duration


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
    table.add_row("step time (median)", format_duration(median))
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
    for note in m.notes:
        table.add_row("note", note)
    return table


def ceilings_table(result: Any) -> Any:
    """One row per probe: peak rate (from the best time), size run, and the repeats' spread."""
    from rich.table import Table

    from batchprof.units import format_bytes

    n_threads = result.num_threads
    threads = f", {n_threads} thread{'s' if n_threads != 1 else ''}" if n_threads else ""
    table = Table(title=f"ceilings of {result.device} ({result.device_name}{threads}) "
                        f"via {result.method}")
    table.add_column("probe", style="bold")
    table.add_column("peak", justify="right")
    table.add_column("size", justify="right")
    table.add_column("best time", justify="right")
    table.add_column("median time", justify="right")
    table.add_column("spread (IQR / median)", justify="right")

    def spread(key: str) -> tuple[str, str, str]:
        # The peak comes from the best time; a large spread says the machine was busy.
        times = StepTimes(result.raw_times_s[key])
        best, median, rel = min(times.times_s), times.median_s, times.relative_spread
        return (f"{best * 1e3:.2f} ms", f"{median * 1e3:.2f} ms",
                "n/a" if rel is None else f"{rel:.0%}")

    array = format_bytes(result.sizes["stream_bytes_per_array"])
    for probe, gbps in result.bandwidth_gbps.items():
        arrays = 2 if probe == "copy" else 3
        table.add_row(f"{probe} bandwidth", f"{gbps:.1f} GB/s", f"{arrays} x {array}",
                      *spread(probe))
    for dtype, flops in result.flops_per_s.items():
        n = result.sizes[f"matmul_n_{dtype}"]
        table.add_row(f"matmul {dtype}", f"{flops / 1e9:.1f} GFLOP/s", f"{n}^3",
                      *spread(f"matmul_{dtype}"))
    return table


def probe_line(n: int, m: Any) -> str:
    from batchprof.units import format_bytes

    if m.feasible:
        rate = m.samples_per_s
        spread = m.step_time_iqr_fraction
        speed = "n/a" if rate is None else f"{rate:,.1f} samples/s"
        if spread is not None:
            speed += f" (spread {spread:.0%})"
        verdict = "[green]fits[/]"
    else:
        reason = (m.reason or "does not fit").split(":", 1)[0]
        speed, verdict = reason, "[red]OOM [/]"
    return (f"  probe {n:>2}  batch {m.batch_size:>6}  {verdict}  "
            f"peak {format_bytes(m.peak_allocated_bytes):>11}  {speed}")


def summary_table(result: Any) -> Any:
    from rich.table import Table

    from batchprof.units import format_bytes

    def or_na(value: Any) -> str:
        return "n/a" if value is None else str(value)

    knee = result.knee
    title = f"{result.workload} on {result.device}" + (" (partial)" if result.interrupted else "")
    table = Table(title=title, show_header=False)
    table.add_column("figure", style="bold")
    table.add_column("value")
    budget = result.capacity_bytes
    table.add_row("memory budget", "none" if budget is None else format_bytes(budget))
    table.add_row("max feasible batch", or_na(result.max_batch))
    alpha = result.spec.alpha if result.spec is not None else result.options.get("alpha")
    knee_text = or_na(result.knee_batch)
    if knee is not None and knee.knee_batch is not None:
        share = "alpha" if alpha is None else f"{alpha:.0%}"
        confidence = knee.confidence
        if confidence == "ambiguous" and knee.knee_interval is not None:
            confidence += f", anywhere in {knee.knee_interval[0]}..{knee.knee_interval[1]}"
        knee_text += (f" (>= {share} of best measured; {or_na(knee.knee_batch_95)} for 95%; "
                      f"confidence {confidence})")
    table.add_row("throughput knee", knee_text)
    if knee is not None and knee.best_measured_samples_per_s:
        best = f"{knee.best_measured_samples_per_s:,.1f} samples/s"
        tokens = result.tokens_per_s(knee.best_measured_samples_per_s)
        if tokens is not None:
            best += f" ({tokens:,.0f} tokens/s)"
        table.add_row("best throughput", f"{best} measured at batch {knee.best_measured_batch}")
    elif knee is not None and knee.max_samples_per_s:
        table.add_row("best throughput", f"{knee.max_samples_per_s:,.1f} samples/s (fitted)")
    if knee is not None and knee.throughput_falls and knee.peak_batch is not None:
        table.add_row("throughput falls", f"above batch {knee.peak_batch}")
    if knee is not None and knee.rounds is not None:
        table.add_row("knee sweep", f"{knee.rounds} round(s)"
                      + ("; stopped by the time budget" if knee.budget_ended else ""))
    if result.noise_scale is not None:  # issue 18
        from batchprof.noise.text import noise_fact

        table.add_row("noise scale (critical batch)", noise_fact(result.noise_scale))
    table.add_row("recommended batch", or_na(result.recommended_batch))
    table.add_row("probes used", str(len(result.probes)))
    table.add_row("time spent", format_duration(result.elapsed_s))
    return table


def noise_console_lines(result: Any) -> list[str]:
    """For ``run``: the reading beside the knee and max batch, then the details (none when the
    run did not estimate the noise scale)."""
    from batchprof.noise.text import detail_lines, reading_line

    if result.noise_scale is None:
        return []
    return [f"[bold]reading:[/] {reading_line(result.knee_batch, result.noise_scale, result.max_batch)}",
            *(f"  {line}" for line in detail_lines(result.noise_scale))]


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
