"""Reports: the only module that imports pandas or matplotlib, or writes files.

A report directory ``reports/<workload>-<timestamp>/`` holds:

- ``probes.jsonl``: every Measurement, appended by :class:`ProbeLog` as each probe completes
  (so a crash or Ctrl-C loses nothing already measured);
- ``results.json``: the whole ProfileResult (every raw measurement, options, environment);
- ``results.csv``: the table of :func:`result_frame` (max batch, throughput ladder, knee);
- ``probes.csv``: one row per probe, in run order;
- ``report.html``: everything on one self-contained page (see :mod:`batchprof.html_report`);
- ``summary.md``: what a person reads first;
- ``peak_memory.png`` and ``throughput.png``; ``utilization.png`` when probes carried sampler
  data and ``roofline.png`` when the run computed roofline figures.

Plots use matplotlib's object API on a bare ``Figure`` (the Agg canvas), never pyplot, so a
report neither needs a display nor changes the caller's matplotlib backend.
"""

from __future__ import annotations

import json
import math
import os
import re
import statistics
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .result import BatchPoint, ProfileResult, throughput_ladder
from .types import Measurement
from .units import format_bytes

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from .search import KneeResult

DEFAULT_REPORTS_DIR = "reports"
PROBE_LOG = "probes.jsonl"
MiB = 1024**2


# ---------------------------------------------------------------------------------------------
# The report directory and the probe log
# ---------------------------------------------------------------------------------------------
def make_report_dir(workload_name: str, root: str | os.PathLike = DEFAULT_REPORTS_DIR,
                    now: datetime | None = None) -> Path:
    """Create and return ``root/<workload>-<YYYYmmdd-HHMMSS>`` (suffixed -2, -3... if taken)."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", workload_name).strip("._") or "workload"
    stamp = (now or datetime.now()).strftime("%Y%m%d-%H%M%S")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for n in range(1, 1000):
        path = root / (f"{safe}-{stamp}" if n == 1 else f"{safe}-{stamp}-{n}")
        try:
            path.mkdir()
        except FileExistsError:
            continue
        return path
    raise FileExistsError(f"no free report directory name under {root} for {safe}-{stamp}")


class ProbeLog:
    """Appends each Measurement to a JSON-lines file as it completes, flushed to disk."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed by close()

    def append(self, m: Measurement) -> None:
        self._fh.write(json.dumps(m.to_dict()) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())  # a probe costs seconds; losing one to a crash costs more

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> ProbeLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_probe_log(path: str | os.PathLike) -> list[Measurement]:
    """Every Measurement in a probes.jsonl, in run order (a torn last line is skipped)."""
    out = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            out.append(Measurement.from_dict(json.loads(line)))
        except (json.JSONDecodeError, KeyError, TypeError):
            continue
    return out


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
        o = result.options
        ladder = throughput_ladder(o.get("min_batch", 1), result.max_batch,
                                   o.get("multiple_of", 1))
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


def _md_table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _fmt(value: float | None, fmt: str) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) \
        else fmt.format(value)


def _knee_source(knee: KneeResult | None) -> str:
    if knee is None or knee.knee_batch is None:
        return "n/a"
    model = knee.step_time_model
    if model is None:
        return "the isotonic fit of the measured throughput"
    return (f"the step-time model {model.describe()} "
            f"(limit {model.limit_samples_per_s:,.0f} samples/s)")


def summary_markdown(result: ProfileResult, files: dict[str, str] | None = None) -> str:
    from .noise.text import markdown_lines, noise_fact  # issue 18
    knee = result.knee
    status = ("partial (interrupted)" if result.interrupted
              else f"partial (error: {result.error})" if result.error else "complete")
    facts = [
        ["workload", result.workload], ["device", result.device],
        ["memory budget", format_bytes(result.capacity_bytes)
         if result.capacity_bytes is not None else "none"],
        ["max feasible batch", str(result.max_batch) if result.max_batch else "n/a"],
        [f"knee (alpha = {result.options.get('alpha', '?')})",
         str(result.knee_batch) if result.knee_batch else "n/a"],
        ["knee (alpha = 0.95)", str(result.knee_batch_95) if result.knee_batch_95 else "n/a"],
        ["knee confidence", knee.confidence if knee else "n/a"],
        ["knee range (resampled, 10th-90th pct)", f"{knee.knee_interval[0]}..{knee.knee_interval[1]}"
         if knee and knee.knee_interval else "n/a"],
        ["knee read off", _knee_source(knee)],
        *([["noise scale (critical batch)", noise_fact(result.noise_scale)]]
          if result.noise_scale else []),  # issue 18
        ["recommended batch", str(result.recommended_batch) if result.recommended_batch
         else "n/a"],
        ["probes", str(len(result.probes))],
        ["time", _fmt(result.elapsed_s, "{:.1f} s")],
        ["status", status],
    ]
    out = [f"# batchprof report: {result.workload}", "",
           f"Started {result.started_at or 'n/a'}.", "", _md_table(["", ""], facts), "",
           f"**Recommendation:** {result.recommendation_reason}", ""]
    frame = result_frame(result)
    if len(frame):
        headers = ["row", "batch", "fits", "peak", "step (median)", "spread", "samples/s",
                   "fitted", "share"]
        epochs = result.dataset_size is not None
        if epochs:
            headers += ["steps/epoch", "epoch time"]
        rows = []
        for r in frame.to_dict("records"):
            cells = [r["row"], str(r["batch_size"]), "yes" if r["feasible"] else "no",
                     format_bytes(r["peak_allocated_bytes"]),
                     _fmt(r["step_time_median_s"] and r["step_time_median_s"] * 1e3, "{:.1f} ms"),
                     _fmt(r["step_time_iqr_fraction"], "{:.0%}"),
                     _fmt(r["samples_per_s"], "{:.1f}"), _fmt(r["fitted_samples_per_s"], "{:.1f}"),
                     _fmt(r["share_of_best"], "{:.0%}")]
            if epochs:
                cells += [_fmt(r["steps_per_epoch"], "{:.0f}"), _fmt(r["epoch_time_s"], "{:.1f} s")]
            rows.append(cells)
        out += ["## Throughput ladder", "", _md_table(headers, rows), ""]
    out += markdown_lines(result.noise_scale, result.knee_batch, result.max_batch)
    if result.notes:
        out += ["## Notes", "", *[f"- {n}" for n in result.notes], ""]
    if files:
        out += ["## Files", "", *[f"- `{name}`: {what}" for name, what in files.items()], ""]
    return "\n".join(out)


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


# Per-batch figures beyond memory and time, when the run gathered them: the mean of each
# sampled metric over a probe's timed window, and the roofline view.
UTILIZATION_METRICS = ("kernel_busy_pct", "memory_busy_pct", "cpu_pct", "power_w")


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


# ---------------------------------------------------------------------------------------------
# The whole report
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ReportFiles:
    directory: Path
    results_json: Path
    results_csv: Path
    probes_csv: Path
    summary_md: Path
    peak_memory_png: Path
    throughput_png: Path
    probes_jsonl: Path | None  # present when a ProbeLog wrote into the directory


FILE_DESCRIPTIONS = {
    "report.html": "the whole report on one self-contained page (plots inline)",
    "summary.md": "this summary",
    "results.json": "every raw measurement, options, environment",
    "results.csv": "max batch, throughput ladder, knee (one row each)",
    "probes.csv": "one row per probe, in run order",
    PROBE_LOG: "every probe, appended as it completed",
    "peak_memory.png": "peak memory vs batch size",
    "throughput.png": "throughput vs batch size",
    "utilization.png": "sampled utilization vs batch size",
    "roofline.png": "each batch size on the measured roofline (FLOP/s vs intensity)",
}


def write_report(result: ProfileResult, directory: str | os.PathLike) -> ReportFiles:
    """Write results.json/.csv, probes.csv, summary.md and both plots into ``directory``."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    log = d / PROBE_LOG
    data = result.to_dict()
    (d / "results.json").write_text(json.dumps(data, indent=2, default=str) + "\n",
                                    encoding="utf-8")
    result_frame(result).to_csv(d / "results.csv", index=False)
    probes_frame(result).to_csv(d / "probes.csv", index=False)
    plot_peak_memory(result, d / "peak_memory.png")
    plot_throughput(result, d / "throughput.png")
    optional = {"utilization.png": plot_utilization(result, d / "utilization.png"),
                "roofline.png": plot_roofline(result, d / "roofline.png")}
    files = {k: v for k, v in FILE_DESCRIPTIONS.items()
             if (k != PROBE_LOG or log.exists()) and optional.get(k, True) is not None}
    (d / "summary.md").write_text(summary_markdown(result, files), encoding="utf-8")
    from .html_report import write_html

    write_html(result, d)
    return ReportFiles(d, d / "results.json", d / "results.csv", d / "probes.csv",
                       d / "summary.md", d / "peak_memory.png", d / "throughput.png",
                       log if log.exists() else None)


def load_result(directory_or_file: str | os.PathLike) -> ProfileResult:
    """Read a ProfileResult back from a report directory or its results.json."""
    path = Path(directory_or_file)
    if path.is_dir():
        path = path / "results.json"
    return ProfileResult.from_dict(json.loads(path.read_text(encoding="utf-8")))
