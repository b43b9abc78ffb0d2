"""Capacity planning as library calls: ``plan(workload, gpus=[...])`` (which GPU fits which
batch) and ``predict_scenarios`` (predictions per what-if scenario with the max batch for a GPU).

The CLI's ``plan`` and ``predict`` commands are thin faces over these two functions; a Python
user gets the same figures as typed records (``PlanRow``, ``PredictedScenario``) without digging
through ``batchprof.gpus`` or the ``Predictor``. Nothing runs on a GPU: every figure is predicted
(meta-device trace + the CUDA caching-allocator model); kernel-internal CUDA buffers (cuDNN
workspaces) are not included.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError
from ..gpus import GpuSpec, get_gpu
from ..probe.step import validate_batch_size
from ..workloads.base import Workload
from .predictor import Prediction, Predictor
from .whatif import workload_scenarios


@dataclass(frozen=True)
class PlanRow:
    """One GPU (under one what-if scenario): its usable bytes (total minus the estimated CUDA
    context), the predicted max batch (peak *reserved* bytes within the usable bytes; None:
    not even batch 1 fits) and the predicted peaks at that batch. All predicted, none measured."""

    gpu: GpuSpec
    usable_bytes: int
    max_batch: int | None
    peak_allocated_bytes: int | None
    peak_reserved_bytes: int | None
    what_if: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"gpu": self.gpu.to_dict(), "usable_bytes": self.usable_bytes,
                "max_batch": self.max_batch, "peak_allocated_bytes": self.peak_allocated_bytes,
                "peak_reserved_bytes": self.peak_reserved_bytes, "what_if": list(self.what_if),
                "notes": list(self.notes)}


@dataclass(frozen=True)
class PredictedScenario:
    """Predictions of one what-if scenario (``()``: the workload as written) at each size asked,
    and, when a GPU was named, the largest batch predicted to fit its usable memory."""

    what_if: tuple[str, ...]
    predictions: tuple[Prediction, ...]
    max_batch: int | None


def plan(workload: Workload | str, gpus: Sequence[str | GpuSpec], *,
         what_if: str | Sequence[str] | None = None) -> list[PlanRow]:
    """One :class:`PlanRow` per GPU (per what-if scenario, in that order).

    ``gpus``: names from :mod:`batchprof.gpus` (``"H100-80GB"``, ``"A100-40GB"``...) or
    GpuSpecs. One trace per GPU architecture (the attention kernel CUDA picks depends on it);
    other GPUs of the same architecture reuse it. Raises ConfigError for an unknown GPU or
    what-if name (all checked before any tracing), TraceError when the step cannot be traced.
    """
    if isinstance(gpus, (str, GpuSpec)):
        gpus = [gpus]
    specs = [g if isinstance(g, GpuSpec) else get_gpu(g) for g in gpus]
    if not specs:
        raise ConfigError("gpus is empty; name at least one GPU, e.g. ['H100-80GB']")
    rows: list[PlanRow] = []
    for scenario, rewritten, notes in workload_scenarios(workload, what_if):
        by_arch: dict[tuple[int, int], Predictor] = {}
        for spec in specs:
            base = by_arch.get(spec.compute_capability)
            if base is None:
                base = by_arch[spec.compute_capability] = Predictor(
                    rewritten, "cuda", gpu=spec, calibrate=False)
            predictor = base.with_gpu(spec)
            usable = predictor.overheads.usable_capacity_bytes(spec.memory_bytes)
            best = predictor.max_batch(usable)
            at_best = predictor.predict(best) if best is not None else None
            rows.append(PlanRow(
                gpu=spec, usable_bytes=usable, max_batch=best,
                peak_allocated_bytes=at_best.peak_allocated_bytes if at_best else None,
                peak_reserved_bytes=at_best.peak_reserved_bytes if at_best else None,
                what_if=scenario, notes=tuple(notes) + tuple(predictor.notes)))
    return rows


def predict_scenarios(workload: Workload | str, batch_sizes: Sequence[int],
                      target: str = "cpu", *, gpu: str | GpuSpec | None = None,
                      calibrate: bool = True, what_if: str | Sequence[str] | None = None
                      ) -> list[PredictedScenario]:
    """:func:`batchprof.predict` grouped by what-if scenario, each with the max batch for
    ``gpu`` (implies ``target="cuda"``; None without a GPU). One Predictor per scenario."""
    sizes = [validate_batch_size(b) for b in batch_sizes]
    if not sizes:
        raise ConfigError("batch_sizes is empty; give at least one batch size")
    target = "cuda" if gpu is not None else target
    out = []
    for scenario, rewritten, notes in workload_scenarios(workload, what_if):
        predictor = Predictor(rewritten, target, gpu=gpu, calibrate=calibrate,
                              check_sizes=[max(sizes)])
        predictor.notes[:0] = notes
        predictions = tuple(dataclasses.replace(predictor.predict(b), what_if=scenario)
                            for b in sizes)
        best = (predictor.max_batch(predictions[0].capacity_bytes)
                if predictor.gpu is not None else None)
        out.append(PredictedScenario(scenario, predictions, best))
    return out
