"""The pure half of the noise scale: the two-batch estimator, its interval, the LR hint, words.

The synthetic problem is linear regression with Gaussian noise, where tr(Σ) and |G|² are known
in closed form (see tests/noise_workloads.py); gradients are simulated in numpy, so hundreds of
seeded trials take a second.
"""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest

from batchprof.errors import ConfigError
from batchprof.noise import (
    GradientDraw,
    NoiseOptions,
    NoiseScaleError,
    choose_batch_sizes,
    estimate_noise_scale_from_draws,
    learning_rate_hint,
)
from batchprof.noise.estimator import fieller_interval, student_t_cdf, student_t_quantile
from batchprof.noise.lr import optimizer_family
from batchprof.noise.record import ADAPTIVE_MAX_DRAWS, ADAPTIVE_MIN_DRAWS, enough_draws


def regression_truth(dim: int, sigma: float, delta_norm: float = 1.0) -> float:
    d2 = delta_norm**2
    return (dim * (d2 + sigma**2) + d2) / d2


def simulated_draws(seed: int, draws: int, dim: int = 32, sigma: float = 1.0,
                    small: int = 8, big: int = 128) -> list[GradientDraw]:
    """Squared norms of the mean gradient of ½(x·w − y)² at δ = w − w* = 1/sqrt(d) per axis."""
    rng = np.random.default_rng(seed)
    delta = np.ones(dim) / np.sqrt(dim)

    def sq_norm(b: int) -> float:
        x = rng.standard_normal((b, dim))
        g = (x * (x @ delta - sigma * rng.standard_normal(b))[:, None]).mean(axis=0)
        return float(g @ g)

    return [GradientDraw(small, sq_norm(small), big, sq_norm(big)) for _ in range(draws)]


def test_estimator_recovers_exact_expectations():
    # Draws that sit exactly on E|G_B|² = |G|² + tr(Σ)/B give back |G|² and tr(Σ) exactly.
    g2, trace = 0.5, 40.0
    draws = [GradientDraw(b, g2 + trace / b + eps, bb, g2 + trace / bb + eps / 4)
             for b, bb, eps in ((4, 32, 0.01), (4, 32, -0.01), (8, 64, 0.0))]
    exact = GradientDraw(4, g2 + trace / 4, 32, g2 + trace / 32)
    assert exact.grad_sq_norm == pytest.approx(g2)
    assert exact.trace_sigma == pytest.approx(trace)
    est = estimate_noise_scale_from_draws(draws)
    assert est.noise_scale_samples == pytest.approx(
        statistics.fmean(d.trace_sigma for d in draws)
        / statistics.fmean(d.grad_sq_norm for d in draws))  # ratio of means, not mean ratio
    assert est.contains(est.noise_scale_samples)


def test_student_t_matches_tables():
    assert student_t_quantile(0.975, 1) == pytest.approx(12.7062, abs=1e-4)
    assert student_t_quantile(0.975, 7) == pytest.approx(2.3646, abs=1e-4)
    assert student_t_quantile(0.95, 30) == pytest.approx(1.6973, abs=1e-4)
    assert student_t_quantile(0.025, 7) == pytest.approx(-2.3646, abs=1e-4)
    assert student_t_cdf(0.0, 4) == pytest.approx(0.5)


def test_interval_covers_the_closed_form_truth_in_90_percent_of_seeded_trials():
    truth = regression_truth(32, 1.0)  # 65 samples
    for draws in (8, 32):
        trials = [estimate_noise_scale_from_draws(simulated_draws(seed, draws))
                  for seed in range(200)]
        coverage = sum(e.contains(truth) for e in trials) / len(trials)
        assert coverage >= 0.90, (draws, coverage)


def test_adaptive_draws_stop_early_on_a_clear_signal_and_keep_their_coverage():
    clear = [GradientDraw(4, 2.0 + 0.01 * k, 32, 1.125 + 0.001 * k) for k in range(8)]
    drawn: list[GradientDraw] = []
    while not enough_draws(drawn, NoiseOptions()):
        drawn.append(clear[len(drawn)])
    assert len(drawn) == ADAPTIVE_MIN_DRAWS
    assert enough_draws(clear[:3], NoiseOptions(draws=3))
    truth = regression_truth(32, 1.0)
    hits = 0
    for seed in range(200):
        pool, drawn = simulated_draws(seed, ADAPTIVE_MAX_DRAWS), []
        while not enough_draws(drawn, NoiseOptions()):
            drawn.append(pool[len(drawn)])
        hits += estimate_noise_scale_from_draws(drawn).contains(truth)
    assert hits / 200 >= 0.90


def test_interval_shrinks_with_more_draws():
    truth = regression_truth(32, 1.0)

    def median_relative_width(draws: int) -> float:
        widths = []
        for seed in range(100):
            e = estimate_noise_scale_from_draws(simulated_draws(1000 + seed, draws))
            widths.append(math.inf if e.interval_width_samples is None
                          else e.interval_width_samples / truth)
        return statistics.median(widths)

    w8, w32, w128 = (median_relative_width(n) for n in (8, 32, 128))
    # ~1/sqrt(draws): quadrupling the draws about halves the width.
    assert w32 < 0.7 * w8 and w128 < 0.7 * w32, (w8, w32, w128)


def test_fieller_is_unbounded_when_the_denominator_is_not_resolved():
    low, high = fieller_interval([10.0, 12.0, 9.0, 11.0], [0.5, -0.4, 0.6, -0.3], 0.95)
    assert high is None
    low, high = fieller_interval([10.0, 12.0, 9.0, 11.0], [1.0, 1.1, 0.9, 1.05], 0.95)
    assert high is not None and low < 10.5 / 1.0125 < high


def test_unresolved_signal_reports_an_unbounded_interval_with_a_note():
    draws = [GradientDraw(4, 10.0 + e, 32, 1.3 + e / 8 + f) for e, f in
             ((0.5, 0.05), (-0.3, -0.06), (0.2, 0.08), (-0.1, -0.07))]
    est = estimate_noise_scale_from_draws(draws)
    assert est.interval_high_samples is None and not est.bounded
    assert "unbounded" in est.interval_text() and any("unbounded" in n for n in est.notes)


@pytest.mark.parametrize("draws, message", [
    ([GradientDraw(4, 0.0, 32, 0.0)] * 3, "gradient is zero"),
    ([GradientDraw(4, 2.5, 32, 2.5)] * 3, "does not depend on the batch"),
    ([GradientDraw(4, 1.0, 32, 0.1), GradientDraw(4, 1.1, 32, 0.11)], "not positive"),
])
def test_no_noise_to_measure_is_a_clear_error(draws, message):
    with pytest.raises(NoiseScaleError, match=message):
        estimate_noise_scale_from_draws(draws)


def test_bad_draws_and_options_are_rejected():
    with pytest.raises(ConfigError, match="at least 2"):
        estimate_noise_scale_from_draws([GradientDraw(4, 1.0, 32, 0.5)])
    with pytest.raises(ConfigError, match="small batch < big batch"):
        GradientDraw(32, 1.0, 32, 0.5)
    with pytest.raises(NoiseScaleError, match="NaN"):
        GradientDraw(4, float("nan"), 32, 0.5)
    with pytest.raises(ConfigError, match="--draws"):
        NoiseOptions(draws=1)
    with pytest.raises(ConfigError, match="together"):
        NoiseOptions(reference_batch=32)


def test_batch_sizes_come_from_the_max_batch_else_a_default_and_say_so():
    assert choose_batch_sizes(NoiseOptions(), 51)[:2] == (6, 51)
    small, big, source = choose_batch_sizes(NoiseOptions(), None)
    assert (small, big) == (4, 32) and "default" in source
    assert choose_batch_sizes(NoiseOptions(big_batch=10, small_batch=3), 51)[:2] == (3, 10)
    with pytest.raises(ConfigError, match="too small to draw two batch sizes"):
        choose_batch_sizes(NoiseOptions(), 1)
    with pytest.raises(ConfigError, match="must be below the big batch"):
        choose_batch_sizes(NoiseOptions(small_batch=16, big_batch=16), None)


def test_learning_rate_hints_are_labelled_heuristics_with_sources():
    adam = learning_rate_hint(32, 3e-4, 128, "adam")
    assert adam.rule == "square-root" and adam.suggested_lr == pytest.approx(6e-4)
    sgd = learning_rate_hint(32, 0.1, 128, "sgd")
    assert sgd.rule == "linear" and sgd.suggested_lr == pytest.approx(0.4)
    text = "\n".join(adam.lines() + sgd.lines())
    assert "heuristic" in text and "Malladi" in text and "Goyal" in text
    assert "warm-up" in text
    past = learning_rate_hint(32, 0.1, 1024, "sgd", noise_scale_samples=200.0)
    assert past.critical_note and "McCandlish" in past.critical_note
    assert "above the noise scale" in past.critical_note
    assert optimizer_family(["AdamW", "Optimizer"]) == "adam"
    assert optimizer_family(["SGD", "Optimizer"]) == "sgd"
    assert optimizer_family(["LBFGS", "Optimizer"]) is None
    with pytest.raises(ConfigError, match="--reference-lr"):
        learning_rate_hint(32, -1.0, 64, "adam")
