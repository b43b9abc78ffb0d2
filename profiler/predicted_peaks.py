"""Predicted beside measured: the prediction's peak at every batch size a run probed.

After a profile whose search was seeded by the prediction, each Measurement gets
``predicted_peak_allocated_bytes`` (and, on CUDA, ``extra["predicted_peak_reserved_bytes"]``)
from one Predictor for the run's workload and target, so the report and ``to_frame`` show the
prediction's error per batch size. A prediction that cannot be had costs a note, never the run.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from .errors import BatchprofError
from .types import Measurement


def with_predicted_peaks(workload: Any, target: str, probes: tuple[Measurement, ...],
                         notes: list[str], *, calibration_budget_bytes: int | None = None
                         ) -> tuple[Measurement, ...]:
    """``probes`` with the predicted peak of each batch size filled in (unchanged, and a
    note, when the prediction fails)."""
    sizes = sorted({m.batch_size for m in probes})
    if not sizes or target not in ("cpu", "cuda"):
        return probes
    try:
        from .prediction import Predictor

        predictor = Predictor(workload, target, check_sizes=[max(sizes)],
                              calibration_budget_bytes=calibration_budget_bytes)
        peaks = {b: predictor.peaks(b) for b in sizes}
    except (ImportError, AttributeError, NotImplementedError, BatchprofError) as exc:
        notes.append(f"per-batch predicted peaks unavailable: {type(exc).__name__}: {exc}")
        return probes
    out = []
    for m in probes:
        p = peaks[m.batch_size]
        extra = dict(m.extra)
        if target == "cuda":
            extra["predicted_peak_reserved_bytes"] = p.reserved
        out.append(dataclasses.replace(m, predicted_peak_allocated_bytes=p.allocated,
                                       extra=extra))
    return tuple(out)
