"""RooflinePoint: where one probe's training step sits on the device's roofline.

Filled in by :func:`batchprof.roofline.efficiency.annotate_roofline` for each feasible, timed
probe (``Measurement.roofline``). In JSON its figures stay flat in the measurement's ``extra``
object under these field names, as before the record existed, so saved reports read the same.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class RooflinePoint:
    """FLOPs and bytes of one step (counted on meta), what its measured median step time
    achieved against the measured ceilings, and which roof bounds it. None: not available
    (no bytes move, no datasheet figure for this device), never a plausible 0."""

    flops_per_step: float
    bytes_per_step: float
    achieved_flops_per_s: float
    mfu_pct: float  # achieved / the measured peak FLOP/s for the step's dtype
    mfu_spec_pct: float | None  # achieved / the GPU datasheet's peak; None off a known GPU
    arithmetic_intensity_flop_per_byte: float | None  # None when no bytes move
    ridge_point_flop_per_byte: float
    bound: str | None  # "memory" below the ridge, "compute" at or above; None: empty step
    roofline_step_time_s: float  # the step's time at the roofs (max of compute and memory)
    peak_flops_per_s: float  # the measured ceilings the figures are against
    peak_bandwidth_gbps: float

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RooflinePoint:
        """From ``to_dict()``'s keys (other keys are ignored). Raises KeyError for a missing one."""
        return cls(**{name: d[name] for name in FIELDS})

    @classmethod
    def in_extra(cls, extra: dict[str, Any]) -> bool:
        """Whether a measurement's JSON ``extra`` holds a whole RooflinePoint."""
        return all(name in extra for name in FIELDS)


FIELDS = tuple(f.name for f in dataclasses.fields(RooflinePoint))
