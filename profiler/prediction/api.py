"""The public prediction functions: ``predict()`` (a curve, with what-if scenarios side by side)
and ``predict_max_batch()`` (the largest batch that fits a capacity or a GPU). Each builds one
``Predictor`` (predictor.py) per workload scenario and reads it."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence

import psutil

from ..errors import ConfigError
from ..gpus import GpuSpec
from ..probe.step import older_objects_frozen, validate_batch_size
from ..workloads.base import Workload
from .predictor import DEFAULT_CALIBRATION_SIZES, Predictor
from .records import Prediction
from .whatif import workload_scenarios


def predict(
    workload: Workload | str,
    batch_sizes: Sequence[int],
    target: str = "cpu",
    *,
    gpu: str | GpuSpec | None = None,
    calibrate: bool = True,
    device_for_calibration: str | None = None,
    calibration_sizes: Sequence[int] = DEFAULT_CALIBRATION_SIZES,
    what_if: str | Sequence[str] | None = None,
) -> list[Prediction]:
    """Predict peak memory of one steady-state training step at each batch size.

    ``target``: "cpu" (exact allocator bytes) or "cuda" (PyTorch's caching allocator, cuBLAS
    workspaces; ``gpu`` names a GPU from batchprof.gpus for its workspace size, architecture
    and usable capacity). ``calibrate``: run a few real steps at ``calibration_sizes`` on the
    target's device type (``device_for_calibration``, default: the target) to learn what no
    trace sees; skipped with a note on cuda when no CUDA device is present.

    ``what_if`` ("bf16", "fp16", "checkpoint"; a list or "bf16,checkpoint"): also predict the
    workload rewritten that way (batchprof.prediction.whatif), side by side: the result is the
    sizes as written, then the sizes under each what-if alone, then under all together; each
    Prediction's ``what_if`` says which.

    Raises ConfigError for bad sizes, target, GPU or what-if name, TraceError when no path can
    predict the step (the meta trace stopped and, on the CPU with calibration, real small
    steps were not batch-affine either; the message names the operator and module).
    """
    if isinstance(batch_sizes, (str, bytes)) or not isinstance(batch_sizes, Iterable):
        raise ConfigError(f"batch_sizes must be a list of positive integers such as [8, 64], "
                          f"got {batch_sizes!r}")
    sizes = [validate_batch_size(b) for b in batch_sizes]
    if not sizes:
        raise ConfigError("batch_sizes is empty; give at least one batch size")
    out = []
    with older_objects_frozen():  # once for every scenario and size (Predictor.__init__)
        for scenario, rewritten, notes in workload_scenarios(workload, what_if):
            predictor = Predictor(rewritten, target, gpu=gpu, calibrate=calibrate,
                                  device_for_calibration=device_for_calibration,
                                  calibration_sizes=calibration_sizes, check_sizes=[max(sizes)])
            predictor.notes[:0] = notes
            out += [dataclasses.replace(predictor.predict(b), what_if=scenario) for b in sizes]
    return out


def predict_max_batch(
    workload: Workload | str,
    capacity_bytes: int | None = None,
    target: str = "cpu",
    *,
    gpu: str | GpuSpec | None = None,
    calibrate: bool = True,
    device_for_calibration: str | None = None,
    calibration_sizes: Sequence[int] = DEFAULT_CALIBRATION_SIZES,
) -> int | None:
    """Largest batch size whose predicted peak fits ``capacity_bytes`` (None: not even 1).

    On cuda the peak reserved bytes must fit (the caching allocator's segments are what the
    device runs out of). ``gpu="H100-80GB"`` (a name from batchprof.gpus) predicts for that
    GPU (target cuda) and, without ``capacity_bytes``, uses its usable memory (total minus the
    estimated CUDA context), as ``batchprof plan`` does. Raises ConfigError when neither a
    capacity nor a GPU is given.
    """
    if capacity_bytes is None:
        if gpu is None:
            raise ConfigError("give capacity_bytes (e.g. 8 * 2**30) or gpu (e.g. 'H100-80GB', "
                              "whose usable memory is then the capacity)")
    elif isinstance(capacity_bytes, bool) or not isinstance(capacity_bytes, int) \
            or capacity_bytes <= 0:
        raise ConfigError(f"capacity_bytes must be a positive integer, got {capacity_bytes!r}")
    if gpu is not None:
        target = "cuda"
    budget = min(capacity_bytes or 1 << 62, psutil.virtual_memory().available // 2)
    predictor = Predictor(workload, target, gpu=gpu, calibrate=calibrate,
                          device_for_calibration=device_for_calibration,
                          calibration_sizes=calibration_sizes,
                          calibration_budget_bytes=budget)
    if capacity_bytes is None:
        capacity_bytes = predictor.overheads.usable_capacity_bytes(predictor.gpu.memory_bytes)
    return predictor.max_batch(capacity_bytes)
