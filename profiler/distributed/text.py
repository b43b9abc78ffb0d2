"""Plain-text lines for distributed results (the CLI prints them; nothing here prints)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..units import format_bytes


def _rate(x: float | None) -> str:
    return "n/a" if x is None else f"{x:,.1f}"


def rank_table_lines(rows: Sequence[dict[str, Any]]) -> list[str]:
    """One line per rank: verdict, resident, peak, budget, median step time."""
    lines = [f"{'rank':>4}  {'fits':>4}  {'resident':>10}  {'peak':>10}  {'budget':>10}  "
             f"{'step (median)':>13}"]
    for r in rows:
        median = r.get("step_time_median_s")
        lines.append(f"{r['rank']:>4}  {'yes' if r['feasible'] else 'no':>4}  "
                     f"{format_bytes(r['resident_bytes']):>10}  "
                     f"{format_bytes(r['peak_allocated_bytes']):>10}  "
                     f"{format_bytes(r['capacity_bytes']):>10}  "
                     f"{'n/a' if median is None else f'{median * 1e3:.2f} ms':>13}")
    return lines


def summary_lines(result: Any) -> list[str]:
    """A DistributedProfile as a few lines and the per-rank table at the max batch."""
    lines = [f"{result.workload} under {result.strategy} on {result.world_size} ranks "
             f"(grad accumulation {result.grad_accumulation}): {len(result.probes)} probes, "
             f"{result.elapsed_s or 0:.1f} s"]
    lines.append(f"max batch per rank: {result.max_batch}  ->  global batch "
                 f"{result.global_max_batch}")
    if result.knee is not None:
        lines.append(f"knee per rank: {result.knee_batch}  ->  global batch "
                     f"{result.global_knee_batch}")
    top = next((p for p in reversed(result.probes) if p.batch_size == result.max_batch), None)
    if top is not None:
        lines.append(f"at batch {top.batch_size} per rank: {_rate(top.samples_per_s)} samples/s "
                     "over all ranks")
        lines += rank_table_lines(top.rank_rows())
    lines += list(result.notes)
    return lines


def measurement_lines(m: Any) -> list[str]:
    """One DistributedMeasurement: the verdict, the global figures, the per-rank table."""
    verdict = "fits on every rank" if m.feasible else f"does not fit ({m.reason})"
    return [f"{m.workload} under {m.strategy} on {m.world_size} ranks: batch {m.batch_size} "
            f"per rank (global {m.global_batch}) {verdict}; "
            f"{_rate(m.samples_per_s)} samples/s over all ranks",
            *rank_table_lines(m.rank_rows())]


def plan_lines(workload: str, rows: Sequence[dict[str, Any]]) -> list[str]:
    if not rows:
        return []
    first = rows[0]
    lines = [f"{workload}: {first['strategy']} over {first['world_size']} ranks, grad "
             f"accumulation {first['grad_accumulation']} (predicted, per rank)",
             f"{'GPU':<14}{'usable':>11}{'max batch/rank':>16}{'global batch':>14}"
             f"{'peak reserved':>15}"]
    for r in rows:
        best = r["max_batch_per_rank"]
        lines.append(f"{r['gpu']:<14}{format_bytes(r['usable_bytes']):>11}"
                     f"{'none' if best is None else best:>16}"
                     f"{'none' if r['global_batch'] is None else r['global_batch']:>14}"
                     f"{format_bytes(r['peak_reserved_bytes']):>15}")
    return lines


def prediction_lines(workload: str, predictions: Sequence[Any]) -> list[str]:
    lines = []
    for p in predictions:
        lines.append(f"{workload} {p.strategy} x{p.world_size}: batch {p.batch_size}/rank "
                     f"(global {p.global_batch}): peak {format_bytes(p.peak_allocated_bytes)} "
                     f"per rank (single process {format_bytes(p.single_process_peak_bytes)}), "
                     f"resident {format_bytes(p.resident_bytes)}")
    return lines
