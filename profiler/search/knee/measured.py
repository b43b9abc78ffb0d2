"""The knee's figures checked against what was measured, so that no two of them contradict.

Fits smooth a noisy curve, and the smoothed knee is steadier from run to run (see
:mod:`batchprof.search.knee.find`); but a report that says "knee 29 (>= 90% of best)" next to
"87% at batch 29", or "best 9.6 samples/s" beside measured points of 25-49, cannot be trusted.
Every figure the report states is therefore settled here, on the measured points and their
spreads, after the fit has had its say:

- the best throughput is the highest measured median (``best_measured``);
- the knee is the size nearest the smoothed one whose *own* measured throughput meets the
  rule within its spread (MEETS_SE standard errors of the difference to the best);
- the 95% knee is found the same way from the 90% knee up, so it can never be the smaller;
- a fitted value is clipped into its point's band (``FIT_BAND_SE`` standard errors), so a fit
  may smooth but never contradicts a measurement;
- the interval of sizes the spreads cannot tell apart from the knee (``resolution``), which
  makes the confidence "ambiguous" when it spans more than a doubling;
- a measured fall: the largest size clearly below the best (``measured_fall``).

Pure: no torch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from batchprof.search.knee.points import TimedPoint

MEETS_SE = 2.0  # a size within this many standard errors of alpha x best meets the rule
FIT_BAND_SE = 2.0  # a fitted value stays within this many standard errors of its point
FALL_SE = 2.0  # the largest size is this many standard errors below the best: a fall


def _sd(p: TimedPoint) -> float:
    return 1.0 / math.sqrt(p.weight)


def best_measured(points: Sequence[TimedPoint]) -> TimedPoint:
    """The point with the highest measured throughput (the smaller size on a tie)."""
    return max(points, key=lambda p: (p.samples_per_s, -p.batch_size))


def _margin(p: TimedPoint, best: TimedPoint, alpha: float) -> float:
    """How far p's measured throughput lies above alpha x best, in standard errors
    (positive: above)."""
    spread = math.sqrt(_sd(p) ** 2 + (alpha * _sd(best)) ** 2) if p is not best else alpha * _sd(p)
    return (p.samples_per_s - alpha * best.samples_per_s) / spread if spread > 0 else (
        math.inf if p.samples_per_s >= alpha * best.samples_per_s else -math.inf)


def meets(p: TimedPoint, best: TimedPoint, alpha: float) -> bool:
    """Does p's own measured throughput reach alpha x best within its spread? The spread
    forgives at most another (1 - alpha) of the best: a point too noisy to say anything
    (a microsecond step) must not make a knee of a size measured at 5% of the best."""
    if p is best:
        return True
    floor = (2 * alpha - 1) * best.samples_per_s
    return _margin(p, best, alpha) >= -MEETS_SE and p.samples_per_s >= floor


def settle_knee(points: Sequence[TimedPoint], smoothed: int, alpha: float) -> int:
    """Of the sizes that meet the rule on their own measurement, the one nearest (on log2 b)
    to the ``smoothed`` knee, the smaller on a tie (the best always meets it)."""
    best = best_measured(points)
    meeting = [p.batch_size for p in points if meets(p, best, alpha)]
    return min(meeting, key=lambda b: (abs(math.log2(b / smoothed)), b))


def settle_knee_95(points: Sequence[TimedPoint], knee: int, smoothed_95: int,
                   alpha_95: float = 0.95) -> int | None:
    """The stricter knee, never below ``knee``: the smallest size at or above both that meets
    ``alpha_95``; None when no size from the knee up does (the best lies below the knee)."""
    best = best_measured(points)
    start = max(knee, smoothed_95)
    for lower in (start, knee):
        found = [p.batch_size for p in points if p.batch_size >= lower and meets(p, best, alpha_95)]
        if found:
            return min(found)
    return None


def resolution(points: Sequence[TimedPoint], alpha: float) -> tuple[int, int, int]:
    """(lo, hi, sure): the smallest size that meets the rule within its spread (``meets``),
    the smallest whose measured median meets it outright, and the smallest that meets it
    by MEETS_SE standard errors to spare (the best when none does). The spreads cannot tell
    a knee anywhere in lo..hi from the right one; lo..sure is the honest interval when they
    are too wide for the rule."""
    best = best_measured(points)
    lo = min(p.batch_size for p in points if meets(p, best, alpha))
    hi = min(p.batch_size for p in points if p.samples_per_s >= alpha * best.samples_per_s)
    sure = min([p.batch_size for p in points
                if p is not best and _margin(p, best, alpha) >= MEETS_SE] + [best.batch_size])
    return min(lo, hi), max(lo, hi), max(lo, hi, sure)


def ratio_se(p: TimedPoint, best: TimedPoint, alpha: float) -> float:
    """Standard error of p's throughput as a share of the best (what the rule compares)."""
    if p is best:  # the reference itself: its own uncertainty
        return _sd(p) / p.samples_per_s
    return math.hypot(_sd(p), alpha * _sd(best)) / best.samples_per_s


def clip_fit(points: Sequence[TimedPoint], fit: Sequence[float]) -> list[float]:
    """Each fitted value moved into its point's band of FIT_BAND_SE standard errors."""
    return [min(max(f, p.samples_per_s - FIT_BAND_SE * _sd(p)), p.samples_per_s + FIT_BAND_SE * _sd(p))
            for p, f in zip(points, fit, strict=True)]


def measured_fall(points: Sequence[TimedPoint]) -> tuple[int, int] | None:
    """(best size, largest size) when the largest timed size's throughput lies more than
    FALL_SE standard errors (of the difference) below the best measured one; else None."""
    best, last = best_measured(points), points[-1]
    if last is best:
        return None
    se = math.sqrt(_sd(last) ** 2 + _sd(best) ** 2)
    if best.samples_per_s - last.samples_per_s > FALL_SE * se:
        return best.batch_size, last.batch_size
    return None


def relative_sd(p: TimedPoint) -> float:
    return _sd(p) / p.samples_per_s
