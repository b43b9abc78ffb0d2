"""The pure search functions on synthetic curves (no torch, no timing): max batch and knee."""

from __future__ import annotations

import json
import math
from collections import Counter

import numpy as np
import pytest

from batchprof.errors import ConfigError, StepError
from batchprof.records import KneeResult, MaxBatchResult, Outcome
from batchprof.records.step_times import needs_more_steps
from batchprof.search import find_knee, find_max_batch, max_batch_probe_budget


# ---- synthetic probes -------------------------------------------------------------------------
def threshold_probe(truth: int):
    """Feasible up to ``truth`` (0: nothing fits); only feasible/infeasible, no memory figures."""
    return lambda b: Outcome(b, b <= truth, reason=None if b <= truth else "out of memory")


def memory_probe(truth: int, peak=lambda b: 50_000 + 1_000 * b):
    """Peak bytes ``peak(b)`` against a capacity that makes ``truth`` the largest fit."""
    capacity = peak(truth)
    assert peak(truth + 1) > capacity

    def probe(b: int) -> Outcome:
        fits = peak(b) <= capacity
        return Outcome(b, fits, peak_bytes=peak(b) if fits else None, capacity_bytes=capacity,
                       reason=None if fits else "out of memory")
    return probe


def sizes(result: MaxBatchResult) -> list[int]:
    return [o.batch_size for o in result.outcomes]


def check_sound(result: MaxBatchResult) -> None:
    """The answer was run, found feasible, and re-run; no other size was probed twice."""
    counts = Counter(sizes(result))
    if result.max_batch is not None:
        runs = [o for o in result.outcomes if o.batch_size == result.max_batch]
        assert len(runs) >= 2 and runs[-1].feasible
        assert result.outcomes[-1].batch_size == result.max_batch  # confirmation comes last
    assert all(n == 1 for b, n in counts.items() if b != result.max_batch)
    assert result.probes == len(result.outcomes)


# ---- max feasible batch -------------------------------------------------------------------------
def test_budget_helper_is_the_issue_formula_except_at_powers_of_two():
    for m in range(1, 5000):
        issue = math.ceil(math.log2(m)) + math.ceil(math.log2(m / 2)) + 2
        expected = issue + 2 if m & (m - 1) == 0 else issue
        assert max_batch_probe_budget(m) == expected, m


def test_exact_max_batch_and_probe_budget_for_every_truth_up_to_300():
    for truth in range(1, 301):
        result = find_max_batch(threshold_probe(truth))
        assert result.max_batch == truth
        assert result.first_infeasible == truth + 1
        assert result.probes <= max_batch_probe_budget(truth), truth
        assert not result.hit_upper_bound and not result.non_monotonic
        check_sound(result)


def test_memory_extrapolation_takes_at_most_five_probes_on_affine_memory():
    for truth in [*range(1, 301), 1000, 4095, 4096, 100_000]:
        result = find_max_batch(memory_probe(truth))
        assert result.max_batch == truth
        assert result.probes <= 5, (truth, sizes(result))
        check_sound(result)


@pytest.mark.parametrize("peak", [
    lambda b: 10**6 + 1_000 * b + 3 * b * b,  # convex: a secant overshoots
    lambda b: 10**6 + 1_000 * b + int(20_000 * math.sqrt(b)),  # concave: undershoots
    lambda b: 10**6 + 1_000 * b + 300_000 * (b // 5),  # steps (allocator segments)
], ids=["convex", "concave", "steps"])
def test_memory_extrapolation_stays_exact_and_near_budget_on_curved_memory(peak):
    for truth in range(1, 300, 3):
        if peak(truth + 1) <= peak(truth):
            continue
        result = find_max_batch(memory_probe(truth, peak))
        assert result.max_batch == truth
        # one failed extrapolation costs one probe over the plain search
        assert result.probes <= max_batch_probe_budget(truth) + 1, (truth, sizes(result))
        check_sound(result)


def test_extrapolation_can_be_turned_off():
    result = find_max_batch(memory_probe(300), extrapolate=False)
    assert result.max_batch == 300
    assert sizes(result)[:9] == [1, 2, 4, 8, 16, 32, 64, 128, 256]


def test_hint_within_ten_percent_takes_at_most_five_probes():
    for truth in range(1, 301):
        for hint in {math.ceil(0.9 * truth), truth, math.floor(1.1 * truth)}:
            result = find_max_batch(memory_probe(truth), hint=hint)
            assert result.max_batch == truth
            assert result.probes <= 5, (truth, hint, sizes(result))
            check_sound(result)


def test_hint_without_memory_figures_is_exact_and_never_worse_than_no_hint():
    for truth in range(1, 301):
        for hint in range(math.ceil(0.9 * truth), math.floor(1.1 * truth) + 1):
            result = find_max_batch(threshold_probe(truth), hint=hint)
            assert result.max_batch == truth
            assert result.probes <= max_batch_probe_budget(truth)
            # bisection over the hint's +-10% window, plus its edges and the confirmation
            assert result.probes <= math.ceil(math.log2(0.2 * truth + 2)) + 3
        assert find_max_batch(threshold_probe(truth), hint=truth).probes <= 5 or truth > 19


@pytest.mark.parametrize("probe_for", [threshold_probe, memory_probe], ids=["plain", "memory"])
def test_hint_too_high(probe_for):
    result = find_max_batch(probe_for(50), hint=1000)
    assert result.max_batch == 50
    check_sound(result)
    assert result.probes <= max_batch_probe_budget(50)


@pytest.mark.parametrize("probe_for", [threshold_probe, memory_probe], ids=["plain", "memory"])
def test_hint_too_low(probe_for):
    result = find_max_batch(probe_for(1000), hint=10)
    assert result.max_batch == 1000
    check_sound(result)
    # growth from the hint's window doubles the distance from it: a few probes to get going
    assert result.probes <= max_batch_probe_budget(1000) + 3


def test_hint_a_little_too_low_still_saves_probes():
    for truth in (120, 500, 4096):
        hinted = find_max_batch(threshold_probe(truth), hint=round(truth / 1.25))
        assert hinted.max_batch == truth
        assert hinted.probes < find_max_batch(threshold_probe(truth)).probes


def test_hint_is_clamped_into_bounds_with_a_note():
    result = find_max_batch(threshold_probe(40), hint=500, max_batch=64)
    assert result.max_batch == 40
    assert any("clamped" in n for n in result.notes)


def test_start_above_one():
    result = find_max_batch(threshold_probe(37), start=4)
    assert result.max_batch == 37 and sizes(result)[0] == 4
    check_sound(result)


def test_multiple_of_8():
    for truth in (7, 8, 100, 255, 256, 1000):
        result = find_max_batch(threshold_probe(truth), multiple_of=8)
        expected = truth // 8 * 8 or 1  # min_batch 1 is allowed though not a multiple
        assert result.max_batch == expected
        assert all(b % 8 == 0 or b == 1 for b in sizes(result))
        check_sound(result)


def test_multiple_of_with_a_min_batch_that_is_not_a_multiple():
    assert find_max_batch(threshold_probe(20), min_batch=3, multiple_of=8).max_batch == 16
    result = find_max_batch(threshold_probe(7), min_batch=3, multiple_of=8)
    assert result.max_batch == 3 and result.first_infeasible == 8


def test_dataset_size_caps_the_search():
    result = find_max_batch(threshold_probe(1000), dataset_size=300)
    assert result.max_batch == 300 and result.hit_upper_bound
    assert max(sizes(result)) == 300
    assert any("dataset size" in n for n in result.notes)
    check_sound(result)


def test_max_batch_bound():
    result = find_max_batch(threshold_probe(1000), max_batch=64)
    assert (result.max_batch, result.hit_upper_bound, result.first_infeasible) == (64, True, None)
    assert sizes(result) == [1, 2, 4, 8, 16, 32, 64, 64]
    bounded = find_max_batch(threshold_probe(1000), max_batch=100, multiple_of=8)
    assert bounded.max_batch == 96 and bounded.hit_upper_bound
    # memory, not the bound, stops this one
    assert not find_max_batch(threshold_probe(50), max_batch=64).hit_upper_bound


def test_only_batch_one_fits():
    result = find_max_batch(threshold_probe(1))
    assert (result.max_batch, result.first_infeasible) == (1, 2)
    assert sizes(result) == [1, 2, 1]


def test_nothing_fits():
    result = find_max_batch(threshold_probe(0))
    assert result.max_batch is None and result.probes == 1
    assert any("batch size 1" in n and "out of memory" in n for n in result.notes)
    halving = find_max_batch(threshold_probe(0), start=16)
    assert halving.max_batch is None and sizes(halving) == [16, 8, 4, 2, 1]


def test_start_too_large_searches_down():
    result = find_max_batch(threshold_probe(5), start=64)
    assert result.max_batch == 5
    check_sound(result)


def test_flaky_oom_on_confirmation_is_retried_once_and_passes():
    calls: Counter[int] = Counter()

    def probe(b: int) -> Outcome:
        calls[b] += 1
        flaky = b == 77 and calls[b] == 2  # the confirmation run fails once
        return Outcome(b, b <= 77 and not flaky)

    result = find_max_batch(probe)
    assert result.max_batch == 77 and not result.non_monotonic
    assert [o.feasible for o in result.outcomes if o.batch_size == 77] == [True, False, True]
    assert any("flaky" in n for n in result.notes)


def test_persistent_oom_below_a_feasible_size_settles_below_it():
    calls = 0

    def leaking(b: int) -> Outcome:  # memory drifts: after 10 probes only 90 fits
        nonlocal calls
        calls += 1
        return Outcome(b, b <= (100 if calls <= 10 else 90))

    result = find_max_batch(leaking)
    assert result.max_batch == 90 and result.non_monotonic
    assert any("not monotone" in n for n in result.notes)
    assert result.outcomes[-1] == Outcome(90, True)


def test_on_probe_sees_every_outcome_in_order():
    seen: list[Outcome] = []
    result = find_max_batch(threshold_probe(33), on_probe=seen.append)
    assert tuple(seen) == result.outcomes


def test_step_error_propagates_after_earlier_outcomes_were_streamed():
    seen: list[Outcome] = []

    def probe(b: int) -> Outcome:
        if b == 8:
            raise StepError("step raised ValueError at batch 8", batch_size=8)
        return Outcome(b, True)

    with pytest.raises(StepError):
        find_max_batch(probe, on_probe=seen.append)
    assert [o.batch_size for o in seen] == [1, 2, 4]


def test_probe_must_answer_for_the_size_asked():
    with pytest.raises(ValueError, match="batch_size=1"):
        find_max_batch(lambda b: Outcome(b + 1, True))


@pytest.mark.parametrize("kwargs, message", [
    ({"min_batch": 8, "max_batch": 4}, "max_batch 4 is below min_batch 8"),
    ({"multiple_of": 0}, "multiple_of"),
    ({"dataset_size": 0}, "dataset_size"),
    ({"dataset_size": 4, "min_batch": 8}, "dataset_size 4 is below min_batch 8"),
    ({"min_batch": 0}, "min_batch"),
    ({"hint": 0}, "hint"),
    ({"start": 0}, "start"),
    ({"max_batch": 2.5}, "integer"),
    ({"multiple_of": True}, "integer"),
])
def test_bad_inputs_raise_config_error(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        find_max_batch(threshold_probe(10), **kwargs)


def test_max_batch_result_is_json():
    result = find_max_batch(memory_probe(12))
    data = json.loads(json.dumps(result.to_dict()))
    assert data["max_batch"] == 12 and data["outcomes"][0]["batch_size"] == 1


# ---- knee -------------------------------------------------------------------------------------------
LADDER = [2**k for k in range(11)]


def hyperbolic(b: int) -> float:  # fixed per-step overhead + per-sample cost (a CPU)
    return 1000 * b / (b + 32)


def corner(b: int) -> float:  # fills the device at 10, flat after (a GPU)
    return min(100.0 * b, 1000.0)


def falling(b: int) -> float:  # past 256 larger batches thrash caches
    return 1000 * b / (b + 16) * (1 if b <= 256 else (256 / b) ** 0.3)


def exact(curve, batch_sizes=LADDER) -> list[Outcome]:
    return [Outcome(b, True, step_times_s=(b / curve(b),) * 7) for b in batch_sizes]


def noisy(curve, seed: int, max_iqr: float = 0.5, max_steps: int = 100) -> list[Outcome]:
    """Lognormal step times, each size's IQR drawn from 3%..max_iqr of the median, with more
    steps taken where needs_more_steps says so (up to max_steps), as the caller does."""
    rng = np.random.default_rng(seed)
    outcomes = []
    for b in LADDER:
        sigma = np.arcsinh(rng.uniform(0.03, max_iqr) / 2) / 0.6745  # IQR/median -> sigma
        times: list[float] = []
        while needs_more_steps(times) and len(times) < max_steps:
            times += list(b / curve(b) * np.exp(rng.normal(0, sigma, 5)))
        outcomes.append(Outcome(b, True, step_times_s=tuple(times)))
    return outcomes


def test_knee_of_a_monotone_curve():
    result = find_knee(exact(hyperbolic))
    assert (result.knee_batch, result.knee_batch_95) == (256, 512)
    assert result.confidence == "high" and not result.throughput_falls
    assert result.max_samples_per_s == pytest.approx(hyperbolic(1024))
    assert result.kneedle_batch == 128 and result.agree
    gains = {(a, b): g for a, b, g in result.gain_per_doubling}
    assert gains[(256, 512)] == pytest.approx(hyperbolic(512) / hyperbolic(256) - 1)
    assert result.plateau_batch == 512  # 512 -> 1024 gains 3%


def test_knee_of_a_plateau():
    result = find_knee(exact(corner))
    assert (result.knee_batch, result.knee_batch_95, result.plateau_batch) == (16, 16, 16)
    assert result.confidence == "high"


def test_throughput_that_falls_at_large_batch():
    result = find_knee(exact(falling))
    assert result.throughput_falls and result.peak_batch == 256
    assert result.max_samples_per_s == pytest.approx(falling(256), rel=0.02)
    assert result.knee_batch == 128  # 0.9 of the peak, not of a plateau pooled with the fall
    assert any("falls above batch 256" in n for n in result.notes)


def test_a_non_monotone_raw_curve_gets_a_monotone_fit():
    rates = {1: 90, 2: 200, 4: 380, 8: 700, 16: 660, 32: 930, 64: 1000, 128: 960, 256: 1010}
    points = [Outcome(b, True, step_times_s=(b / r,) * 5) for b, r in rates.items()]
    fitted = [f for _, f in find_knee(points).fitted]
    # monotone, except where that would leave a measured point's band (2 standard errors)
    assert all(b >= a * 0.97 for a, b in zip(fitted, fitted[1:], strict=False))
    assert fitted[4] < 700  # 16 pooled with 8 (700 > 660): the dip is smoothed


def test_noisy_knees_of_two_runs_are_within_one_doubling():
    """Step-time IQR up to 50% of the median (this machine shows 3%..55%)."""
    for curve in (hyperbolic, corner):
        for seed in range(0, 10, 2):
            a = find_knee(noisy(curve, seed)).knee_batch
            b = find_knee(noisy(curve, seed + 1)).knee_batch
            assert abs(math.log2(a / b)) <= 1, (curve.__name__, seed, a, b)


def test_high_confidence_noisy_knees_stay_near_the_clean_knee():
    # spreads up to 20%: at 50% (noisy's default) the rule's 10% is rarely resolved and the
    # knee is, honestly, mostly "ambiguous" (see test_knee_driver)
    for curve in (hyperbolic, corner):
        clean = find_knee(exact(curve)).knee_batch
        results = [find_knee(noisy(curve, seed, max_iqr=0.2)) for seed in range(20)]
        high = [r for r in results if r.confidence == "high"]
        assert len(high) >= 6  # the flag is not simply always raised
        for r in high:
            assert abs(math.log2(r.knee_batch / clean)) <= 1
            assert r.knee_interval[1] <= 2 * r.knee_interval[0]
        for r in results:
            if r.confidence == "ambiguous":
                assert any(n.startswith(("noise", "spread")) for n in r.notes)


def slow(b: int) -> float:  # saturates slowly: the 0.9 crossing lies on a shallow slope
    return 1000 * b / (b + 64)


def biased(curve, seed: int, bias: float = 0.08) -> list[Outcome]:
    """Each size off by up to +-bias for the whole run (a machine state that lasts a run:
    seen here on the built-in MLP), with 2% step-time noise on top."""
    rng = np.random.default_rng(seed)
    outcomes = []
    for b in LADDER:
        t = b / (curve(b) * (1 + rng.uniform(-bias, bias)))
        outcomes.append(Outcome(b, True, step_times_s=tuple(t * np.exp(rng.normal(0, 0.02, 7)))))
    return outcomes


def test_a_slow_curve_is_read_off_the_step_time_model_and_holds_still(monkeypatch):
    import batchprof.search.knee.find as search

    results = [find_knee(biased(slow, seed)) for seed in range(30)]
    # +-8% at one size can push the model more than 10% off the isotonic fit: then it stands down
    assert sum(r.step_time_model is not None for r in results) >= 25
    # crossing of the clean curve: b = 354; a run whose own measurement at 512 lies (biased 8%
    # low) clearly under 90% of the best gets 1024 instead: the knee must meet the rule itself
    knees = [r.knee_batch for r in results]
    assert set(knees) <= {512, 1024} and knees.count(512) >= 27
    assert any("step-time model" in n for n in results[0].notes)
    monkeypatch.setattr(search, "MODEL_TOLERANCE", -1.0)  # the isotonic rule alone
    alone = {find_knee(biased(slow, seed)).knee_batch for seed in range(30)}
    assert max(alone) >= 4 * min(alone)  # two doublings apart: why the model is there


def test_no_step_time_model_where_it_does_not_describe_the_curve():
    for curve in (corner, falling):  # flat-then-full (a GPU), or falling past a peak
        result = find_knee(exact(curve))
        assert result.step_time_model is None
        assert not any("step-time model" in n for n in result.notes)


def test_refine_bisects_between_the_point_below_and_the_knee():
    asked: list[int] = []

    def refine(b: int) -> Outcome:
        asked.append(b)
        return exact(hyperbolic, [b])[0]

    result = find_knee(exact(hyperbolic), refine=refine, max_refine=3, multiple_of=8)
    assert 1 <= len(asked) <= 3 and len(result.refined) == len(asked)
    assert all(128 < b < 256 and b % 8 == 0 for b in asked)
    assert 128 < result.knee_batch <= 256
    assert hyperbolic(result.knee_batch) >= 0.9 * hyperbolic(1024) * 0.98  # within tolerance
    assert result.knee_batch in asked or result.knee_batch == 256


def test_refine_that_does_not_fit_stops_refinement():
    result = find_knee(exact(hyperbolic), refine=lambda b: Outcome(b, False, reason="oom"))
    assert len(result.refined) == 1 and result.knee_batch == 256
    assert any("did not fit" in n for n in result.notes)


def test_kneedle_disagreement_is_reported():
    # a bend at 8 (Kneedle sees it) then a slow climb that only 1024 completes
    result = find_knee(exact(lambda b: min(100.0 * b, 500.0) + 0.5 * b))
    assert result.knee_batch == 1024 and result.kneedle_batch == 8
    assert result.agree is False
    assert any("Kneedle" in n for n in result.notes)


def test_kneedle_finds_no_knee_on_a_curve_convex_in_log2_b():
    # throughput linear in b up to 64, then flat: on log2 b it bends upward, never concave
    result = find_knee(exact(lambda b: 10.0 * min(b, 64)))
    assert result.kneedle_batch is None and result.agree is None
    assert result.knee_batch == 64
    assert not any("Kneedle" in n for n in result.notes)


def test_points_without_step_times_use_the_plain_alpha_rule_and_are_ambiguous():
    points = [Outcome(b, True, samples_per_s=hyperbolic(b)) for b in LADDER]
    result = find_knee(points)
    assert result.knee_batch == 256 and result.confidence == "ambiguous"
    # an assumed 10% spread per point: the interval says where the knee could be
    assert result.knee_interval[0] <= 256 <= result.knee_interval[1]


def test_repeated_sizes_are_pooled_and_infeasible_ones_ignored():
    points = [*exact(corner), *exact(corner, [16, 16]), Outcome(2048, False, reason="oom")]
    result = find_knee(points)
    assert [b for b, _ in result.fitted] == LADDER and result.knee_batch == 16


def test_one_point_and_no_points():
    one = find_knee(exact(corner, [8]))
    assert one.knee_batch == 8 and one.confidence == "ambiguous"
    none = find_knee([Outcome(4, False)])
    assert none.knee_batch is None and none.max_samples_per_s is None and none.notes


def test_knee_bad_inputs():
    with pytest.raises(ConfigError, match="alpha"):
        find_knee(exact(corner), alpha=1.5)
    with pytest.raises(ConfigError, match="max_refine"):
        find_knee(exact(corner), max_refine=-1)


def test_knee_result_is_json():
    result = find_knee(exact(hyperbolic))
    assert isinstance(result, KneeResult)
    data = json.loads(json.dumps(result.to_dict()))
    assert data["knee_batch"] == 256 and data["fitted"][0][0] == 1


def test_needs_more_steps():
    assert needs_more_steps([0.1] * 4)  # fewer than five
    assert not needs_more_steps([0.1] * 5)
    wide = [0.1, 0.2, 0.1, 0.2, 0.15]  # IQR half the median
    assert needs_more_steps(wide)
    assert not needs_more_steps(wide * 80)  # the median is pinned down by then
    assert not needs_more_steps([0.100, 0.101, 0.102, 0.103, 0.104])


def _readings(probe, sizes):
    return [probe(b) for b in sizes]


@pytest.mark.parametrize("truth", [3, 8, 13, 51, 300])
def test_readings_measured_before_the_search_are_not_probed_again(truth):
    probe = memory_probe(truth)
    readings = _readings(probe, (1, 2, 4, 8))
    plain = find_max_batch(probe)
    reused = find_max_batch(probe, measured=readings)
    assert reused.max_batch == plain.max_batch == truth
    fitting = {o.batch_size for o in readings if o.feasible}
    if truth in fitting:  # its first verdict was the reading: the confirmation runs it once
        assert sizes(reused).count(truth) == 1 and reused.outcomes[-1].batch_size == truth
    else:
        check_sound(reused)
    # only the answer's confirmation may run a size already read
    assert all(o.batch_size not in fitting or o.batch_size == truth for o in reused.outcomes)
    assert reused.probes <= plain.probes
    assert any("reused the readings of batch 1, 2, 4, 8" in n for n in reused.notes)


@pytest.mark.parametrize("ratio, most", [(1.0, 3), (0.9, 4), (1.1, 4), (0.5, 5), (2.0, 5)])
def test_a_hint_with_readings_is_probed_as_it_is(ratio, most):
    truth = 51
    probe = memory_probe(truth)
    hint = round(truth * ratio)
    r = find_max_batch(probe, hint=hint, measured=_readings(probe, (4, 8)))
    assert r.max_batch == truth and r.probes <= most
    check_sound(r)
    assert sizes(r)[0] == hint
    if ratio == 1.0:
        assert sizes(r) == [51, 52, 51]  # the hint, one above it, the confirmation


def test_readings_off_the_grid_or_above_the_bound_are_ignored():
    probe = memory_probe(40)
    r = find_max_batch(probe, multiple_of=8, max_batch=32, measured=_readings(probe, (4, 36)))
    assert r.max_batch == 32 and not any("reused" in n for n in r.notes)
