"""find_knee: the smallest batch whose throughput is within alpha of the best.

No torch here; tested on synthetic curves."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence

import numpy as np

from batchprof import defaults
from batchprof.errors import ConfigError
from batchprof.records.search import KneeResult, Outcome, StepTimeModel
from batchprof.search.checks import check_int
from batchprof.search.knee import measured
from batchprof.search.knee.fit import PLATEAU_GAIN, alpha_knee, fit_throughput
from batchprof.search.knee.kneedle import kneedle_knee
from batchprof.search.knee.points import TimedPoint, timed_points
from batchprof.search.knee.step_model import agrees, fit_step_time

BOOTSTRAP_ROUNDS = 200


MODEL_TOLERANCE = 0.10  # the step-time model must stay this close to the isotonic fit


def _read_knee(sizes: Sequence[int], fit: Sequence[float], rates: Sequence[float],
               weights: Sequence[float], alpha: float, tolerance: Sequence[float] | None,
               falls: bool) -> tuple[int, StepTimeModel | None]:
    """The alpha rule on the step-time model where it agrees with the isotonic fit (within
    MODEL_TOLERANCE from half the earlier of the two knees up), else on the isotonic fit.

    The model pools every size, so its crossing does not hinge on the one or two points nearest
    it (see :mod:`batchprof.search.knee.step_model`); where it does not describe the curve (throughput
    falls, a GPU's flat-then-linear step time) the model-free rule stands. The knee is a
    measured size either way: the smallest whose modelled throughput reaches alpha times the
    modelled throughput at the largest size.
    """
    knee = alpha_knee(sizes, fit, alpha, tolerance)
    model = None if falls else fit_step_time(sizes, rates, weights)
    if model is None:
        return knee, None
    model_knee = alpha_knee(sizes, [model.samples_per_s(b) for b in sizes], alpha)
    if not agrees(model, sizes, fit, min(knee, model_knee) / 2, MODEL_TOLERANCE):
        return knee, None
    return model_knee, model


def _bootstrap_knees(points: Sequence[TimedPoint], alphas: Sequence[float], rounds: int,
                     seed: int) -> list[list[int]]:
    """Knees of fits to resampled data (each point's step times drawn with replacement), one
    list per alpha; every alpha is read off the same resampled fits."""
    rng = np.random.default_rng(seed)
    columns = []
    for p in points:
        if len(p.step_times_s) >= 3:
            draws = rng.choice(np.asarray(p.step_times_s), (rounds, len(p.step_times_s)))
            columns.append(p.batch_size / np.median(draws, axis=1))
        else:
            columns.append(np.full(rounds, p.samples_per_s))
    sizes, w = [p.batch_size for p in points], [p.weight for p in points]
    tolerance = w if all(len(p.step_times_s) >= 3 for p in points) else None
    knees: list[list[int]] = [[] for _ in alphas]
    for y in np.stack(columns, axis=1):
        fit, falls = fit_throughput(list(y), w, None)
        for out, a in zip(knees, alphas, strict=True):
            out.append(_read_knee(sizes, fit, list(y), w, a, tolerance, falls)[0])
    return knees


def _bagged(sizes: Sequence[int], knees: Sequence[int]) -> int:
    """The measured size nearest (on log2 b) to the geometric mean of the resampled knees.

    The alpha rule is a threshold: where the curve crosses alpha * max slowly, a few % of noise
    flips it between sizes a doubling or more apart. Averaging it over resampled fits (bagging)
    smooths that: on sweeps recorded here (lstm, mlp, transformer; 24 rounds cut into runs of
    3 or 4) it cut the pairs of runs whose knees lay more than a doubling apart by 40-60% on the
    lstm and never added any. Without noise every resampled knee is the rule's, and so is this.
    """
    centre = statistics.fmean(math.log2(k) for k in knees)
    return min(sizes, key=lambda b: (abs(math.log2(b) - centre), b))


def find_knee(points: Sequence[Outcome], *, alpha: float = defaults.ALPHA,
              refine: Callable[[int], Outcome | None] | None = None, max_refine: int = 4,
              multiple_of: int = 1, seed: int = 0,
              current_points: Callable[[], Sequence[Outcome]] | None = None,
              drift: float | None = None, drift_corrected: bool = True) -> KneeResult:
    """The throughput knee: the smallest batch size whose throughput is within ``alpha`` of the
    best, read off a fit rather than raw medians, which are noisy and not monotone.

    Fit: weighted isotonic (non-decreasing, pool adjacent violators) regression of samples/s
    on b, each point weighted by the inverse variance of its median (from its step-time IQR,
    floored at the typical IQR of all points). When throughput clearly falls at large b
    (see ``fit_throughput``) the fit is unimodal and the knee is taken against its peak.
    Knee: the smallest b whose fitted value reaches alpha * max, or falls short of it by less
    than one standard error (only when every point has step times; see ``alpha_knee``).
    Where a step-time model t(b) = overhead + per_sample * b (:mod:`batchprof.search.knee.step_model`)
    stays within MODEL_TOLERANCE of the isotonic fit from half the knee up, the rule reads
    the model instead (``step_time_model`` is then set): it pools every size, where the
    isotonic crossing hinges on the points nearest it (see ``_read_knee``). That is
    ``fit_knee_batch``; with step times to resample, ``knee_batch`` is the same rule bagged
    over the bootstrap fits (see ``_bagged``), the same size when the data are clean.
    Refinement: with ``refine``, up to ``max_refine`` more sizes (multiples of ``multiple_of``)
    are measured at the geometric middle between the knee and the point below it. A caller
    whose refinement also re-times other sizes (and so changes their figures) passes
    ``current_points()``: every fit after a refinement then uses all of its latest figures
    instead of ``points`` plus the refined outcomes.
    Confidence: "ambiguous" when the knees of fits to 200 bootstrap resamples of the step
    times (10th..90th percentile, ``knee_interval``) span more than one doubling, when no point
    has step times to resample, or when fewer than three sizes were timed; else "high".
    Kneedle (on log2 b and the rising part of the fit) and the gain per doubling are
    cross-checks; disagreements of more than one doubling are noted.
    """
    if not 0 < alpha <= 1:
        raise ConfigError(f"alpha must be in (0, 1], got {alpha}")
    check_int("max_refine", max_refine, minimum=0)
    check_int("multiple_of", multiple_of)
    outcomes, refined, notes = list(points), [], []

    def fit_now() -> tuple[list[TimedPoint], list[float], bool, list[float] | None]:
        pts = timed_points(outcomes)
        w = [p.weight for p in pts]
        fit, falls = fit_throughput([p.samples_per_s for p in pts], w, None)
        # a measured fall also rules out the step-time model (it cannot fall)
        falls = falls or (bool(pts) and measured.measured_fall(pts) is not None)
        # tolerance needs measured spreads; without step times the weights are guesses
        return pts, fit, falls, (w if all(len(p.step_times_s) >= 3 for p in pts) else None)

    def knee_now(a: float) -> tuple[int, StepTimeModel | None]:
        return _read_knee([p.batch_size for p in pts], fit, [p.samples_per_s for p in pts],
                          [p.weight for p in pts], a, tol, falls)

    pts, fit, falls, tol = fit_now()
    if not pts:
        return KneeResult(None, None, alpha, None, (), (), None, None, "ambiguous",
                          ("no feasible batch size with a throughput to fit",))
    while refine is not None and len(refined) < max_refine:
        sizes = [p.batch_size for p in pts]
        knee = knee_now(alpha)[0]
        below = [b for b in sizes if b < knee]
        if not below:
            break
        mid = round(math.sqrt(below[-1] * knee) / multiple_of) * multiple_of
        if not below[-1] < mid < knee:
            mid = (below[-1] + knee) // 2 // multiple_of * multiple_of
            if not below[-1] < mid < knee:
                break
        outcome = refine(mid)
        if outcome is None:  # the caller's time or rounds ran out
            notes.append(f"no refinement at batch {mid}: the sweep's budget was spent")
            break
        refined.append(outcome)
        if not outcome.feasible:
            notes.append(f"refinement at batch {mid} did not fit ({outcome.reason}); stopped")
            break
        outcomes = list(current_points()) if current_points else outcomes + [outcome]
        pts, fit, falls, tol = fit_now()

    sizes = [p.batch_size for p in pts]
    (fit_knee, model), fit_knee_95 = knee_now(alpha), knee_now(0.95)[0]
    knee, knee95, interval, confidence = fit_knee, fit_knee_95, None, "high"
    if model is not None:
        notes.append(f"the curve near the knee follows the step-time model {model.describe()} "
                     f"(within {MODEL_TOLERANCE:.0%} of the isotonic fit near the knee and "
                     "above); the knee is then settled on the measured points")
    if any(len(p.step_times_s) >= 3 for p in pts):
        knees, knees95 = _bootstrap_knees(pts, (alpha, 0.95), BOOTSTRAP_ROUNDS, seed)
        knee, knee95 = _bagged(sizes, knees), _bagged(sizes, knees95)
        knees.sort()
        interval = (knees[len(knees) // 10], knees[(len(knees) * 9) // 10])
        if interval[1] > 2 * interval[0]:
            confidence = "ambiguous"
            notes.append(f"noise: resampled step times put the knee anywhere in "
                         f"{interval[0]}..{interval[1]}; time more steps or repeat")
    else:
        confidence = "ambiguous"
        notes.append("no step times to judge the noise by")
    few = len(pts) < 3
    if few:
        confidence = "ambiguous"
        notes.append(f"only {len(pts)} batch size(s) timed; a knee needs a curve")
    # Every stated figure settled on the measured points (see batchprof.search.knee.measured)
    smoothed = knee
    knee = measured.settle_knee(pts, smoothed, alpha)
    knee95 = measured.settle_knee_95(pts, knee, knee95)
    best = measured.best_measured(pts)
    if knee != smoothed:
        notes.append(f"the smoothed knee {smoothed} does not reach {alpha:.0%} of the best "
                     f"measured throughput within its own spread; the knee is {knee}, the "
                     "nearest size that does")
    if knee95 is None:
        notes.append("no size from the knee up reaches 95% of the best measured throughput")
    lo, hi, sure = measured.resolution(pts, alpha)
    knee_point = next(p for p in pts if p.batch_size == knee)
    unresolved = measured.ratio_se(knee_point, best, alpha) > (1 - alpha) / 2
    if len(pts) >= 2 and (hi > 2 * lo or unresolved):
        confidence = "ambiguous"
        top = max(hi, sure) if unresolved else hi
        interval = (min(lo, interval[0]), max(top, interval[1])) if interval else (lo, top)
        notes.append(f"spread: the measured throughputs (median spread "
                     f"{statistics.median(measured.relative_sd(p) for p in pts):.0%} of a "
                     f"point) cannot tell the knee apart anywhere in {interval[0]}.."
                     f"{interval[1]}; the rule needs differences of {1 - alpha:.0%} resolved")
    if drift is not None and drift > 1 - alpha and not drift_corrected:
        confidence = "ambiguous"
        notes.append(f"drift: rounds differed by {drift:.0%} and too few rounds were run to "
                     "divide it out")
    if few:  # no curve below the smallest timed size: the knee may lie anywhere under it
        interval = (min(multiple_of, sizes[0]), max(knee, interval[1] if interval else knee))
    if interval is not None and not interval[0] <= knee <= interval[1]:
        interval = (min(interval[0], knee), max(interval[1], knee))
    shown = measured.clip_fit(pts, fit)
    peak = sizes[fit.index(max(fit))]
    fall = measured.measured_fall(pts)
    if fall is not None:
        peak = fall[0]
        last = pts[-1]
        notes.append(f"throughput falls above batch {fall[0]}: {best.samples_per_s:,.1f} "
                     f"samples/s measured there, {last.samples_per_s:,.1f} at batch {fall[1]}")
    elif falls:
        notes.append(f"throughput falls past batch {peak}; the knee is taken against that peak")
    size_set = set(sizes)
    gains = tuple((b, 2 * b, float(shown[sizes.index(2 * b)] / shown[sizes.index(b)] - 1))
                  for b in sizes if b & (b - 1) == 0 and 2 * b in size_set)
    plateau = next((b for b, _, g in gains if g < PLATEAU_GAIN), None)
    if plateau is not None and abs(math.log2(plateau / knee)) > 1:
        notes.append(f"gain per doubling drops below {PLATEAU_GAIN:.0%} at batch {plateau}, "
                     f"more than one doubling from the knee {knee}")
    kneedle = kneedle_knee(sizes, fit)
    agree = None if kneedle is None else abs(math.log2(kneedle / knee)) <= 1
    if agree is False:
        notes.append(f"Kneedle puts the knee at {kneedle}, more than one doubling from {knee}")
    return KneeResult(
        knee_batch=knee, knee_batch_95=knee95, alpha=alpha, max_samples_per_s=max(shown),
        fitted=tuple(zip(sizes, shown, strict=True)), gain_per_doubling=gains,
        kneedle_batch=kneedle, agree=agree, confidence=confidence, notes=tuple(notes),
        knee_interval=interval, peak_batch=peak, throughput_falls=falls,
        plateau_batch=plateau, refined=tuple(refined), fit_knee_batch=fit_knee,
        step_time_model=model, best_measured_samples_per_s=best.samples_per_s,
        best_measured_batch=best.batch_size,
        measured=tuple((p.batch_size, p.samples_per_s, 1 / math.sqrt(p.weight)) for p in pts))
