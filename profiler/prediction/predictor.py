"""``Predictor``: peak memory per batch size without running it, for one workload on one target
(the public ``predict()`` and ``predict_max_batch()`` in api.py build one per scenario).

Pipeline (DESIGN.md, "Prediction"): meta-device traces at two anchor sizes give the batch-affine
event list (model.AffineTrace), a third trace checks it; calibration (CPU: a few real steps at
small sizes) adds what kernels allocate outside the dispatcher; the event list at each b is
replayed through the target's allocator model (allocators.py). CUDA adds the cuBLAS workspaces
to the replay and subtracts the context overhead from the GPU's capacity (gpus.py).
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import psutil

from ..errors import ConfigError, TraceError
from ..gpus import GpuSpec, get_gpu
from ..probe.step import older_objects_frozen, validate_batch_size
from ..workloads.base import Workload
from ..workloads.registry import load_workload
from .allocators import CpuAllocatorModel, CudaCachingAllocatorModel, replay
from .calibrate import Calibration, calibrate_cpu, calibrate_with_measurements
from .events import ACTIVATION, WORKSPACE, MemEvent
from .fallback import fallback_note, no_path_error, record_real_trace
from .model import AffineTrace, Curve, StructureMismatch, largest_fitting
from .overheads import CudaOverheads
from .records import FitInfo, Prediction
from .trace import Trace, trace_step

TARGETS = ("cpu", "cuda")
DEFAULT_ANCHORS = (2, 4)  # b = 1 often differs in structure (a view where larger b copies)
# Real steps calibration runs on the CPU. b = 1 is its own regime for oneDNN (other algorithms);
# the two largest set the per-sample slope used beyond them.
DEFAULT_CALIBRATION_SIZES = (1, 2, 4, 8)
TOP_MODULES = 10
UNATTRIBUTED = "unattributed"  # the calibration residual in by_category
# Operators (ATen names) whose CPU kernels allocate scratch memory inside themselves.
_ONEDNN_SCRATCH_OPS = frozenset({"convolution_backward", "mkldnn_rnn_layer",
                                 "mkldnn_rnn_layer_backward"})


@dataclass(frozen=True)
class _Peaks:
    allocated: int
    reserved: int
    traced_allocated: int
    by_category: Mapping[str, int]
    resident: int
    activation_delta: int  # calibration's change to bytes saved for backward


def resolve_gpu(gpu: str | GpuSpec | None) -> GpuSpec | None:
    if gpu is None or isinstance(gpu, GpuSpec):
        return gpu
    return get_gpu(gpu)


class Predictor:
    """One workload on one target: traces, the affine model, calibration, replays (cached)."""

    def __init__(self, workload: Workload | str, target: str = "cpu", *,
                 gpu: str | GpuSpec | None = None, calibrate: bool = True,
                 device_for_calibration: str | None = None,
                 calibration_sizes: Sequence[int] = DEFAULT_CALIBRATION_SIZES,
                 anchors: Sequence[int] = DEFAULT_ANCHORS,
                 check_sizes: Sequence[int] = (),
                 overheads: CudaOverheads | None = None,
                 calibration_budget_bytes: int | None = None):
        if target not in TARGETS:
            raise ConfigError(f"target must be one of {', '.join(TARGETS)}, got {target!r}")
        self.workload = load_workload(workload)
        self.target = target
        self.gpu = resolve_gpu(gpu)
        if self.gpu is not None and target != "cuda":
            raise ConfigError(f"a GPU ({self.gpu.name}) only applies to target='cuda'")
        self.overheads = overheads or (CudaOverheads.for_gpu(self.gpu) if self.gpu
                                       else CudaOverheads())
        self.anchors = tuple(sorted({validate_batch_size(b) for b in anchors}))
        if len(self.anchors) != 2:
            raise ConfigError(f"anchors must be two different batch sizes, got {anchors!r}")
        calibration_device = device_for_calibration or target
        if calibration_device.split(":")[0] != target:
            # Kernels differ per device (oneDNN vs cuDNN): only the target's own teach it.
            raise ConfigError(f"calibration must run on the target's device type ({target}), "
                              f"got device_for_calibration={device_for_calibration!r}")
        calibration_sizes = tuple(sorted({validate_batch_size(b) for b in calibration_sizes}))
        cc = self.gpu.compute_capability if self.gpu else (8, 0)
        self.trace = functools.lru_cache(maxsize=64)(
            lambda b: trace_step(self.workload, b, target, compute_capability=cc))
        self.notes: list[str] = []
        # Default: half the memory available now (psutil), for the real calibration steps.
        self.calibration_budget_bytes = calibration_budget_bytes or \
            psutil.virtual_memory().available // 2
        self.affine: AffineTrace | None = None
        self.check_batch_size: int | None = None
        self.fit_error: float | None = None
        self._corrected: dict[Any, AffineTrace] = {}
        self._peaks: dict[tuple[int, bool], _Peaks] = {}
        self.calibration: Calibration | None = None
        # One check trace: at the largest size asked for, or at 2x the upper anchor.
        beyond = [b for b in check_sizes if b > self.anchors[1]]
        checks = [max(beyond) if beyond else 2 * self.anchors[1]]
        self.path = "trace"  # or "real-steps" (fallback.py)
        # A trace makes ~10^5 Python objects: the collections they set off walk only those,
        # not what was alive before (probe.step.older_objects_frozen; a tenth of a what-if).
        with older_objects_frozen():
            try:
                self._build_affine(checks)
            except TraceError as exc:
                if not (calibrate and target == "cpu"):
                    raise
                self._fall_back_to_real_steps(exc)
            if calibrate:
                self._calibrate(calibration_sizes, calibration_device)
            elif target == "cpu" and self.path == "trace":
                self._note_unseen_cpu_workspace()

    def with_gpu(self, gpu: str | GpuSpec) -> Predictor:
        """The same traces and model for another GPU of the same architecture (its own cuBLAS
        workspace size and capacity); a fresh predictor when the architecture differs (the
        attention kernel CUDA picks depends on it)."""
        spec = resolve_gpu(gpu)
        if self.target != "cuda" or self.gpu is None \
                or spec.compute_capability != self.gpu.compute_capability:
            raise ConfigError("with_gpu needs a cuda predictor built for a GPU of the same "
                              "compute capability")
        twin = copy.copy(self)
        twin.gpu = spec
        twin.overheads = CudaOverheads.for_gpu(spec)
        twin._peaks = {}
        return twin

    # --- building -------------------------------------------------------------------------

    def _build_affine(self, checks: Sequence[int]) -> None:
        """Anchor traces -> AffineTrace, checked by tracing at ``checks`` (the largest is
        reported). Used only if exact: otherwise every size gets its own trace."""
        low, high = (self.trace(b) for b in self.anchors)
        try:
            affine = AffineTrace.from_traces(low, high)
        except StructureMismatch:
            self.notes.append(f"traces at {self.anchors[0]} and {self.anchors[1]} differ in "
                              "structure; every size is traced on its own")
            return
        self.check_batch_size = max(checks)
        self.fit_error = max(affine.fit_error(self.trace(b)) for b in checks)
        if self.fit_error == 0.0:
            self.affine = affine
        else:
            self.notes.append(f"batch-affine model off by up to {self.fit_error:.2%} at batch "
                              f"{self.check_batch_size}; every size is traced on its own")

    def _fall_back_to_real_steps(self, error: TraceError) -> None:
        """The meta trace cannot go on (a value is needed): record real CPU steps at the
        anchors instead and use them only if they are exactly batch-affine (fallback.py)."""
        self.path = "real-steps"
        self.trace = functools.lru_cache(maxsize=16)(
            lambda b: record_real_trace(self.workload, b))
        check = 2 * self.anchors[1]  # small: a real step at the largest size asked could OOM
        self.notes.append(fallback_note(error, self.anchors, check))
        try:
            self._build_affine([check])
        except Exception as exc:
            raise no_path_error(error, f"the real step failed too ({type(exc).__name__}: "
                                f"{exc})") from exc
        if self.affine is None:
            raise no_path_error(error, "real steps at batch "
                                f"{', '.join(map(str, self.anchors + (check,)))} are not "
                                "batch-affine (different operators or sizes)")

    def _note_unseen_cpu_workspace(self) -> None:
        """Say where a trace-alone CPU peak misses bytes kernels allocate inside themselves,
        outside the dispatcher (calibration measures them; their size depends on the ISA and
        algorithm oneDNN picks, so it is said, not guessed):

        - oneDNN convolutions and RNNs keep scratchpads and blocked-layout copies (measured,
          2026-12-08: the zoo's ConvNeXt 45-70% above the trace alone, a 3.2 MB scratchpad
          in one depthwise convolution's backward; the built-in LSTM 17-47%);
        - on a CPU where oneDNN runs bf16 GEMMs (AVX-512; seen on an AVX512-BF16 machine),
          they pack their operands into buffers (the GPT-2 zoo model, bf16 autocast and
          checkpointing at batch 4, 4.2% above the trace; exact with ONEDNN_MAX_CPU_ISA=AVX2).
        """
        import torch

        anchor = self.trace(self.anchors[1])
        hidden = sorted({c.op.split(".")[1] for c in anchor.step_ops} & _ONEDNN_SCRATCH_OPS)
        if hidden:
            self.notes.append(f"trace alone on the CPU: oneDNN's {', '.join(hidden)} kernels "
                              "allocate scratch buffers the trace does not see (up to 70% of "
                              "the peak on a ConvNeXt); calibrate for an exact CPU peak")
        if anchor.corrections.get("autocast_casts", 0) and \
                torch.ops.mkldnn._is_mkldnn_bf16_supported():
            self.notes.append("trace alone under autocast on a CPU where oneDNN runs bf16: its "
                              "GEMM packing buffers are not seen by the trace (a few % of the "
                              "peak); calibrate for an exact CPU peak")

    def _runnable(self, sizes: Sequence[int]) -> tuple[int, ...]:
        """The calibration sizes the step can run at. A model can refuse a small batch by design
        (training BatchNorm needs more than one value per channel: a ResNet's last stage at
        batch 1); such a size is skipped with a note, not the whole prediction failed."""
        runnable = []
        for b in sizes:
            try:
                self.peaks(b, calibrated=False)
            except TraceError as exc:
                cause = exc.__cause__ or exc
                self.notes.append(f"calibration skipped batch {b}: the step does not run at "
                                  f"that size ({type(cause).__name__}: "
                                  f"{str(cause).splitlines()[0] if str(cause) else ''})")
                continue
            runnable.append(b)
        if not runnable:
            raise TraceError(f"the step runs at none of the calibration sizes {list(sizes)}: "
                             + "; ".join(self.notes[-len(sizes):]))
        return tuple(runnable)

    def _calibrate(self, sizes: Sequence[int], device: str) -> None:
        sizes = self._runnable(sizes)
        if self.target == "cpu":
            # Real steps: only sizes whose traced peak fits the budget (a big model's
            # calibration must not take the machine's memory; the CPU has no OOM guard here).
            budget = self.calibration_budget_bytes
            fitting = tuple(b for b in sizes
                            if self.peaks(b, calibrated=False).allocated <= budget)
            if not fitting:
                self.notes.append(f"not calibrated: even batch {sizes[0]} is predicted above "
                                  f"the calibration budget of {budget} bytes")
                return
            if fitting != sizes:
                self.notes.append(f"calibrated at {list(fitting)} only: larger calibration "
                                  f"sizes are predicted above {budget} bytes")
            self.calibration = calibrate_cpu(self.workload, fitting, self.trace)
            return
        import torch

        if not torch.cuda.is_available():
            self.notes.append("not calibrated: no CUDA device here, so cuDNN workspaces and "
                              "kernel-internal CUDA buffers are not included")
            return
        self.calibration = calibrate_with_measurements(
            self.workload, sizes, device, lambda b: self.peaks(b, calibrated=False).allocated)

    # --- evaluating -----------------------------------------------------------------------

    def model_for(self, batch_size: int, *, calibrated: bool = True) -> AffineTrace:
        use_affine = self.affine is not None and batch_size >= self.anchors[0]
        corrections = (self.calibration.op_corrections
                       if calibrated and self.calibration else {})
        segment = (Curve.through([(b, 0) for b in self.calibration.batch_sizes])
                   .segment_index(batch_size) if corrections else None)
        key = ("affine", segment) if use_affine else ("traced", batch_size, segment)
        cached = self._corrected.get(key)
        if cached is None:
            base = self.affine if use_affine else AffineTrace.constant(self.trace(batch_size))
            cached, _ = base.with_corrections(corrections, batch_size)
            if len(self._corrected) < 256:
                self._corrected[key] = cached
        return cached

    def residual(self, batch_size: int) -> int:
        return self.calibration.residual.at(batch_size) if self.calibration else 0

    def peaks(self, batch_size: int, *, calibrated: bool = True) -> _Peaks:
        key = (batch_size, calibrated)
        if key not in self._peaks:
            self._peaks[key] = self._replay(batch_size, calibrated)
        return self._peaks[key]

    def _replay(self, batch_size: int, calibrated: bool) -> _Peaks:
        model = self.model_for(batch_size, calibrated=calibrated)
        residual = self.residual(batch_size) if calibrated else 0
        if self.target == "cpu":
            events = model.events(batch_size)
            result = replay(events, CpuAllocatorModel(), reset_peak_at=model.step_start)
            traced = self.model_for(batch_size, calibrated=False).cpu_peak_bytes(batch_size)
            resident = int(sum(e.nbytes if e.kind == "alloc" else -e.nbytes
                               for e in events[:model.step_start]))
        else:
            events, reset = self._cuda_events(model, batch_size)
            result = replay(events, CudaCachingAllocatorModel(), reset_peak_at=reset)
            # What max_memory_allocated() starts from after the reset at step start.
            resident = replay(events[:reset], CudaCachingAllocatorModel()).final_allocated_bytes
            traced = result.peak_allocated_bytes
            if model is not self.model_for(batch_size, calibrated=False):
                uncal_events, uncal_reset = self._cuda_events(
                    self.model_for(batch_size, calibrated=False), batch_size)
                traced = replay(uncal_events, CudaCachingAllocatorModel(),
                                reset_peak_at=uncal_reset).peak_allocated_bytes
        by_category = dict(result.live_bytes_by_category_at_peak)
        if residual:
            by_category[UNATTRIBUTED] = residual
        return _Peaks(result.peak_allocated_bytes + residual,
                      result.peak_reserved_bytes + residual, traced, by_category, resident,
                      self._activation_delta(model, batch_size) if calibrated else 0)

    def _activation_delta(self, model: AffineTrace, batch_size: int) -> int:
        if self.calibration is not None and self.calibration.activation_residual is not None:
            return self.calibration.activation_residual.at(batch_size)
        if model is self.model_for(batch_size, calibrated=False):
            return 0
        base = self.model_for(batch_size, calibrated=False)

        def saved(m: AffineTrace) -> int:
            sizes = m.sizes(batch_size)
            return int(sum(n for k, c, n in zip(m.kinds[m.step_start:],
                                                m.categories[m.step_start:],
                                                sizes[m.step_start:], strict=True)
                           if k == "alloc" and c == ACTIVATION))

        return saved(model) - saved(base)

    def _cuda_events(self, model: AffineTrace, batch_size: int) -> tuple[list[MemEvent], int]:
        """Device events only, with the cuBLAS workspaces allocated as the warm-up begins
        (the first matmul of a thread creates its workspace; it stays for the process)."""
        events = model.events(batch_size, drop_off_device=True)
        warmup = model.index(model.warmup_start, drop_off_device=True)
        step = model.index(model.step_start, drop_off_device=True)
        workspaces = [MemEvent("alloc", -1 - i, n, WORKSPACE, "(cuBLAS)", "cublas_workspace")
                      for i, n in enumerate(self.overheads.workspace_allocations())]
        return events[:warmup] + workspaces + events[warmup:], step + len(workspaces)

    def capacity_peak(self, batch_size: int) -> int:
        """What must fit in memory: allocated on the CPU, reserved on CUDA."""
        if self.target == "cpu":
            model = self.model_for(batch_size)
            return model.cpu_peak_bytes(batch_size) + self.residual(batch_size)
        return self.peaks(batch_size).reserved

    def activations(self, batch_size: int) -> tuple[int, dict[str, int]]:
        if self.affine is not None and batch_size >= self.anchors[0]:
            low, high = (self.trace(b) for b in self.anchors)
            modules = set(low.activation_bytes_by_module) | set(high.activation_bytes_by_module)

            def line(a: int, b: int) -> int:
                return Curve.through([(self.anchors[0], a), (self.anchors[1], b)]).at(batch_size)

            by_module = {m: line(low.activation_bytes_by_module.get(m, 0),
                                 high.activation_bytes_by_module.get(m, 0)) for m in modules}
            return line(low.activation_bytes, high.activation_bytes), by_module
        trace: Trace = self.trace(batch_size)
        return trace.activation_bytes, dict(trace.activation_bytes_by_module)

    def predict(self, batch_size: int) -> Prediction:
        peaks = self.peaks(batch_size)
        activation, by_module = self.activations(batch_size)
        top = tuple(sorted(((m, b) for m, b in by_module.items() if b > 0),
                           key=lambda mb: -mb[1])[:TOP_MODULES])
        low, high = (self.peaks(b) for b in self.anchors)
        span = self.anchors[1] - self.anchors[0]
        alloc_slope = (high.allocated - low.allocated) / span
        reserved_slope = (high.reserved - low.reserved) / span
        method = "affine" if self.affine is not None and batch_size >= self.anchors[0] \
            else "traced"
        fit = FitInfo(method, self.anchors, self.check_batch_size, self.fit_error,
                      round(low.allocated - alloc_slope * self.anchors[0]), alloc_slope,
                      round(low.reserved - reserved_slope * self.anchors[0]), reserved_slope)
        corrections = dict(self.trace(self.anchors[0]).corrections)
        if self.calibration and self.calibration.op_corrections:
            corrections["calibrated_operator_calls"] = len(self.calibration.op_corrections)
        capacity = (self.overheads.usable_capacity_bytes(self.gpu.memory_bytes)
                    if self.gpu else None)
        return Prediction(
            workload=self.workload.name, batch_size=batch_size, target=self.target,
            peak_allocated_bytes=peaks.allocated, peak_reserved_bytes=peaks.reserved,
            activation_bytes=activation + peaks.activation_delta, resident_bytes=peaks.resident,
            traced_peak_bytes=peaks.traced_allocated,
            calibration_bytes=peaks.allocated - peaks.traced_allocated,
            by_category=peaks.by_category, top_modules=top, fit=fit, corrections=corrections,
            gpu=self.gpu.name if self.gpu else None, capacity_bytes=capacity,
            calibration=self.calibration, notes=tuple(self.notes))

    def max_batch(self, capacity_bytes: int, *, upper_limit: int = 1 << 24) -> int | None:
        """Largest b whose predicted peak (allocated on the CPU, reserved on CUDA) fits.

        With the exact affine model each evaluation is arithmetic (CPU) or one replay (CUDA);
        without it each is a direct trace of that size, so the answer is traced, not fitted."""
        return largest_fitting(self.capacity_peak, capacity_bytes, upper_limit=upper_limit)
