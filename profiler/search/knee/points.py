"""Outcomes pooled into one weighted point per batch size, the input of every knee fit.

Pure: no torch."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from batchprof.records.search import Outcome

MIN_SPREAD = 0.02  # floor on a point's relative IQR: run-to-run drift exceeds in-run spread


DEFAULT_SPREAD = 0.10  # assumed relative IQR when a point has fewer than 3 timed steps


def needs_more_steps(step_times_s: Sequence[float], target_iqr_fraction: float = 0.10,
                     *, min_steps: int = 5) -> bool:
    """Should the caller time more steps at this batch size (within its own time budget)?

    True below ``min_steps``, and while the spread is large (IQR > target fraction of the
    median) and the median is not yet pinned down: its approximate 95% confidence half-width,
    1.96 * 0.93 * IQR / sqrt(n), still exceeds the target fraction of the median.
    """
    n = len(step_times_s)
    if n < min_steps:
        return True
    q1, median, q3 = statistics.quantiles(step_times_s, n=4, method="inclusive")
    if median <= 0:
        return False
    spread = (q3 - q1) / median
    return spread > target_iqr_fraction and 1.82 * spread / math.sqrt(n) > target_iqr_fraction


@dataclass(frozen=True)
class TimedPoint:
    batch_size: int
    samples_per_s: float
    weight: float  # inverse variance of the median throughput estimate
    step_times_s: tuple[float, ...]


def relative_spread(times: Sequence[float]) -> float:
    if len(times) < 3:
        return DEFAULT_SPREAD
    q1, median, q3 = statistics.quantiles(times, n=4, method="inclusive")
    return max(MIN_SPREAD, (q3 - q1) / median) if median > 0 else DEFAULT_SPREAD


def timed_points(outcomes: Sequence[Outcome]) -> list[TimedPoint]:
    """One point per batch size (repeats pooled), feasible and timed ones only.

    A point's spread is at least the median spread of all points: an IQR from five steps is
    itself noisy, and one that came out small must not make its point look precise.
    """
    times: dict[int, list[float]] = {}
    rates: dict[int, list[float]] = {}
    for o in outcomes:
        if not o.feasible:
            continue
        if o.step_times_s:
            times.setdefault(o.batch_size, []).extend(o.step_times_s)
        elif o.samples_per_s is not None:
            rates.setdefault(o.batch_size, []).append(o.samples_per_s)
    spreads = {b: relative_spread(ts) for b, ts in times.items() if len(ts) >= 3}
    typical = statistics.median(spreads.values()) if spreads else DEFAULT_SPREAD
    points = []
    for b in sorted(set(times) | set(rates)):
        ts = tuple(times.get(b, ()))
        median = statistics.median(ts) if ts else 0.0
        rate = (b / median if median > 0 else None) if ts else statistics.median(rates[b])
        if rate is None or not rate > 0:
            continue
        # sd(median) ~ 1.253 * sigma / sqrt(n), sigma ~ IQR / 1.349
        sd = 0.93 * max(spreads.get(b, DEFAULT_SPREAD), typical) * rate / math.sqrt(max(1, len(ts)))
        points.append(TimedPoint(b, rate, 1.0 / sd**2, ts))
    return points
