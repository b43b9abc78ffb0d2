"""``summary.md``: what a person reads first."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from batchprof.records.frame import batch_rows
from batchprof.records.result import ProfileResult
from batchprof.units import format_bytes, format_duration

if TYPE_CHECKING:  # pragma: no cover

    from batchprof.records.search import KneeResult


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


def _best_text(result: ProfileResult) -> str:
    knee = result.knee
    if knee is None or knee.best_measured_samples_per_s is None:
        return "n/a"
    text = f"{knee.best_measured_samples_per_s:,.1f} samples/s at batch {knee.best_measured_batch}"
    tokens = result.tokens_per_s(knee.best_measured_samples_per_s)
    return text if tokens is None else f"{text} ({tokens:,.0f} tokens/s)"


def summary_markdown(result: ProfileResult, files: dict[str, str] | None = None) -> str:
    from batchprof.noise.text import markdown_lines, noise_fact  # issue 18
    knee = result.knee
    status = ("partial (interrupted)" if result.interrupted
              else f"partial (error: {result.error})" if result.error else "complete")
    facts = [
        ["workload", result.workload], ["device", result.device],
        ["memory budget", format_bytes(result.capacity_bytes)
         if result.capacity_bytes is not None else "none"],
        ["max feasible batch", str(result.max_batch) if result.max_batch else "n/a"],
        [f"knee (alpha = {result.spec.alpha if result.spec else result.options.get('alpha')})",
         str(result.knee_batch) if result.knee_batch else "n/a"],
        ["knee (alpha = 0.95)", str(result.knee_batch_95) if result.knee_batch_95 else "n/a"],
        ["knee confidence", knee.confidence if knee else "n/a"],
        ["knee range (resampling and measured spreads)",
         f"{knee.knee_interval[0]}..{knee.knee_interval[1]}"
         if knee and knee.knee_interval else "n/a"],
        ["best throughput (measured)", _best_text(result)],
        ["throughput falls", f"above batch {knee.peak_batch}"
         if knee and knee.throughput_falls and knee.peak_batch else "no"],
        ["knee read off", _knee_source(knee)],
        *([["noise scale (critical batch)", noise_fact(result.noise_scale)]]
          if result.noise_scale else []),  # issue 18
        ["recommended batch", str(result.recommended_batch) if result.recommended_batch
         else "n/a"],
        ["probes", str(len(result.probes))],
        ["time", format_duration(result.elapsed_s)],
        ["status", status],
    ]
    out = [f"# batchprof report: {result.workload}", "",
           f"Started {result.started_at or 'n/a'}.", "", _md_table(["", ""], facts), "",
           f"**Recommendation:** {result.recommendation_reason}", ""]
    rows = batch_rows(result)
    if rows:
        predicted = any(r["predicted_peak_allocated_bytes"] is not None for r in rows)
        epochs = result.dataset_size is not None
        headers = ["batch", "fits", "peak", *(["predicted"] if predicted else []),
                   "step (median)", "spread", "samples/s", "fitted", "share",
                   *(["steps/epoch", "epoch time"] if epochs else []), "marks"]
        table = []
        for r in rows:
            marks = [name for name, key in (("max", "is_max"), ("knee", "is_knee"),
                                            ("recommended", "is_recommended")) if r[key]]
            cells = [str(r["batch_size"]), "yes" if r["feasible"] else "no",
                     format_bytes(r["peak_allocated_bytes"])]
            if predicted:
                cells.append(format_bytes(r["predicted_peak_allocated_bytes"]))
            cells += [format_duration(r["step_time_median_s"]),
                      _fmt(r["step_time_iqr_fraction"], "{:.0%}"),
                      _fmt(r["samples_per_s"], "{:.1f}"), _fmt(r["fitted_samples_per_s"], "{:.1f}"),
                      _fmt(r["share_of_best"], "{:.0%}")]
            if epochs:
                cells += [_fmt(r["steps_per_epoch"], "{:.0f}"), format_duration(r["epoch_time_s"])]
            table.append([*cells, ", ".join(marks)])
        out += ["## Per batch size", "", _md_table(headers, table), ""]
    out += markdown_lines(result.noise_scale, result.knee_batch, result.max_batch)
    if result.notes:
        out += ["## Notes", "", *[f"- {n}" for n in result.notes], ""]
    if files:
        out += ["## Files", "", *[f"- `{name}`: {what}" for name, what in files.items()], ""]
    return "\n".join(out)
