"""StepTimes: the one step-time type (median, IQR, relative spread, noisy, merge, stopping rule)."""

from __future__ import annotations

import statistics

import pytest

from batchprof.records import BatchPoint, Measurement, StepTimes
from batchprof.records.step_times import NOISY_IQR_FRACTION, needs_more_steps

TIMES = (0.10, 0.11, 0.12, 0.13, 0.20)


def test_statistics_are_derived_from_the_raw_times():
    st = StepTimes(TIMES)
    q1, median, q3 = statistics.quantiles(TIMES, n=4, method="inclusive")
    assert st.times_s == TIMES and len(st) == 5
    assert st.median_s == pytest.approx(0.12) == pytest.approx(median)
    assert st.iqr_s == pytest.approx(q3 - q1)
    assert st.relative_spread == pytest.approx((q3 - q1) / median)
    assert st.samples_per_s(24) == pytest.approx(200.0)


def test_no_steps_and_one_step_show_no_spread():
    empty, one = StepTimes(), StepTimes((0.5,))
    assert (empty.median_s, empty.iqr_s, empty.relative_spread) == (None, None, None)
    assert empty.samples_per_s(8) is None and not empty.noisy and not empty
    assert one.median_s == 0.5 and one.iqr_s is None and one.relative_spread is None
    assert not one.noisy


def test_noisy_past_ten_percent():
    quiet = StepTimes((1.0, 1.01, 1.02, 1.03))
    loud = StepTimes((1.0, 1.3, 1.6, 1.9))
    assert quiet.relative_spread < NOISY_IQR_FRACTION and not quiet.noisy
    assert loud.relative_spread > NOISY_IQR_FRACTION and loud.noisy


def test_merge_pools_in_order():
    merged = StepTimes.merge([StepTimes((1.0, 2.0)), (3.0,), StepTimes()])
    assert merged == StepTimes((1.0, 2.0, 3.0))


def test_one_stopping_rule_for_method_and_function():
    wide = [0.1, 0.15, 0.2, 0.25, 0.3]
    assert StepTimes(tuple(wide)).needs_more_steps() == needs_more_steps(wide) is True
    assert StepTimes((0.1,) * 5).needs_more_steps() is False
    assert StepTimes((0.1,) * 2).needs_more_steps(min_steps=3) is True


def test_records_read_step_times_through_the_type():
    m = Measurement("w", 8, "cpu", True, step_times_s=TIMES)
    p = BatchPoint(8, True, 1, None, None, TIMES)
    for record in (m, p):
        assert record.step_times == StepTimes(TIMES)
        assert record.step_time_median_s == StepTimes(TIMES).median_s
        assert record.step_time_iqr_fraction == StepTimes(TIMES).relative_spread
        assert record.samples_per_s == StepTimes(TIMES).samples_per_s(8)
    assert m.noisy == StepTimes(TIMES).noisy
