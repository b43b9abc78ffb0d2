"""Measurement (one probe) and SampleSeries (one sampled metric). Units live in field names; raw
samples are kept, statistics derived.

Every record converts to a plain dict (JSON) and back, and to a flat pandas-friendly row.
An unavailable figure is ``None`` (shown as "n/a"), never a plausible 0.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from batchprof.records.roofline import FIELDS as ROOFLINE_FIELDS
from batchprof.records.roofline import RooflinePoint
from batchprof.records.step_times import TimedAtBatch


@dataclass(frozen=True)
class SampleSeries:
    """One sampled metric over one probe window (e.g. ``kernel_busy_pct`` from NVML).

    ``values`` may hold None where the device did not answer that sample.
    """

    name: str
    unit: str
    times_s: tuple[float, ...]
    values: tuple[float | None, ...]

    @property
    def _present(self) -> list[float]:
        return [v for v in self.values if v is not None]

    @property
    def mean(self) -> float | None:
        present = self._present
        return sum(present) / len(present) if present else None

    @property
    def max(self) -> float | None:
        present = self._present
        return max(present) if present else None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "unit": self.unit, "times_s": list(self.times_s),
                "values": list(self.values), "mean": self.mean, "max": self.max}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SampleSeries:
        return cls(name=d["name"], unit=d["unit"], times_s=tuple(d["times_s"]),
                   values=tuple(d["values"]))


@dataclass(frozen=True)
class Measurement(TimedAtBatch):
    """One batch size, one backend: did the steady-state step fit, how much memory, how fast.

    Memory figures follow DESIGN.md ("What every number means"). ``step_times_s`` are the raw
    timed steps (warm-up excluded); median, IQR and throughput are derived from them.
    """

    workload: str
    batch_size: int
    device: str
    feasible: bool
    reason: str | None = None  # why infeasible ("out of memory: ...", "peak exceeds budget")
    memory_limit_bytes: int | None = None
    capacity_bytes: int | None = None  # what feasibility was judged against (limit or device)
    resident_bytes: int | None = None  # held when the step began: params, buffers, optim, batch
    peak_allocated_bytes: int | None = None
    peak_reserved_bytes: int | None = None
    activation_bytes: int | None = None
    step_times_s: tuple[float, ...] = ()
    num_alloc_retries: int | None = None  # CUDA caching-allocator thrash; None elsewhere
    samples: tuple[SampleSeries, ...] = ()
    predicted_peak_allocated_bytes: int | None = None
    wall_time_s: float | None = None  # whole probe, build to cleanup
    roofline: RooflinePoint | None = None  # feasible, timed probes of a run with the roofline
    extra: dict[str, Any] = field(default_factory=dict)  # crash, leak figures etc. (JSON-able)
    notes: tuple[str, ...] = ()  # what a reader must know: a NaN loss, a leak, a crash

    @property
    def outcome(self) -> str:
        """``"feasible"``, ``"infeasible"`` (OOM / over budget) or ``"crashed"`` (the probe's
        worker process died: ``extra["crash"]`` holds the signal or exit code)."""
        if "crash" in self.extra:
            return "crashed"
        return "feasible" if self.feasible else "infeasible"

    # ---- derived statistics -------------------------------------------------------------
    @property
    def step_time_iqr_s(self) -> float | None:
        return self.step_times.iqr_s

    @property
    def noisy(self) -> bool:
        """True when the spread is large (IQR > 10% of median): treat throughput with care."""
        return self.step_times.noisy

    @property
    def timed(self) -> bool:
        """False for a memory-only probe (``measure(timed=False)``, the max-batch search's):
        no step was timed, so there is no throughput here to reuse; time the size again."""
        return bool(self.step_times_s)

    def sample(self, name: str) -> SampleSeries | None:
        return next((s for s in self.samples if s.name == name), None)

    # ---- conversion ---------------------------------------------------------------------
    def _extra_with_roofline(self) -> dict[str, Any]:
        # JSON keeps the roofline figures flat in "extra", where they were before the record
        return {**self.extra, **(self.roofline.to_dict() if self.roofline else {})}

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "roofline"}
        d["step_times_s"] = list(self.step_times_s)
        d["samples"] = [s.to_dict() for s in self.samples]
        d["extra"] = self._extra_with_roofline()
        d["notes"] = list(self.notes)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Measurement:
        names = {f.name for f in dataclasses.fields(cls)} - {"roofline"}
        kwargs = {k: v for k, v in d.items() if k in names}
        kwargs["step_times_s"] = tuple(d.get("step_times_s", ()))
        kwargs["samples"] = tuple(SampleSeries.from_dict(s) for s in d.get("samples", ()))
        extra = dict(d.get("extra", {}))
        if RooflinePoint.in_extra(extra):
            kwargs["roofline"] = RooflinePoint.from_dict(extra)
            extra = {k: v for k, v in extra.items() if k not in ROOFLINE_FIELDS}
        kwargs["extra"] = extra
        kwargs["notes"] = tuple(str(n) for n in d.get("notes", ()))
        return cls(**kwargs)

    def to_row(self) -> dict[str, Any]:
        """A flat row for pandas: raw fields minus lists, plus derived statistics."""
        row = {k: v for k, v in self.to_dict().items()
               if k not in ("step_times_s", "samples", "extra", "notes")}
        row.update(
            step_time_median_s=self.step_time_median_s,
            step_time_iqr_s=self.step_time_iqr_s,
            samples_per_s=self.samples_per_s,
            noisy=self.noisy,
            timed_steps=len(self.step_times_s),
            outcome=self.outcome,
            notes="; ".join(self.notes) or None,
        )
        for s in self.samples:
            row[f"{s.name}_mean"] = s.mean
            row[f"{s.name}_max"] = s.max
        for k, v in self._extra_with_roofline().items():
            if isinstance(v, (int, float, str, bool)) or v is None:
                row[k] = v
        return row
