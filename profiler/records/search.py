"""What the pure searches return: per-probe Outcomes, the max-batch and knee results, the
step-time model. Frozen records with ``to_dict``; their inverses live here too."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from batchprof.units import format_seconds


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
        """From a ``batchprof.records.Measurement`` (duck-typed: this floor imports no peers)."""
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


# ---------------------------------------------------------------------------------------------
# Throughput knee
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class KneeResult:
    knee_batch: int | None  # the bagged alpha rule (see find_knee); = fit_knee_batch without noise
    knee_batch_95: int | None  # the same for alpha = 0.95
    alpha: float
    max_samples_per_s: float | None  # the fitted maximum (kept within the measured spreads)
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
    best_measured_samples_per_s: float | None = None  # the highest measured median throughput
    best_measured_batch: int | None = None  # where it was measured
    # (b, measured samples/s, its standard error): the points the knee rule read, drift-corrected
    measured: tuple[tuple[int, float, float], ...] = ()
    rounds: int | None = None  # sweep rounds run (None: not from a sweep)
    budget_ended: bool = False  # the time budget stopped the sweep before its policy did

    def to_dict(self) -> dict[str, Any]:
        return _to_dict(self)


@dataclass(frozen=True)
class StepTimeModel:
    overhead_s: float  # fixed cost of one step, whatever its batch size
    per_sample_s: float  # added cost of one more sample

    def samples_per_s(self, batch_size: float) -> float:
        return batch_size / (self.overhead_s + self.per_sample_s * batch_size)

    @property
    def limit_samples_per_s(self) -> float:
        """Throughput as the batch grows without bound."""
        return 1.0 / self.per_sample_s

    def describe(self) -> str:
        return (f"t(b) = {format_seconds(self.overhead_s)} + "
                f"{format_seconds(self.per_sample_s)} x b")


# The search module's records have to_dict only; their inverses live here, next to the one
# record that stores them.
def outcome_from_dict(d: dict[str, Any]) -> Outcome:
    names = {f.name for f in dataclasses.fields(Outcome)}
    kwargs = {k: v for k, v in d.items() if k in names}
    kwargs["step_times_s"] = tuple(d.get("step_times_s", ()))
    return Outcome(**kwargs)


def max_search_from_dict(d: dict[str, Any]) -> MaxBatchResult:
    names = {f.name for f in dataclasses.fields(MaxBatchResult)}
    kwargs = {k: v for k, v in d.items() if k in names}
    kwargs["outcomes"] = tuple(outcome_from_dict(o) for o in d.get("outcomes", ()))
    kwargs["notes"] = tuple(d.get("notes", ()))
    return MaxBatchResult(**kwargs)


def knee_from_dict(d: dict[str, Any]) -> KneeResult:
    names = {f.name for f in dataclasses.fields(KneeResult)}
    kwargs = {k: v for k, v in d.items() if k in names}
    kwargs["fitted"] = tuple((int(b), float(s)) for b, s in d.get("fitted", ()))
    kwargs["gain_per_doubling"] = tuple((int(a), int(b), float(g))
                                        for a, b, g in d.get("gain_per_doubling", ()))
    kwargs["notes"] = tuple(d.get("notes", ()))
    if d.get("knee_interval") is not None:
        kwargs["knee_interval"] = tuple(d["knee_interval"])
    kwargs["refined"] = tuple(outcome_from_dict(o) for o in d.get("refined", ()))
    kwargs["measured"] = tuple((int(b), float(r), float(e)) for b, r, e in d.get("measured", ()))
    if d.get("step_time_model") is not None:
        kwargs["step_time_model"] = StepTimeModel(**d["step_time_model"])
    return KneeResult(**kwargs)
