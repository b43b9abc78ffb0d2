"""Pure search: the largest batch that fits, and the throughput knee.

No torch here. ``find_max_batch`` drives a ``probe(b) -> Outcome`` callable; ``find_knee`` reads
a list of Outcomes (and may call ``refine(b) -> Outcome``). Both are tested on synthetic curves.

Probes of ``find_max_batch`` (start 1, granularity 1, true answer M):
- Outcomes with feasible/infeasible only: doubling, bisection and one confirmation, at most
  ``max_batch_probe_budget(M)``. A hint within 10% cuts that to bisecting its window, about
  log2(0.2 M) + 3: no search on yes/no answers can pin +-10% of M = 1000 in five probes.
- Outcomes that also carry ``peak_bytes`` and ``capacity_bytes``: the search extrapolates peak
  memory (close to affine in b): 5 probes for any M when memory is affine, with or without a
  hint within 10%; where memory is not affine, one failed extrapolation costs one probe over
  the budget, after which the plain ladder takes over.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import ConfigError
from .step_model import StepTimeModel, agrees, fit_step_time

PLATEAU_GAIN = 0.05  # a doubling that gains less than this is on the plateau
MIN_SPREAD = 0.02  # floor on a point's relative IQR: run-to-run drift exceeds in-run spread
DEFAULT_SPREAD = 0.10  # assumed relative IQR when a point has fewer than 3 timed steps
FALL_CHI2 = 9.0  # weighted-SSE gain (a chi-square, ~3 sigma) to accept "throughput falls"
MAX_EXTRAPOLATIONS = 4  # memory-guided probes per search before the plain ladder takes over
BOOTSTRAP_ROUNDS = 200
TOLERANCE_SE = 1.0  # a point within this many standard errors of alpha * max reaches it
MODEL_TOLERANCE = 0.10  # the step-time model must stay this close to the isotonic fit


def _to_dict(obj: Any) -> dict[str, Any]:
    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return _to_dict(v)
        if isinstance(v, (tuple, list)):
            return [plain(x) for x in v]
        return v
    return {f.name: plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}


@dataclass(frozen=True)
class Outcome:
    """What one probe at one batch size found. ``peak_bytes`` is the figure feasibility was
    judged on (compared with ``capacity_bytes``); both optional, they let the search extrapolate."""

    batch_size: int
    feasible: bool
    samples_per_s: float | None = None
    step_times_s: tuple[float, ...] = ()
    reason: str | None = None
    peak_bytes: int | None = None
    capacity_bytes: int | None = None

    @classmethod
    def from_measurement(cls, m: Any) -> Outcome:
        """From a ``batchprof.types.Measurement`` (duck-typed: this floor imports no peers)."""
        return cls(batch_size=m.batch_size, feasible=m.feasible, samples_per_s=m.samples_per_s,
                   step_times_s=tuple(m.step_times_s), reason=m.reason,
                   peak_bytes=m.peak_allocated_bytes, capacity_bytes=m.capacity_bytes)

    def to_dict(self) -> dict[str, Any]:
        return _to_dict(self)


@dataclass(frozen=True)
class MaxBatchResult:
    max_batch: int | None  # largest size run, found feasible and confirmed; None if none fits
    outcomes: tuple[Outcome, ...]  # every probe, in order (confirmation and retries included)
    probes: int
    notes: tuple[str, ...]
    hit_upper_bound: bool  # the bound (max_batch / dataset size) stopped the search, not memory
    first_infeasible: int | None  # smallest size found infeasible (above max_batch)
    non_monotonic: bool = False  # a size found feasible later failed twice; settled below it

    def to_dict(self) -> dict[str, Any]:
        return _to_dict(self)


def max_batch_probe_budget(max_batch: int) -> int:
    """Probes (confirmation included) that doubling + bisection needs at most for answer M.

    The issue's ceil(log2 M) + ceil(log2(M/2)) + 2 evaluated at M + 1, the first size that does
    not fit: identical for every M that is not a power of two; for M = 2^k it is 2 more, which
    no search starting at 1 can avoid (M = 1 needs 1, 2 and a confirmation: 3 probes).
    """
    f = max_batch + 1
    return math.ceil(math.log2(f)) + math.ceil(math.log2(f / 2)) + 2


# ---------------------------------------------------------------------------------------------
# Max feasible batch
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Grid:
    """Candidate sizes by index: multiples of ``step`` from ``min_batch`` up, plus ``min_batch``
    itself when it is not a multiple; ``top`` is the largest allowed size (None: unbounded)."""

    min_batch: int
    step: int
    top: int | None

    @property
    def first_multiple(self) -> int:
        return -(-self.min_batch // self.step) * self.step

    @property
    def offset(self) -> int:
        return 1 if self.min_batch % self.step else 0

    def size(self, i: int) -> int:
        if self.offset and i == 0:
            return self.min_batch
        return self.first_multiple + (i - self.offset) * self.step

    def down(self, b: int) -> int | None:  # index of the largest candidate <= b
        if b < self.min_batch:
            return None
        if b < self.first_multiple:
            return 0
        return self.offset + (b - self.first_multiple) // self.step

    def up(self, b: int) -> int:  # index of the smallest candidate >= b
        if b <= self.min_batch:
            return 0
        return self.offset + max(0, -(-(b - self.first_multiple) // self.step))

    @property
    def top_index(self) -> int | None:
        return None if self.top is None else self.down(self.top)


class _MaxBatchSearch:
    """State of one search: trusted verdicts per candidate index and the bracket lo < hi."""

    def __init__(self, probe: Callable[[int], Outcome], grid: _Grid,
                 on_probe: Callable[[Outcome], None] | None, extrapolate: bool):
        self.probe, self.grid, self.on_probe = probe, grid, on_probe
        self.known: dict[int, bool] = {}
        self.outcomes: list[Outcome] = []
        self.notes: list[str] = []
        self.lo: int | None = None  # largest index trusted feasible
        self.hi: int | None = None  # smallest index trusted infeasible
        self.soft_hi: int | None = None  # a hint's window top: assumed infeasible until probed
        self.non_monotonic = False
        self.extrapolate = extrapolate
        self.extrapolations = 0
        self.hinted = False
        self.start = 1
        self.first = 0  # index of the first probe
        self.predicted: bool | None = None  # what memory extrapolation expected of the next probe

    def run(self, i: int) -> Outcome:
        b = self.grid.size(i)
        outcome = self.probe(b)
        if not isinstance(outcome, Outcome) or outcome.batch_size != b:
            raise ValueError(f"probe({b}) must return an Outcome with batch_size={b}, got {outcome!r}")
        self.outcomes.append(outcome)
        if self.on_probe is not None:
            self.on_probe(outcome)
        return outcome

    def visit(self, i: int) -> None:
        ok = self.run(i).feasible
        self.known[i] = ok
        if self.predicted is not None and self.predicted != ok:
            # memory is not affine enough here; the plain ladder keeps the worst case bounded
            self.extrapolate = False
            self.notes.append(f"memory extrapolation missed at batch {self.grid.size(i)}; "
                              "continued without it")
        if ok:
            self.lo = i if self.lo is None else max(self.lo, i)
        else:
            self.hi = i if self.hi is None else min(self.hi, i)

    def search(self, i: int | None) -> None:
        while i is not None:
            self.visit(i)
            i = self.next_index()

    def next_index(self) -> int | None:
        lo, hi, top = self.lo, self.hi, self.grid.top_index
        self.predicted = None
        if lo is not None and (lo == top or (hi is not None and hi == lo + 1)):
            return None
        if lo is None:  # nothing fits yet: halve down from the smallest failure
            if hi == 0:
                return None
            below = self.grid.down(self.grid.size(hi) // 2)
            return min(hi - 1, 0 if below is None else below)
        if self.extrapolate and self.extrapolations < MAX_EXTRAPOLATIONS:
            guess, secant = self.memory_guess()
            if guess is not None:
                ceilings = [x - 1 for x in (hi, None if top is None else top + 1) if x is not None]
                i = lo + 1 if guess <= lo else min([guess, *ceilings])
                # without a hint, stay where a fall-back to the doubling ladder still fits the
                # budget (the plain search spends about log2(b) + 1 probes to reach b), except
                # to check that lo + 1 fails, which ends the search when it does
                verify = secant and guess <= lo
                if i not in self.known and (self.hinted or verify or len(self.outcomes) + 1
                                            <= self.grid.size(i).bit_length()):
                    self.extrapolations += 1
                    # a one-point guess is only a lower bound: it cannot predict a failure
                    self.predicted = True if guess > lo else (False if secant else None)
                    return i
        if self.hinted:
            if hi is not None:
                return (lo + hi) // 2
            if self.soft_hi is not None and self.soft_hi > lo:
                return self.soft_hi if self.soft_hi == lo + 1 else (lo + self.soft_hi) // 2
            # past the window: double the distance from the window's bottom, not the size
            target = 2 * self.grid.size(lo) - self.grid.size(self.first)
        else:  # the doubling ladder from start (rejoined after extrapolating), bisect below hi
            target = self.start << (self.grid.size(lo) // self.start).bit_length()
        grown = max(lo + 1, self.grid.up(target))
        if hi is not None and grown >= hi:
            return (lo + hi) // 2
        return grown if top is None else min(grown, top)

    def memory_guess(self) -> tuple[int | None, bool]:
        """Index of the largest size whose extrapolated peak fits, and whether it came from a
        secant through the two largest trusted feasible points (else from one point, a line
        through the origin: an underestimate, since resident bytes make the intercept positive)."""
        assert self.lo is not None
        cap = next((o.capacity_bytes for o in reversed(self.outcomes)
                    if o.capacity_bytes is not None), None)
        lo_size = self.grid.size(self.lo)
        pts = sorted({o.batch_size: o.peak_bytes for o in self.outcomes if o.feasible
                      and o.peak_bytes and o.batch_size <= lo_size}.items())
        if cap is None or not pts:
            return None, False
        if len(pts) == 1:
            (b, p), = pts
            est = b * cap // p
        else:
            (b1, p1), (b2, p2) = pts[-2:]
            if p2 <= p1:
                return None, False
            est = b2 + (cap - p2) * (b2 - b1) // (p2 - p1)
        i = self.grid.down(est)
        return (-1 if i is None else i), len(pts) > 1

    def confirm(self) -> bool:
        """Re-run the answer; True when it stands. A failure is retried once; a second failure
        means memory is not monotone in b (or drifts): drop the answer and search below it."""
        assert self.lo is not None
        b = self.grid.size(self.lo)
        if self.run(self.lo).feasible:
            return True
        if self.run(self.lo).feasible:
            self.notes.append(f"batch {b} failed once on re-run and passed on retry (flaky)")
            return True
        self.non_monotonic, self.extrapolate = True, False
        self.notes.append(f"batch {b} fit earlier but failed twice on re-run: memory is not "
                          "monotone in batch size (or drifts); settled below it")
        self.known[self.lo] = False
        self.hi = self.lo
        self.lo = max((j for j, ok in self.known.items() if ok and j < self.hi), default=None)
        return False


def _check_int(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value}")
    return value


def find_max_batch(probe: Callable[[int], Outcome], *, start: int = 1, hint: int | None = None,
                   min_batch: int = 1, max_batch: int | None = None, multiple_of: int = 1,
                   dataset_size: int | None = None,
                   on_probe: Callable[[Outcome], None] | None = None,
                   extrapolate: bool = True) -> MaxBatchResult:
    """Largest batch size that fits: grow (doubling) from ``start``, or try the window a ``hint``
    claims (hint/1.1 .. hint/0.9, i.e. +-10%), then bisect between the last fit and the first
    failure. Candidates are multiples of ``multiple_of`` (and ``min_batch``) within
    [min_batch, min(max_batch, dataset_size)]. Each size is probed once, except the answer,
    which is re-run before it is reported. Never returns a size not run and found feasible.

    The search never probes at or below a size that fit, so an OOM there (flaky or
    non-monotonic memory) shows up on the re-run: it is retried once; a second failure drops
    the answer, sets ``non_monotonic`` with a note, and the search settles below it. A hint
    that is far too high costs about log2(hint / answer) extra probes (halving down to a fit).

    Raises ConfigError for inconsistent bounds; exceptions from ``probe`` propagate (the
    caller has already seen every Outcome through ``on_probe``).
    """
    _check_int("--min-batch", min_batch)
    _check_int("--multiple-of", multiple_of)
    _check_int("start batch", start)
    if max_batch is not None and _check_int("--max-batch", max_batch) < min_batch:
        raise ConfigError(f"--max-batch {max_batch} is below --min-batch {min_batch}; "
                          "raise --max-batch or lower --min-batch")
    if dataset_size is not None and _check_int("--dataset-size", dataset_size) < min_batch:
        raise ConfigError(f"--dataset-size {dataset_size} is below --min-batch {min_batch}: "
                          "no batch size can be drawn from the data set")
    bounds = [x for x in (max_batch, dataset_size) if x is not None]
    top = min(bounds) if bounds else None
    grid = _Grid(min_batch, multiple_of, top)
    s = _MaxBatchSearch(probe, grid, on_probe, extrapolate)
    if hint is not None:
        hint = _check_int("hint", hint)
        clamped = min(max(hint, min_batch), top if top is not None else hint)
        if clamped != hint:
            s.notes.append(f"hint {hint} clamped to {clamped} (the allowed range)")
        bottom = grid.down(clamped * 10 // 11)  # fits if the hint is within 10% of the truth
        first = 0 if bottom is None else bottom
        s.soft_hi = grid.up(clamped * 10 // 9 + 1)
        s.hinted = True
    else:
        first = grid.up(start)
    if grid.top_index is not None:
        first = min(first, grid.top_index)
    s.first, s.start = first, grid.size(first)
    s.search(first)
    while s.lo is not None and not s.confirm():
        s.search(s.next_index())

    answer = None if s.lo is None else grid.size(s.lo)
    hit = answer is not None and s.lo == grid.top_index
    if answer is None:
        failed = next((o for o in reversed(s.outcomes) if o.batch_size == min_batch), None)
        why = f": {failed.reason}" if failed is not None and failed.reason else ""
        s.notes.append(f"nothing fits: batch size {min_batch} (the smallest allowed) failed{why}")
    elif hit:
        which = "dataset size" if dataset_size is not None and top == dataset_size else "--max-batch"
        s.notes.append(f"stopped at the {which} bound ({top}): memory was not the limit")
    return MaxBatchResult(
        max_batch=answer, outcomes=tuple(s.outcomes), probes=len(s.outcomes),
        notes=tuple(s.notes), hit_upper_bound=hit,
        first_infeasible=None if s.hi is None else grid.size(s.hi),
        non_monotonic=s.non_monotonic)


# ---------------------------------------------------------------------------------------------
# Throughput knee
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class KneeResult:
    knee_batch: int | None  # the bagged alpha rule (see find_knee); = fit_knee_batch without noise
    knee_batch_95: int | None  # the same for alpha = 0.95
    alpha: float
    max_samples_per_s: float | None  # the fitted maximum
    fitted: tuple[tuple[int, float], ...]  # (b, fitted samples/s), increasing b
    gain_per_doubling: tuple[tuple[int, int, float], ...]  # (b, 2b, fitted gain) for powers of 2
    kneedle_batch: int | None  # Kneedle on (log2 b, fitted); None when it finds no knee
    agree: bool | None  # Kneedle within one doubling of knee_batch; None without Kneedle
    confidence: str  # "high" or "ambiguous" (see find_knee)
    notes: tuple[str, ...]
    knee_interval: tuple[int, int] | None = None  # bootstrap 10th..90th percentile of the knee
    peak_batch: int | None = None  # where the fit peaks
    throughput_falls: bool = False  # fitted throughput drops past peak_batch
    plateau_batch: int | None = None  # first b whose doubling gains < PLATEAU_GAIN
    refined: tuple[Outcome, ...] = ()  # what refine() returned, in call order
    fit_knee_batch: int | None = None  # the alpha rule on the one fit of all the data
    step_time_model: StepTimeModel | None = None  # when the knee was read off it (see find_knee)

    def to_dict(self) -> dict[str, Any]:
        return _to_dict(self)


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
class _Point:
    batch_size: int
    samples_per_s: float
    weight: float  # inverse variance of the median throughput estimate
    step_times_s: tuple[float, ...]


def _relative_spread(times: Sequence[float]) -> float:
    if len(times) < 3:
        return DEFAULT_SPREAD
    q1, median, q3 = statistics.quantiles(times, n=4, method="inclusive")
    return max(MIN_SPREAD, (q3 - q1) / median) if median > 0 else DEFAULT_SPREAD


def _points(outcomes: Sequence[Outcome]) -> list[_Point]:
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
    spreads = {b: _relative_spread(ts) for b, ts in times.items() if len(ts) >= 3}
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
        points.append(_Point(b, rate, 1.0 / sd**2, ts))
    return points


def _pava(y: Sequence[float], w: Sequence[float]) -> tuple[list[float], list[float]]:
    """Weighted non-decreasing least-squares fit (pool adjacent violators).

    Returns the fit and, for each prefix length 0..n, the weighted SSE of that prefix's fit.
    """
    blocks: list[list[float]] = []  # [sum w, sum w*y, sum w*y^2, count]
    sse, sses = 0.0, [0.0]

    def block_sse(b: list[float]) -> float:
        return max(0.0, b[2] - b[1] * b[1] / b[0])

    for yi, wi in zip(y, w, strict=True):
        block = [wi, wi * yi, wi * yi * yi, 1.0]
        while blocks and blocks[-1][1] / blocks[-1][0] > block[1] / block[0]:
            prev = blocks.pop()
            sse -= block_sse(prev)
            block = [a + b for a, b in zip(prev, block, strict=True)]
        blocks.append(block)
        sse += block_sse(block)
        sses.append(sse)
    return [float(b[1] / b[0]) for b in blocks for _ in range(int(b[3]))], sses


def _fit(y: Sequence[float], w: Sequence[float], allow_fall: bool | None
         ) -> tuple[list[float], bool]:
    """Monotone fit, or unimodal (rises, then falls) when that fits clearly better.

    ``allow_fall=None`` decides: unimodal when it lowers the weighted SSE (a chi-square, as
    weights are inverse variances) by more than FALL_CHI2 and the fitted fall is material.
    """
    rising, pre = _pava(y, w)
    if allow_fall is False or len(y) < 3:
        return rising, False
    _, suf = _pava(y[::-1], w[::-1])
    n = len(y)
    k = min(range(1, n + 1), key=lambda k: (pre[k] + suf[n - k], -k))
    if k == n:
        return rising, False
    fall = _pava(y[k:][::-1], w[k:][::-1])[0][::-1]
    fit = _pava(y[:k], w[:k])[0] + fall
    if allow_fall is None and not (pre[n] - pre[k] - suf[n - k] > FALL_CHI2
                                   and fit[-1] < (1 - PLATEAU_GAIN) * max(fit)):
        return rising, False
    return fit, True


def _alpha_knee(sizes: Sequence[int], fit: Sequence[float], alpha: float,
                weights: Sequence[float] | None = None) -> int:
    """Smallest b whose fitted throughput reaches alpha * max, or (given inverse-variance
    weights) falls short of it by less than one standard error of the difference. The max of a
    noisy fit is biased up and a plateau point that came out low would otherwise move the knee
    along the plateau: tolerance by one standard error keeps repeated runs together."""
    top = max(range(len(fit)), key=fit.__getitem__)
    block_weight = [0.0] * len(fit)  # a fitted value's weight is that of its pooled block
    if weights is not None:
        start = 0
        for i in range(1, len(fit) + 1):
            if i == len(fit) or fit[i] != fit[start]:
                block_weight[start:i] = [sum(weights[start:i])] * (i - start)
                start = i
    for b, f, wb in zip(sizes, fit, block_weight, strict=True):
        se = math.sqrt(1 / wb + alpha**2 / block_weight[top]) if weights is not None else 0.0
        if f >= alpha * fit[top] - TOLERANCE_SE * se:
            return b
    raise AssertionError("unreachable: the maximum itself qualifies")


def _kneedle(sizes: Sequence[int], fit: Sequence[float]) -> int | None:
    peak = fit.index(max(fit))
    xs, ys = [math.log2(b) for b in sizes[: peak + 1]], list(fit[: peak + 1])
    if len(xs) < 3 or ys[-1] <= ys[0]:
        return None
    from kneed import KneeLocator  # lazily: only the knee needs it

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "no knee found" is an answer here, not a warning
        # online: keep looking past a first "knee" at a convex start (a sigmoid in log2 b)
        knee = KneeLocator(xs, ys, curve="concave", direction="increasing", online=True).knee
    if knee is None:
        return None
    i = min(range(len(xs)), key=lambda i: abs(xs[i] - knee))
    # kneed answers even for a curve that is convex in log2 b (no bulge above the chord,
    # e.g. throughput linear in b up to a plateau), typically with the first point: no knee
    bulge = (ys[i] - ys[0]) / (ys[-1] - ys[0]) - (xs[i] - xs[0]) / (xs[-1] - xs[0])
    return sizes[i] if bulge > 0 else None


def _read_knee(sizes: Sequence[int], fit: Sequence[float], rates: Sequence[float],
               weights: Sequence[float], alpha: float, tolerance: Sequence[float] | None,
               falls: bool) -> tuple[int, StepTimeModel | None]:
    """The alpha rule on the step-time model where it agrees with the isotonic fit (within
    MODEL_TOLERANCE from half the earlier of the two knees up), else on the isotonic fit.

    The model pools every size, so its crossing does not hinge on the one or two points nearest
    it (see :mod:`batchprof.step_model`); where it does not describe the curve (throughput
    falls, a GPU's flat-then-linear step time) the model-free rule stands. The knee is a
    measured size either way: the smallest whose modelled throughput reaches alpha times the
    modelled throughput at the largest size.
    """
    knee = _alpha_knee(sizes, fit, alpha, tolerance)
    model = None if falls else fit_step_time(sizes, rates, weights)
    if model is None:
        return knee, None
    model_knee = _alpha_knee(sizes, [model.samples_per_s(b) for b in sizes], alpha)
    if not agrees(model, sizes, fit, min(knee, model_knee) / 2, MODEL_TOLERANCE):
        return knee, None
    return model_knee, model


def _bootstrap_knees(points: Sequence[_Point], alpha: float, rounds: int, seed: int
                     ) -> list[int]:
    """Knees of fits to resampled data: each point's step times drawn with replacement."""
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
    knees = []
    for y in np.stack(columns, axis=1):
        fit, falls = _fit(list(y), w, None)
        knees.append(_read_knee(sizes, fit, list(y), w, alpha, tolerance, falls)[0])
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


def find_knee(points: Sequence[Outcome], *, alpha: float = 0.9,
              refine: Callable[[int], Outcome] | None = None, max_refine: int = 4,
              multiple_of: int = 1, seed: int = 0,
              current_points: Callable[[], Sequence[Outcome]] | None = None) -> KneeResult:
    """The throughput knee: the smallest batch size whose throughput is within ``alpha`` of the
    best, read off a fit rather than raw medians, which are noisy and not monotone.

    Fit: weighted isotonic (non-decreasing, pool adjacent violators) regression of samples/s
    on b, each point weighted by the inverse variance of its median (from its step-time IQR,
    floored at the typical IQR of all points). When throughput clearly falls at large b
    (see ``_fit``) the fit is unimodal and the knee is taken against its peak.
    Knee: the smallest b whose fitted value reaches alpha * max, or falls short of it by less
    than one standard error (only when every point has step times; see ``_alpha_knee``).
    Where a step-time model t(b) = overhead + per_sample * b (:mod:`batchprof.step_model`)
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
    _check_int("max_refine", max_refine, minimum=0)
    _check_int("--multiple-of", multiple_of)
    outcomes, refined, notes = list(points), [], []

    def fit_now() -> tuple[list[_Point], list[float], bool, list[float] | None]:
        pts = _points(outcomes)
        w = [p.weight for p in pts]
        fit, falls = _fit([p.samples_per_s for p in pts], w, None)
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
        refined.append(outcome)
        if not outcome.feasible:
            notes.append(f"refinement at batch {mid} did not fit ({outcome.reason}); stopped")
            break
        outcomes = list(current_points()) if current_points else outcomes + [outcome]
        pts, fit, falls, tol = fit_now()

    sizes = [p.batch_size for p in pts]
    (fit_knee, model), knee95 = knee_now(alpha), knee_now(0.95)[0]
    knee, interval, confidence = fit_knee, None, "high"
    if model is not None:
        notes.append(f"knee read off the step-time model {model.describe()} (within "
                     f"{MODEL_TOLERANCE:.0%} of the isotonic fit near the knee and above)")
    if any(len(p.step_times_s) >= 3 for p in pts):
        knees = sorted(_bootstrap_knees(pts, alpha, BOOTSTRAP_ROUNDS, seed))
        knee = _bagged(sizes, knees)
        interval = (knees[len(knees) // 10], knees[(len(knees) * 9) // 10])
        if interval[1] > 2 * interval[0]:
            confidence = "ambiguous"
            notes.append(f"noise: resampled step times put the knee anywhere in "
                         f"{interval[0]}..{interval[1]}; time more steps or repeat")
    else:
        confidence = "ambiguous"
        notes.append("no step times to judge the noise by")
    if len(pts) < 3:
        confidence = "ambiguous"
        notes.append(f"only {len(pts)} batch size(s) timed; a knee needs a curve")
    peak = sizes[fit.index(max(fit))]
    if falls:
        notes.append(f"throughput falls past batch {peak}; the knee is taken against that peak")
    size_set = set(sizes)
    gains = tuple((b, 2 * b, float(fit[sizes.index(2 * b)] / fit[sizes.index(b)] - 1))
                  for b in sizes if b & (b - 1) == 0 and 2 * b in size_set)
    plateau = next((b for b, _, g in gains if g < PLATEAU_GAIN), None)
    if plateau is not None and abs(math.log2(plateau / knee)) > 1:
        notes.append(f"gain per doubling drops below {PLATEAU_GAIN:.0%} at batch {plateau}, "
                     f"more than one doubling from the knee {knee}")
    kneedle = _kneedle(sizes, fit)
    agree = None if kneedle is None else abs(math.log2(kneedle / knee)) <= 1
    if agree is False:
        notes.append(f"Kneedle puts the knee at {kneedle}, more than one doubling from {knee}")
    return KneeResult(
        knee_batch=knee, knee_batch_95=knee95, alpha=alpha, max_samples_per_s=max(fit),
        fitted=tuple(zip(sizes, fit, strict=True)), gain_per_doubling=gains,
        kneedle_batch=kneedle, agree=agree, confidence=confidence, notes=tuple(notes),
        knee_interval=interval, peak_batch=peak, throughput_falls=falls,
        plateau_batch=plateau, refined=tuple(refined), fit_knee_batch=fit_knee,
        step_time_model=model)
