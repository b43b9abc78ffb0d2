"""ProfileResult: everything one ``batchprof.profile`` run found, as a frozen record.

It keeps every raw Measurement in run order (the search's probes, the throughput ladder, the
knee refinement), the search results as the pure search functions returned them, and what the
run was asked to do (options) and where (environment). It converts to a plain dict (JSON) and
back, and to a pandas table (``to_frame``, built by :mod:`batchprof.records.frame`, the only module that
imports pandas).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from batchprof.noise.record import NoiseScaleResult
from batchprof.records.measurement import Measurement
from batchprof.records.search import (
    KneeResult,
    MaxBatchResult,
    knee_from_dict,
    max_search_from_dict,
)
from batchprof.records.step_times import StepTimes, TimedAtBatch
from batchprof.spec import RunSpec

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd


@dataclass(frozen=True)
class BatchPoint(TimedAtBatch):
    """Every measurement at one batch size, pooled: the figures a report shows per size."""

    batch_size: int
    feasible: bool  # the last run at this size fit (a confirmed answer was run twice)
    runs: int
    peak_allocated_bytes: int | None
    activation_bytes: int | None
    step_times_s: tuple[float, ...]  # pooled over runs


@dataclass(frozen=True)
class ProfileResult:
    """The largest batch that fits, the throughput knee, a recommendation, and the evidence.

    ``max_batch`` is the largest size that was run and found feasible (None when nothing fits);
    ``knee_batch`` the smallest size whose fitted throughput is within ``alpha`` of the best.
    ``interrupted`` marks a partial result (Ctrl-C); ``error`` names what stopped a run that
    failed (a non-OOM step error), whose partial result is attached to the exception.
    """

    workload: str
    device: str
    memory_limit_bytes: int | None
    capacity_bytes: int | None
    max_batch: int | None
    knee_batch: int | None
    recommended_batch: int | None
    recommendation_reason: str
    probes: tuple[Measurement, ...]
    knee: KneeResult | None = None
    max_search: MaxBatchResult | None = None
    notes: tuple[str, ...] = ()
    options: dict[str, Any] = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=dict)
    started_at: str | None = None  # ISO 8601, local time with offset
    elapsed_s: float | None = None
    interrupted: bool = False
    error: str | None = None
    noise_scale: NoiseScaleResult | None = None  # profile(..., noise_scale=True)
    spec: RunSpec | None = None  # what the run was asked to do (options is its dict view)
    ladder: tuple[int, ...] = ()  # the sizes timed for the knee, as run
    leak: str | None = None  # a loud note when memory kept after cleanup grew (probe.leak)
    tokens_per_sample: int | None = None  # the workload's (tokens/s = this x samples/s)

    # ---- derived ------------------------------------------------------------------------
    @property
    def knee_batch_95(self) -> int | None:
        return self.knee.knee_batch_95 if self.knee else None

    @property
    def dataset_size(self) -> int | None:
        if self.spec is not None:
            return self.spec.dataset_size
        return self.options.get("dataset_size")

    @property
    def complete(self) -> bool:
        return not self.interrupted and self.error is None

    def points(self) -> list[BatchPoint]:
        """One BatchPoint per batch size probed, increasing b."""
        by_size: dict[int, list[Measurement]] = {}
        for m in self.probes:
            by_size.setdefault(m.batch_size, []).append(m)
        points = []
        for b in sorted(by_size):
            ms = by_size[b]
            fit = [m for m in ms if m.feasible]
            peaks = [m.peak_allocated_bytes for m in ms if m.peak_allocated_bytes is not None]
            acts = [m.activation_bytes for m in fit if m.activation_bytes is not None]
            points.append(BatchPoint(
                batch_size=b, feasible=ms[-1].feasible, runs=len(ms),
                peak_allocated_bytes=max(peaks) if peaks else None,
                activation_bytes=max(acts) if acts else None,
                step_times_s=StepTimes.merge(m.step_times for m in fit).times_s))
        return points

    def tokens_per_s(self, samples_per_s: float | None) -> float | None:
        """tokens/s for a samples/s figure; None when a sample is not made of tokens."""
        if samples_per_s is None or self.tokens_per_sample is None:
            return None
        return samples_per_s * self.tokens_per_sample

    def steps_per_epoch(self, batch_size: int) -> int | None:
        """ceil(dataset_size / batch): the last, partial batch is still a step."""
        n = self.dataset_size
        return None if n is None else math.ceil(n / batch_size)

    def to_frame(self) -> pd.DataFrame:
        """Max batch, then the throughput ladder, then the knee, one row each (see report)."""
        from batchprof.records.frame import result_frame

        return result_frame(self)

    # ---- conversion ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "workload": self.workload, "device": self.device,
            "memory_limit_bytes": self.memory_limit_bytes, "capacity_bytes": self.capacity_bytes,
            "max_batch": self.max_batch, "knee_batch": self.knee_batch,
            "knee_batch_95": self.knee_batch_95,
            "recommended_batch": self.recommended_batch,
            "recommendation_reason": self.recommendation_reason,
            "probes": [m.to_dict() for m in self.probes],
            "knee": self.knee.to_dict() if self.knee else None,
            "max_search": self.max_search.to_dict() if self.max_search else None,
            "notes": list(self.notes), "options": dict(self.options),
            "environment": dict(self.environment), "started_at": self.started_at,
            "elapsed_s": self.elapsed_s, "interrupted": self.interrupted, "error": self.error,
            "noise_scale": self.noise_scale.to_dict() if self.noise_scale else None,
            "ladder": list(self.ladder),
            "leak": self.leak,
            "tokens_per_sample": self.tokens_per_sample,
            "best_tokens_per_s": self.tokens_per_s(
                self.knee.best_measured_samples_per_s if self.knee else None),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ProfileResult:
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in d.items() if k in names}
        kwargs["probes"] = tuple(Measurement.from_dict(m) for m in d.get("probes", ()))
        kwargs["notes"] = tuple(d.get("notes", ()))
        kwargs["options"] = dict(d.get("options", {}))
        kwargs["spec"] = RunSpec.from_options(kwargs["options"]) if kwargs["options"] else None
        kwargs["ladder"] = tuple(d.get("ladder", ()))
        kwargs["environment"] = dict(d.get("environment", {}))
        kwargs["knee"] = knee_from_dict(d["knee"]) if d.get("knee") else None
        kwargs["max_search"] = max_search_from_dict(d["max_search"]) if d.get("max_search") else None
        kwargs["noise_scale"] = (NoiseScaleResult.from_dict(d["noise_scale"])
                                 if d.get("noise_scale") else None)
        return cls(**kwargs)
