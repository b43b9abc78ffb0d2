"""The report's plots: peak memory (measured and predicted), throughput, utilization, roofline.

Each ``draw_*(result)`` returns a bare matplotlib ``Figure`` (Agg, never pyplot: no display
needed, the caller's backend untouched), or None when the run has nothing to show;
``plot_*(result, path)`` saves it to ``path`` (the suffix picks PNG or SVG) and returns the
path, or None without writing.

Conventions (issue 16): batch sizes are integers on every axis (1 2 4 ... on log2 axes, never
2.0 or 2^1); every axis names its unit; titles are shortened to fit the figure (a long
workload name is cut with an ellipsis, the full name is in the report); per-batch sampled
figures are a mean with its spread, one point per batch size, not a line joining noisy
values in batch order; roofline points are coloured by batch size with a colour bar, and only
labels that do not collide are written next to them.
"""

from __future__ import annotations

import math
import os
import statistics
from pathlib import Path
from typing import Any

from batchprof.records.measurement import Measurement
from batchprof.records.result import ProfileResult
from batchprof.records.step_times import quartiles
from batchprof.units import format_bytes

TITLE_CHARS = 60
UTILIZATION_METRICS = ("kernel_busy_pct", "memory_busy_pct", "cpu_pct", "power_w")
UNIT_NAMES = {"%": "percent", "W": "watts", "B": "bytes"}


def _figure(rows: int = 1):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.5 if rows == 1 else 2.6 * rows + 0.8), dpi=100,
                 layout="constrained")
    axes = fig.subplots(rows, 1, squeeze=False)[:, 0]
    return fig, list(axes)


def short(text: str, limit: int = TITLE_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _title(ax: Any, result: ProfileResult, what: str) -> None:
    ax.set_title(f"{short(result.workload, TITLE_CHARS - len(what) - 8)} on {result.device}: "
                 f"{what}", fontsize="medium")


def memory_unit(max_bytes: float) -> tuple[str, int]:
    """The unit that keeps memory axis numbers short: KiB, MiB or GiB."""
    for unit, scale in (("GiB", 1024**3), ("MiB", 1024**2)):
        if max_bytes >= scale:
            return unit, scale
    return "KiB", 1024


def integer_batch_axis(ax: Any, sizes: list[int], log2: bool) -> None:
    """Batch size ticks as plain integers: powers of two on a log2 axis, whole numbers on a
    linear one."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, MaxNLocator, NullLocator

    if log2 and sizes:
        ax.set_xscale("log", base=2)
        lo, hi = min(sizes), max(sizes)
        ticks = [2**k for k in range(int(math.floor(math.log2(lo))),
                                     int(math.ceil(math.log2(hi))) + 1)]
        step = max(1, math.ceil(len(ticks) / 12))
        ax.xaxis.set_major_locator(FixedLocator(ticks[::step]))
        ax.xaxis.set_minor_locator(NullLocator())
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{int(round(x)):d}"))
    ax.set_xlabel("batch size (samples per step)")


def _legend_or_placeholder(ax: Any, empty_text: str) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="best", fontsize="small")
    else:
        ax.text(0.5, 0.5, empty_text, transform=ax.transAxes, ha="center", va="center")


def _save(fig: Any, path: str | os.PathLike) -> Path | None:
    if fig is None:
        return None
    fig.savefig(path)
    return Path(path)


def _latest_feasible(result: ProfileResult) -> list[Measurement]:
    by_size = {m.batch_size: m for m in result.probes if m.feasible}
    return [by_size[b] for b in sorted(by_size)]


# ---- memory ---------------------------------------------------------------------------------
def draw_peak_memory(result: ProfileResult) -> Any:
    """Peak memory per batch size: measured (fits: dots, out of memory: x), predicted where the
    run recorded it, the budget, and the max batch."""
    fig, (ax,) = _figure()
    cap = result.capacity_bytes
    points = result.points()
    predicted = {m.batch_size: m.predicted_peak_allocated_bytes for m in result.probes
                 if m.predicted_peak_allocated_bytes is not None}
    values = [p.peak_allocated_bytes for p in points if p.peak_allocated_bytes is not None]
    unit, scale = memory_unit(max(values + list(predicted.values()) + [cap or 0] or [1]))
    fit = [p for p in points if p.feasible and p.peak_allocated_bytes is not None]
    ax.plot([p.batch_size for p in fit], [p.peak_allocated_bytes / scale for p in fit], "o-",
            color="tab:blue", label="measured peak (fits)")
    if predicted:
        xs = sorted(predicted)
        ax.plot(xs, [predicted[b] / scale for b in xs], "s--", color="tab:orange",
                markersize=4, label="predicted peak")
    failed = [p for p in points if not p.feasible]
    if failed:
        ys = [(p.peak_allocated_bytes if p.peak_allocated_bytes is not None else cap or 0)
              / scale for p in failed]
        ax.plot([p.batch_size for p in failed], ys, "x", color="tab:red", markersize=9, mew=2,
                label="out of memory")
    if cap is not None:
        ax.axhline(cap / scale, color="tab:red", ls="--", lw=1, label=f"budget {format_bytes(cap)}")
    if result.max_batch is not None:
        ax.axvline(result.max_batch, color="tab:green", ls=":", lw=1.5,
                   label=f"max feasible batch {result.max_batch}")
    integer_batch_axis(ax, [p.batch_size for p in points], log2=False)
    ax.set_ylabel(f"peak memory per step ({unit})")
    _title(ax, result, "peak memory")
    ax.grid(alpha=0.3)
    _legend_or_placeholder(ax, "no probe finished")
    return fig


# ---- throughput -----------------------------------------------------------------------------
def draw_throughput(result: ProfileResult) -> Any:
    """Throughput per batch size on a log2 axis: medians with IQR bars, the monotone fit,
    the alpha line, the knee and the max marked."""
    fig, (ax,) = _figure()
    timed = [p for p in result.points() if p.samples_per_s is not None]
    for p in timed:
        rate = p.samples_per_s
        bars = None
        if len(p.step_times) >= 2:  # the step-time quartiles, as throughputs
            q1, _, q3 = quartiles(p.step_times.times_s)
            bars = [[max(0.0, rate - p.batch_size / q3)], [max(0.0, p.batch_size / q1 - rate)]]
        ax.errorbar(p.batch_size, rate, yerr=bars, fmt="o", color="tab:blue", capsize=3)
    if timed:
        ax.plot([], [], "o", color="tab:blue", label="probes (median, IQR of step times)")
    knee = result.knee
    if knee is not None and knee.measured:  # the points the knee rule read, as it read them
        xs, ys, sds = zip(*knee.measured, strict=True)
        ax.errorbar(xs, ys, yerr=[2 * e for e in sds], fmt="s-", color="tab:red", capsize=3,
                    label="knee sweep, measured (drift-corrected; 2 SE)")
    if knee is not None and knee.fitted:
        xs, ys = zip(*knee.fitted, strict=True)
        ax.plot(xs, ys, "--", color="tab:orange", lw=1, label="fitted (smoothing)")
    best = None if knee is None else (knee.best_measured_samples_per_s or knee.max_samples_per_s)
    if knee is not None and best:
        ax.axhline(knee.alpha * best, color="gray", ls="--", lw=1,
                   label=f"{knee.alpha:.0%} of best measured")
    if result.knee_batch is not None:
        ax.axvline(result.knee_batch, color="tab:purple", ls="-.", lw=1.5,
                   label=f"knee {result.knee_batch}")
    if result.max_batch is not None:
        ax.axvline(result.max_batch, color="tab:green", ls=":", lw=1.5,
                   label=f"max feasible {result.max_batch}")
    # ticks at every size with a throughput: the probes' timed ones and the sweep's (the max
    # search's probes are memory-only, so the sweep may be the only timing of a size)
    swept = [b for b, _, _ in knee.measured] if knee is not None else []
    integer_batch_axis(ax, sorted({p.batch_size for p in timed} | set(swept)) or [1], log2=True)
    ax.set_ylabel("throughput (samples / s)")
    ax.set_ylim(bottom=0)
    _title(ax, result, "training throughput")
    ax.grid(alpha=0.3, which="both")
    _legend_or_placeholder(ax, "no batch size fit, so none was timed")
    return fig


# ---- utilization ----------------------------------------------------------------------------
def _series_stats(m: Measurement, name: str) -> tuple[float, float, float, str] | None:
    """(mean, low, high, unit): the mean of one sampled metric over a probe's timed window and
    its interquartile spread (min..max with fewer than four samples)."""
    s = m.sample(name)
    if s is None:
        return None
    present = sorted(v for v in s.values if v is not None)
    if not present:
        return None
    if len(present) >= 4:
        low, _, high = statistics.quantiles(present, n=4, method="inclusive")
    else:
        low, high = present[0], present[-1]
    return statistics.fmean(present), low, high, s.unit


def draw_utilization(result: ProfileResult) -> Any:
    """One panel per sampled metric (its unit on the axis): per batch size the mean over the
    timed steps with the interquartile range as a bar. None when no probe carried samples."""
    probes = _latest_feasible(result)
    panels: dict[str, list[tuple[int, float, float, float]]] = {}
    units: dict[str, str] = {}
    for name in UTILIZATION_METRICS:
        for m in probes:
            stats = _series_stats(m, name)
            if stats is not None:
                mean, low, high, unit = stats
                panels.setdefault(name, []).append((m.batch_size, mean, low, high))
                units[name] = unit
    if not panels:
        return None
    fig, axes = _figure(len(panels))
    for ax, (name, pts) in zip(axes, panels.items(), strict=True):
        xs = [b for b, *_ in pts]
        means = [mean for _, mean, _, _ in pts]
        # The mean can lie outside the quartiles of a skewed sample: a bar never goes negative.
        bars = [[max(0.0, mean - low) for _, mean, low, _ in pts],
                [max(0.0, high - mean) for _, mean, _, high in pts]]
        ax.errorbar(xs, means, yerr=bars, fmt="o", color="tab:blue", capsize=3,
                    label="mean over the timed steps, bar: interquartile range")
        unit = units[name]
        ax.set_ylabel(f"{name.removesuffix('_pct').removesuffix('_w').replace('_', ' ')} ({unit})")
        if unit == "%":
            ax.set_ylim(bottom=0)
        integer_batch_axis(ax, xs, log2=True)
        ax.grid(alpha=0.3, which="both")
        ax.legend(loc="best", fontsize="small")
    _title(axes[0], result, "utilization per batch size")
    return fig


# ---- roofline -------------------------------------------------------------------------------
def non_overlapping(points: list[tuple[float, float]], min_gap: float) -> list[int]:
    """Indices of points to label so no two labels are closer than ``min_gap`` (in the
    coordinates given), the first and the last always kept."""
    if not points:
        return []
    keep = [0]
    for i in range(1, len(points)):
        x, y = points[i]
        if all(math.hypot(x - points[j][0], y - points[j][1]) >= min_gap for j in keep):
            keep.append(i)
    last = len(points) - 1
    if last not in keep:
        x, y = points[last]
        keep = [j for j in keep if math.hypot(x - points[j][0], y - points[j][1]) >= min_gap]
        keep.append(last)
    return sorted(keep)


def draw_roofline(result: ProfileResult) -> Any:
    """Achieved FLOP/s against arithmetic intensity per batch size under the measured roofs;
    None when the run has no roofline figures."""
    from matplotlib.colors import LogNorm

    on_roof = [(m.batch_size, m.roofline) for m in _latest_feasible(result)
               if m.roofline is not None and m.roofline.achieved_flops_per_s
               and m.roofline.arithmetic_intensity_flop_per_byte]
    if not on_roof:
        return None
    peak_flops = on_roof[0][1].peak_flops_per_s
    peak_bw = on_roof[0][1].peak_bandwidth_gbps * 1e9
    fig, (ax,) = _figure()
    xs = [p.arithmetic_intensity_flop_per_byte for _, p in on_roof]
    ys = [p.achieved_flops_per_s / 1e9 for _, p in on_roof]
    ridge = peak_flops / peak_bw
    lo, hi = min(xs + [ridge]) / 4, max(xs + [ridge]) * 4
    grid = [lo * (hi / lo) ** (i / 99) for i in range(100)]
    ax.plot(grid, [min(peak_flops, x * peak_bw) / 1e9 for x in grid], "-", color="black",
            label=f"roof: {peak_bw / 1e9:.1f} GB/s, {peak_flops / 1e9:.1f} GFLOP/s")
    sizes = [b for b, _ in on_roof]
    dots = ax.scatter(xs, ys, c=sizes, cmap="viridis", zorder=3,
                      norm=LogNorm(vmin=min(sizes), vmax=max(sizes) if max(sizes) > min(sizes)
                                   else min(sizes) + 1),
                      label="achieved (one point per batch size)")
    bar = fig.colorbar(dots, ax=ax)
    bar.set_label("batch size")
    logs = [(math.log10(x), math.log10(y)) for x, y in zip(xs, ys, strict=True)]
    span = max(math.log10(hi / lo), 1e-9)
    for i in non_overlapping(logs, min_gap=span / 25):
        ax.annotate(str(sizes[i]), (xs[i], ys[i]), textcoords="offset points", xytext=(5, -10),
                    fontsize="small")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (FLOP per byte moved)")
    ax.set_ylabel("achieved compute (GFLOP/s)")
    _title(ax, result, "roofline")
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="best", fontsize="small")
    return fig


# ---- to files -------------------------------------------------------------------------------
def plot_peak_memory(result: ProfileResult, path: str | os.PathLike) -> Path:
    return _save(draw_peak_memory(result), path)  # type: ignore[return-value]


def plot_throughput(result: ProfileResult, path: str | os.PathLike) -> Path:
    return _save(draw_throughput(result), path)  # type: ignore[return-value]


def plot_utilization(result: ProfileResult, path: str | os.PathLike) -> Path | None:
    return _save(draw_utilization(result), path)


def plot_roofline(result: ProfileResult, path: str | os.PathLike) -> Path | None:
    return _save(draw_roofline(result), path)
