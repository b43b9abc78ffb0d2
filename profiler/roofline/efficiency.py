"""Where each batch size sits on the device's roofline: achieved FLOP/s, MFU, bound.

Combines three honest sources: FLOPs and bytes per step counted on the meta device
(:mod:`batchprof.roofline.costs`), the measured median step time of each feasible probe, and the
device's measured ceilings (:func:`batchprof.ceilings`). On a GPU the table's datasheet figure
gives a second MFU (``mfu_spec_pct``); elsewhere that column is None, never 0.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from batchprof.records.measurement import Measurement
from batchprof.records.roofline import RooflinePoint
from batchprof.roofline.ceilings import Ceilings, roofline
from batchprof.roofline.costs import StepCosts, step_costs
from batchprof.workloads.base import Workload

# RooflinePoint field (the column a report shows per batch size) <- key of ceilings.roofline's result.
ROOFLINE_COLUMNS = {
    "flops_per_step": "flops",
    "bytes_per_step": "bytes_moved",
    "achieved_flops_per_s": "achieved_flops_per_s",
    "mfu_pct": "mfu_pct",
    "mfu_spec_pct": "mfu_spec_pct",
    "arithmetic_intensity_flop_per_byte": "arithmetic_intensity_flop_per_byte",
    "ridge_point_flop_per_byte": "ridge_point_flop_per_byte",
    "bound": "bound",
    "roofline_step_time_s": "roofline_step_time_s",
    "peak_flops_per_s": "peak_flops_per_s",
    "peak_bandwidth_gbps": "peak_bandwidth_gbps",
}


def _spec_flops(device_name: str | None, total_bytes: int | None, dtype: str) -> float | None:
    if not device_name or not total_bytes:
        return None
    from batchprof.gpus import match_gpu

    spec = match_gpu(device_name, total_bytes)
    return spec.flops(dtype) if spec is not None else None


def annotate_roofline(
    workload: Workload,
    probes: Sequence[Measurement],
    ceilings: Ceilings,
    *,
    gpu_name: str | None = None,
    gpu_total_bytes: int | None = None,
) -> tuple[Measurement, ...]:
    """Return ``probes`` with a :class:`RooflinePoint` (``Measurement.roofline``) for every
    feasible, timed probe. Infeasible or untimed probes come back unchanged.

    FLOPs/bytes are counted once per distinct batch size. Raises TraceError when the workload
    cannot run on the meta device (callers treat the roofline as optional and say so).
    """
    costs: dict[int, StepCosts] = {}
    out = []
    for m in probes:
        median = m.step_time_median_s
        if not m.feasible or not median:
            out.append(m)
            continue
        if m.batch_size not in costs:
            costs[m.batch_size] = step_costs(workload, m.batch_size)
        c = costs[m.batch_size]
        figures = roofline(c.flops, c.bytes_moved, median, ceilings, c.dtype,
                           spec_flops_per_s=_spec_flops(gpu_name, gpu_total_bytes, c.dtype))
        point = RooflinePoint(**{field: figures[key] for field, key in ROOFLINE_COLUMNS.items()})
        out.append(dataclasses.replace(m, roofline=point))
    return tuple(out)
