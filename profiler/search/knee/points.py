"""Outcomes pooled into one weighted point per batch size, the input of every knee fit.

Pure: no torch."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from batchprof.records.search import Outcome
from batchprof.records.step_times import MEDIAN_SD_PER_IQR, StepTimes

MIN_SPREAD = 0.02  # floor on a point's relative IQR: run-to-run drift exceeds in-run spread
DEFAULT_SPREAD = 0.10  # assumed relative IQR when a point has fewer than 3 timed steps


@dataclass(frozen=True)
class TimedPoint:
    batch_size: int
    samples_per_s: float
    weight: float  # inverse variance of the median throughput estimate
    step_times_s: tuple[float, ...]


def relative_spread(times: Sequence[float]) -> float:
    """A point's spread for weighting: its measured one, floored; assumed below 3 steps."""
    spread = StepTimes(tuple(times)).relative_spread if len(times) >= 3 else None
    return DEFAULT_SPREAD if spread is None else max(MIN_SPREAD, spread)


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
        rate = StepTimes(ts).samples_per_s(b) if ts else statistics.median(rates[b])
        if rate is None or not rate > 0:
            continue
        sd = MEDIAN_SD_PER_IQR * max(spreads.get(b, DEFAULT_SPREAD), typical) * rate / math.sqrt(max(1, len(ts)))
        points.append(TimedPoint(b, rate, 1.0 / sd**2, ts))
    return points
