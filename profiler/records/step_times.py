"""StepTimes: the raw timed steps of one batch size and every statistic derived from them.

Like ``torch.utils.benchmark.Measurement``: the samples are kept, the statistics (median,
quartiles, IQR, relative spread) are derived, one rule says whether a spread is large
(``noisy``: IQR above 10% of the median), and one rule says whether to time more steps
(:func:`needs_more_steps`). Measurements, the report's pooled points, the search's points, the
sweep and the ceilings table all read step times through this type. Pure: no torch.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

NOISY_IQR_FRACTION = 0.10  # torch.utils.benchmark warns past this spread
# sd(median) ~ 1.253 * sigma / sqrt(n) and sigma ~ IQR / 1.349: sd(median) ~ 0.93 IQR / sqrt(n)
MEDIAN_SD_PER_IQR = 0.93
HALF_WIDTH_PER_IQR = 1.82  # 1.96 * 0.93: the 95% confidence half-width of the median


def quartiles(values: Sequence[float]) -> tuple[float, float, float]:
    """(q1, median, q3), inclusive method; a single value is all three."""
    if len(values) == 1:
        return values[0], values[0], values[0]
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q2, q3


@dataclass(frozen=True)
class StepTimes:
    """Seconds per timed step (warm-up excluded), in the order they ran."""

    times_s: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "times_s", tuple(float(t) for t in self.times_s))

    @classmethod
    def merge(cls, parts: Iterable[StepTimes | Sequence[float]]) -> StepTimes:
        """All the steps of several runs, pooled (in the given order)."""
        return cls(tuple(t for p in parts
                         for t in (p.times_s if isinstance(p, StepTimes) else p)))

    def __len__(self) -> int:
        return len(self.times_s)

    def __bool__(self) -> bool:
        return bool(self.times_s)

    @property
    def median_s(self) -> float | None:
        return quartiles(self.times_s)[1] if self.times_s else None

    @property
    def iqr_s(self) -> float | None:
        """q3 - q1; None below two steps (one step shows no spread: None, not a plausible 0)."""
        if len(self.times_s) < 2:
            return None
        q1, _, q3 = quartiles(self.times_s)
        return q3 - q1

    @property
    def relative_spread(self) -> float | None:
        """IQR / median; None below two steps or when the median is 0."""
        median, iqr = self.median_s, self.iqr_s
        return iqr / median if median and iqr is not None else None

    @property
    def noisy(self) -> bool:
        """True when the spread is large (IQR > 10% of the median): treat throughput with care."""
        spread = self.relative_spread
        return spread is not None and spread > NOISY_IQR_FRACTION

    def samples_per_s(self, batch_size: int) -> float | None:
        median = self.median_s
        return batch_size / median if median else None

    def median_half_width(self) -> float | None:
        """Approximate 95% confidence half-width of the median, relative to it."""
        spread = self.relative_spread
        if spread is None:
            return None
        return HALF_WIDTH_PER_IQR * spread / math.sqrt(len(self.times_s))

    def needs_more_steps(self, target_iqr_fraction: float = NOISY_IQR_FRACTION, *,
                         min_steps: int = 5) -> bool:
        """The one stopping rule; see :func:`needs_more_steps`."""
        return needs_more_steps(self.times_s, target_iqr_fraction, min_steps=min_steps)


def needs_more_steps(step_times_s: Sequence[float], target_iqr_fraction: float = NOISY_IQR_FRACTION,
                     *, min_steps: int = 5) -> bool:
    """Should the caller time more steps at this batch size (within its own time budget)?

    True below ``min_steps``, and while the spread is large (IQR > target fraction of the
    median) and the median is not yet pinned down: its approximate 95% confidence half-width,
    1.96 * 0.93 * IQR / sqrt(n), still exceeds the target fraction of the median.
    The probe (``TimingPolicy``) and the search's tests use this rule and no other.
    """
    if len(step_times_s) < min_steps:
        return True
    times = StepTimes(tuple(step_times_s))
    if not times.median_s or times.median_s <= 0:
        return False
    spread = times.relative_spread or 0.0
    return spread > target_iqr_fraction and (times.median_half_width() or 0.0) > target_iqr_fraction


class TimedAtBatch:
    """Statistics of a record with ``step_times_s`` and ``batch_size`` (a Measurement, a
    BatchPoint): one place for the derived figures, all from :class:`StepTimes`."""

    step_times_s: tuple[float, ...]
    batch_size: int

    @property
    def step_times(self) -> StepTimes:
        return StepTimes(self.step_times_s)

    @property
    def step_time_median_s(self) -> float | None:
        return self.step_times.median_s

    @property
    def step_time_iqr_fraction(self) -> float | None:
        return self.step_times.relative_spread

    @property
    def samples_per_s(self) -> float | None:
        return self.step_times.samples_per_s(self.batch_size)
