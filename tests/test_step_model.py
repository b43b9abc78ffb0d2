"""The step-time model t(b) = overhead + per_sample * b, on synthetic curves (no torch)."""

from __future__ import annotations

import pytest

from batchprof.records import StepTimeModel
from batchprof.search.knee.step_model import agrees, fit_step_time

SIZES = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512]


def rates_of(model: StepTimeModel, sizes=SIZES) -> list[float]:
    return [model.samples_per_s(b) for b in sizes]


def test_fit_recovers_overhead_and_cost_per_sample():
    truth = StepTimeModel(overhead_s=0.008, per_sample_s=90e-6)
    fitted = fit_step_time(SIZES, rates_of(truth), [1.0] * len(SIZES))
    assert fitted is not None
    assert fitted.overhead_s == pytest.approx(0.008, rel=1e-9)
    assert fitted.per_sample_s == pytest.approx(90e-6, rel=1e-9)
    assert fitted.limit_samples_per_s == pytest.approx(1 / 90e-6)


def test_weights_decide_which_sizes_the_fit_follows():
    truth = StepTimeModel(0.01, 1e-4)
    rates = rates_of(truth)
    rates[-1] *= 1.3  # one wild point where the cost per sample dominates
    trusted = fit_step_time(SIZES, rates, [1.0] * (len(SIZES) - 1) + [1e-6])
    naive = fit_step_time(SIZES, rates, [1.0] * len(SIZES))
    assert trusted is not None and naive is not None
    assert trusted.per_sample_s == pytest.approx(1e-4, rel=1e-3)
    assert abs(naive.per_sample_s / 1e-4 - 1) > 0.05


def test_no_model_without_a_positive_overhead_or_cost_or_enough_sizes():
    flat = [1000.0] * len(SIZES)  # time proportional to b: no fixed cost
    assert fit_step_time(SIZES, flat, [1.0] * len(SIZES)) is None
    superlinear = [b * b for b in SIZES]  # time falls with b: no cost per sample
    assert fit_step_time(SIZES, superlinear, [1.0] * len(SIZES)) is None
    assert fit_step_time([1, 2], [10.0, 19.0], [1.0, 1.0]) is None


def test_agrees_only_counts_sizes_from_the_given_batch_up():
    model = StepTimeModel(0.01, 1e-4)
    fitted = rates_of(model)
    fitted[1] *= 1.3  # off by 30% at b=2
    fitted[-1] *= 1.04  # off by 4% at b=512
    assert not agrees(model, SIZES, fitted, from_batch=1, tolerance=0.10)
    assert agrees(model, SIZES, fitted, from_batch=4, tolerance=0.10)
    assert not agrees(model, SIZES, fitted, from_batch=4, tolerance=0.03)


def test_a_knee_read_off_the_model_round_trips_through_json():
    import json

    from batchprof.records import Outcome
    from batchprof.records.search import knee_from_dict
    from batchprof.search import find_knee

    truth = StepTimeModel(0.01, 1e-4)
    knee = find_knee([Outcome(b, True, step_times_s=(b / truth.samples_per_s(b),) * 5)
                      for b in SIZES])
    assert knee.step_time_model is not None
    assert knee.step_time_model.overhead_s == pytest.approx(0.01)
    assert knee.step_time_model.per_sample_s == pytest.approx(1e-4)
    assert knee_from_dict(json.loads(json.dumps(knee.to_dict()))) == knee


def test_describe_names_both_costs_with_units():
    assert StepTimeModel(6.08e-3, 2.06e-3).describe() == "t(b) = 6.08 ms + 2.06 ms x b"
