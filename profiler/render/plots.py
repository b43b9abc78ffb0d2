"""The report's plots, with matplotlib's object API on a bare ``Figure`` (the Agg canvas),
never pyplot: a report neither needs a display nor changes the caller's backend."""

from __future__ import annotations

import os
import statistics
from pathlib import Path

from batchprof.records.frame import UTILIZATION_METRICS
from batchprof.records.measurement import Measurement
from batchprof.records.result import ProfileResult
from batchprof.units import format_bytes

MiB = 1024**2


# ---------------------------------------------------------------------------------------------
# Plots
# ---------------------------------------------------------------------------------------------
def _figure():
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.5), dpi=100, layout="constrained")
    return fig, fig.subplots()


def _legend_or_placeholder(ax, empty_text: str) -> None:
    """A legend, or, when nothing was drawn, a message instead of a blank, unlabeled plot."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="best", fontsize="small")
    else:
        ax.text(0.5, 0.5, empty_text, transform=ax.transAxes, ha="center", va="center")


def plot_peak_memory(result: ProfileResult, path: str | os.PathLike) -> Path:
    """Peak memory vs batch size: fits (dots), fails (x), the budget line, the max marked."""
    fig, ax = _figure()
    cap = result.capacity_bytes
    points = result.points()
    fit = [p for p in points if p.feasible and p.peak_allocated_bytes is not None]
    ax.plot([p.batch_size for p in fit], [p.peak_allocated_bytes / MiB for p in fit], "o-",
            color="tab:blue", label="fits: peak allocated")
    failed = [p for p in points if not p.feasible]
    if failed:
        # an OOM that was stopped early has no peak: drawn on the budget line (at least that)
        ys = [(p.peak_allocated_bytes if p.peak_allocated_bytes is not None else cap or 0) / MiB
              for p in failed]
        ax.plot([p.batch_size for p in failed], ys, "x", color="tab:red", markersize=9,
                mew=2, label="out of memory")
    if cap is not None:
        ax.axhline(cap / MiB, color="tab:red", ls="--", lw=1,
                   label=f"budget {format_bytes(cap)}")
    if result.max_batch is not None:
        ax.axvline(result.max_batch, color="tab:green", ls=":", lw=1.5,
                   label=f"max feasible batch {result.max_batch}")
        top = next((p for p in fit if p.batch_size == result.max_batch), None)
        if top is not None:
            ax.plot([top.batch_size], [top.peak_allocated_bytes / MiB], "*", color="tab:green",
                    markersize=14)
    ax.set_xlabel("batch size")
    ax.set_ylabel("peak memory (MiB)")
    ax.set_title(f"{result.workload} on {result.device}: peak memory per training step")
    ax.grid(alpha=0.3)
    _legend_or_placeholder(ax, "no probe finished")
    fig.savefig(path)
    return Path(path)


def plot_throughput(result: ProfileResult, path: str | os.PathLike) -> Path:
    """Throughput vs batch size (log2 x): medians with IQR bars, the fit, the knee marked."""
    fig, ax = _figure()
    timed = [p for p in result.points() if p.samples_per_s is not None]
    for p in timed:
        rate = p.samples_per_s
        if len(p.step_times_s) >= 2:  # the step-time quartiles, as throughputs
            q1, _, q3 = statistics.quantiles(p.step_times_s, n=4, method="inclusive")
            bars = [[max(0.0, rate - p.batch_size / q3)], [max(0.0, p.batch_size / q1 - rate)]]
        else:
            bars = None
        ax.errorbar(p.batch_size, rate, yerr=bars, fmt="o", color="tab:blue", capsize=3)
    if timed:
        ax.plot([], [], "o", color="tab:blue", label="measured (median, IQR)")
    knee = result.knee
    if knee is not None and knee.fitted:
        xs, ys = zip(*knee.fitted, strict=True)
        ax.plot(xs, ys, "-", color="tab:orange", label="monotone fit")
        if knee.max_samples_per_s:
            ax.axhline(knee.alpha * knee.max_samples_per_s, color="gray", ls="--", lw=1,
                       label=f"{knee.alpha:.0%} of best")
    if result.knee_batch is not None:
        ax.axvline(result.knee_batch, color="tab:purple", ls="-.", lw=1.5,
                   label=f"knee {result.knee_batch}")
    if result.max_batch is not None:
        ax.axvline(result.max_batch, color="tab:green", ls=":", lw=1.5,
                   label=f"max feasible {result.max_batch}")
    return _save_log2_batch_plot(fig, ax, path, "samples / s",
                                 f"{result.workload} on {result.device}: training throughput",
                                 "no batch size fit, so none was timed")


def _save_log2_batch_plot(fig, ax, path: str | os.PathLike, ylabel: str, title: str,
                          empty_text: str) -> Path:
    """Batch size on a log2 axis labelled 1 2 4 8 ..., grid, legend, saved to ``path``."""
    from matplotlib.ticker import ScalarFormatter

    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_formatter(ScalarFormatter())  # 1 2 4 8 ..., not 2^0 2^1 2^2
    ax.set_xlabel("batch size")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    _legend_or_placeholder(ax, empty_text)
    fig.savefig(path)
    return Path(path)


def _latest_feasible(result: ProfileResult) -> dict[int, Measurement]:
    return {m.batch_size: m for m in result.probes if m.feasible}


def plot_utilization(result: ProfileResult, path: str | os.PathLike) -> Path | None:
    """Mean utilization per batch size (kernel-busy % on a GPU, process CPU % on the CPU);
    None (no file) when no probe carried samples."""
    probes = sorted(_latest_feasible(result).values(), key=lambda m: m.batch_size)
    series = {}
    for name in UTILIZATION_METRICS:
        pts = [(m.batch_size, m.sample(name).mean) for m in probes
               if m.sample(name) is not None and m.sample(name).mean is not None]
        if pts:
            series[name] = pts
    if not series:
        return None
    fig, ax = _figure()
    for name, pts in series.items():
        unit = next(m.sample(name).unit for m in probes if m.sample(name) is not None)
        xs, ys = zip(*pts, strict=True)
        ax.plot(xs, ys, "o-", label=f"{name} (mean over timed steps, {unit})")
    return _save_log2_batch_plot(fig, ax, path, "utilization",
                                 f"{result.workload} on {result.device}: what the device is "
                                 "doing", "no samples")


def plot_roofline(result: ProfileResult, path: str | os.PathLike) -> Path | None:
    """Achieved FLOP/s vs arithmetic intensity per batch size under the measured roofs;
    None when the run has no roofline figures."""
    pts = [m for m in sorted(_latest_feasible(result).values(), key=lambda m: m.batch_size)
           if m.extra.get("achieved_flops_per_s") and m.extra.get(
               "arithmetic_intensity_flop_per_byte")]
    if not pts:
        return None
    peak_flops = pts[0].extra["peak_flops_per_s"]
    peak_bw = pts[0].extra["peak_bandwidth_gbps"] * 1e9
    fig, ax = _figure()
    xs = [m.extra["arithmetic_intensity_flop_per_byte"] for m in pts]
    lo, hi = min(xs + [peak_flops / peak_bw]) / 4, max(xs + [peak_flops / peak_bw]) * 4
    grid = [lo * (hi / lo) ** (i / 99) for i in range(100)]
    ax.plot(grid, [min(peak_flops, x * peak_bw) / 1e9 for x in grid], "-", color="black",
            label=f"roof: {peak_bw / 1e9:.1f} GB/s, {peak_flops / 1e9:.1f} GFLOP/s")
    ax.plot(xs, [m.extra["achieved_flops_per_s"] / 1e9 for m in pts], "o", color="tab:blue",
            label="achieved (one point per batch size)")
    for m, x in zip(pts, xs, strict=True):
        ax.annotate(str(m.batch_size), (x, m.extra["achieved_flops_per_s"] / 1e9),
                    textcoords="offset points", xytext=(4, 4), fontsize="small")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (FLOP / byte moved)")
    ax.set_ylabel("GFLOP/s")
    ax.set_title(f"{result.workload} on {result.device}: roofline")
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="best", fontsize="small")
    fig.savefig(path)
    return Path(path)
