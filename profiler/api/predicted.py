"""Predicted beside measured: the prediction's peak at every batch size a run probed.

When a profile's search was seeded by the prediction, the same Predictor (already traced and
calibrated) gives the predicted peak at each probed size: ``predicted_peak_allocated_bytes``
on each Measurement (and, on CUDA, ``extra["predicted_peak_reserved_bytes"]``), so the report
and ``to_frame`` show the prediction's error per batch size. A size the prediction cannot
replay costs a note, never the run.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from batchprof.errors import BatchprofError
from batchprof.records.measurement import Measurement

if TYPE_CHECKING:
    from batchprof.prediction import Predictor


def with_predicted_peaks(predictor: Predictor, probes: tuple[Measurement, ...], notes: list[str]
                         ) -> tuple[Measurement, ...]:
    """``probes`` with each batch size's predicted peak filled in from ``predictor`` (the
    hint's Predictor, traced and calibrated already); unchanged, with a note, when it cannot be had."""
    sizes = sorted({m.batch_size for m in probes})
    try:
        peaks = {b: predictor.peaks(b) for b in sizes}
    except (NotImplementedError, BatchprofError) as exc:
        notes.append(f"per-batch predicted peaks unavailable: {type(exc).__name__}: {exc}")
        return probes
    cuda = predictor.target == "cuda"
    out = []
    for m in probes:
        p = peaks[m.batch_size]
        extra = {**m.extra, "predicted_peak_reserved_bytes": p.reserved} if cuda else m.extra
        out.append(dataclasses.replace(m, predicted_peak_allocated_bytes=p.allocated,
                                       extra=dict(extra)))
    return tuple(out)
