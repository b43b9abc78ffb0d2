"""The prediction records: ``Prediction`` (one batch size) and ``FitInfo`` (how it was got)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from .calibrate import Calibration


@dataclass(frozen=True)
class FitInfo:
    """How a prediction was obtained and how well the batch-affine model held.

    ``method``: "affine" (event sizes interpolated from the anchor traces) or "traced" (this
    size traced on its own: below the anchors, or the model failed its check). ``fit_error``:
    largest relative difference between interpolated and traced event sizes at
    ``check_batch_size`` (0.0: exact; None: not checked). The peak's line over the anchors,
    ``peak ~= fixed + per_sample * b``, is reported for allocated and reserved bytes.
    """

    method: str
    anchors: tuple[int, ...]
    check_batch_size: int | None
    fit_error: float | None
    allocated_fixed_bytes: int
    allocated_per_sample_bytes: float
    reserved_fixed_bytes: int
    reserved_per_sample_bytes: float

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "anchors": list(self.anchors),
                "check_batch_size": self.check_batch_size, "fit_error": self.fit_error,
                "allocated_fixed_bytes": self.allocated_fixed_bytes,
                "allocated_per_sample_bytes": self.allocated_per_sample_bytes,
                "reserved_fixed_bytes": self.reserved_fixed_bytes,
                "reserved_per_sample_bytes": self.reserved_per_sample_bytes}


@dataclass(frozen=True)
class Prediction:
    """Predicted memory of one steady-state training step (meanings as in DESIGN.md).

    ``traced_peak_bytes``: the trace alone; ``calibration_bytes``: what calibration added
    (``peak_allocated_bytes - traced_peak_bytes``). ``by_category``: live bytes by category at
    the allocated peak (allocator-counted, so rounded on CUDA; the calibration residual is
    ``"unattributed"``). ``top_modules``: activation bytes by module, largest first.
    ``capacity_bytes``: usable memory of ``gpu`` (total minus the context estimate), when a GPU
    was named; ``fits`` compares the peak reserved bytes with it.
    """

    workload: str
    batch_size: int
    target: str
    peak_allocated_bytes: int
    peak_reserved_bytes: int
    activation_bytes: int
    resident_bytes: int
    traced_peak_bytes: int
    calibration_bytes: int
    by_category: Mapping[str, int]
    top_modules: tuple[tuple[str, int], ...]
    fit: FitInfo
    corrections: Mapping[str, int] = field(default_factory=dict)
    gpu: str | None = None
    capacity_bytes: int | None = None
    calibration: Calibration | None = None
    notes: tuple[str, ...] = ()
    what_if: tuple[str, ...] = ()  # the rewrite predicted (whatif.py); () = as written

    def __post_init__(self) -> None:
        for name in ("by_category", "corrections"):
            object.__setattr__(self, name, MappingProxyType(dict(getattr(self, name))))

    @property
    def fits(self) -> bool | None:
        if self.capacity_bytes is None:
            return None
        return self.peak_reserved_bytes <= self.capacity_bytes

    def to_dict(self) -> dict[str, Any]:
        return {
            "workload": self.workload, "batch_size": self.batch_size, "target": self.target,
            "peak_allocated_bytes": self.peak_allocated_bytes,
            "peak_reserved_bytes": self.peak_reserved_bytes,
            "activation_bytes": self.activation_bytes, "resident_bytes": self.resident_bytes,
            "traced_peak_bytes": self.traced_peak_bytes,
            "calibration_bytes": self.calibration_bytes,
            "by_category": dict(self.by_category),
            "top_modules": [[m, b] for m, b in self.top_modules],
            "fit": self.fit.to_dict(), "corrections": dict(self.corrections),
            "gpu": self.gpu, "capacity_bytes": self.capacity_bytes, "fits": self.fits,
            "calibration": self.calibration.to_dict() if self.calibration else None,
            "notes": list(self.notes), "what_if": list(self.what_if),
        }
