"""Calibration: learn from a few cheap real steps the bytes no meta trace can see.

Some kernels allocate memory that never reaches the dispatcher: oneDNN convolutions and RNNs on
the CPU reorder weights and activations into blocked layouts and keep scratchpads; the LSTM's
oneDNN workspace is an output whose meta size is 0. On the CPU, calibration runs the real step
at one or two small batch sizes with two instruments at once:

- the trace's ``StorageRecorder`` on the real tensors, marking each operator call with a
  ``torch.profiler.record_function`` range, and
- the CPU backend's allocator window (``Backend.allocator_window``) -- the same allocator
  events its memory window measures with, so the measured peak here is ``measure()``'s
  ``peak_allocated_bytes`` up to a few Python scalars (seen: 8 bytes in 104,572 for the tiny
  test workload at batch 4).

Inside each operator's range the allocator's running sum peaks at ``outputs + hidden``; the
recorder knows the outputs. Per operator call (paired with the meta trace's by operator name
and occurrence) calibration keeps (a) the real output sizes where they differ from meta's and
(b) the hidden transient ("workspace"), each as a line in b through the calibration sizes
(model.OpCorrection). What is still unexplained -- allocations outside any operator (Python
scalars wrapped as tensors, the autograd engine), persistent kernel caches -- is the residual:
measured minus corrected prediction at the calibration sizes, fitted as fixed + per-sample
bytes and added to the predicted peak.

On CUDA (``calibrate_with_measurements``) only the residual is fitted, from ``measure()`` on
the device: it absorbs cuDNN workspaces and kernel-internal buffers of the CUDA kernels.
"""

from __future__ import annotations

import bisect
import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import torch

from ..backends import AllocatorTimeline, Backend, make_backend, unique_storage_bytes
from ..errors import ConfigError, DeviceUnavailableError, StepError
from ..workloads.base import Workload
from .model import AffineTrace, Curve, OpCorrection
from .trace import Trace, trace_step

# Kernel-internal transients below this are Python scalars wrapped as 0-d tensors (8-16 bytes
# per op call): far too small to move a peak, too many to insert everywhere.
MIN_WORKSPACE_BYTES = 1024
_MARK = "batchprof#"


@dataclass(frozen=True)
class CalibrationPoint:
    """One calibration size: what was measured and what each stage of the model predicted.

    ``traced_peak_bytes``: the meta trace alone; ``corrected_peak_bytes``: with the per-operator
    corrections learned over all calibration sizes; the calibrated prediction adds the residual
    (``Calibration.residual``) to the corrected one.
    """

    batch_size: int
    measured_peak_bytes: int
    traced_peak_bytes: int
    corrected_peak_bytes: int

    def to_dict(self) -> dict[str, int]:
        return {"batch_size": self.batch_size, "measured_peak_bytes": self.measured_peak_bytes,
                "traced_peak_bytes": self.traced_peak_bytes,
                "corrected_peak_bytes": self.corrected_peak_bytes}


@dataclass(frozen=True)
class Calibration:
    """Corrections learned on ``device`` at ``batch_sizes`` (see module docstring)."""

    device: str
    batch_sizes: tuple[int, ...]
    residual: Curve
    points: tuple[CalibrationPoint, ...]
    op_corrections: Mapping[tuple[str, int], OpCorrection] = field(default_factory=dict)
    # Real minus traced bytes saved for backward at each calibration size (None: not measured,
    # e.g. a CUDA calibration from measure()). Measured directly, not derived from the
    # operator corrections: those are allocator bytes (an autocast cast's real allocation, a
    # oneDNN workspace) and say nothing about which storages autograd keeps.
    activation_residual: Curve | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "op_corrections", MappingProxyType(dict(self.op_corrections)))

    def to_dict(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "batch_sizes": list(self.batch_sizes),
            "residual_bytes": [[b, round(y)] for b, y in self.residual.points],
            "corrected_operator_calls": len(self.op_corrections),
            "points": [p.to_dict() for p in self.points],
        }


@dataclass(frozen=True)
class _RealStep:
    trace: Trace
    measured_peak_bytes: int
    window_bytes: Mapping[int, tuple[int, int]]  # op index -> (peak, net) inside its range


def _op_windows(timeline: AllocatorTimeline) -> dict[int, tuple[int, int]]:
    """Allocator (peak, net) bytes inside each operator call's record_function range, from the
    allocator's own counter (every thread's frees counted)."""
    events, spans = timeline.events, timeline.spans
    starts = [s[0] for s in spans]
    inside: dict[int, list[tuple[int, int]]] = {}  # op index -> (bytes, total) of its events
    for time_ns, nbytes, total in events:
        j = bisect.bisect_right(starts, time_ns) - 1
        if j >= 0 and time_ns <= spans[j][1]:
            inside.setdefault(int(spans[j][2][len(_MARK):]), []).append((nbytes, total))
    windows = {}
    for index, values in inside.items():
        before = values[0][1] - values[0][0]
        windows[index] = (max(0, *(total - before for _, total in values)),
                          values[-1][1] - before)
    return windows


def _cpu_backend_with_events(backend: Backend) -> Backend:
    """``backend`` if calibration can run on it: a CPU device whose allocator events it
    records. Raises ConfigError / DeviceUnavailableError naming what is missing."""
    if backend.device.type != "cpu":
        raise ConfigError(f"CPU calibration runs the real step on the CPU; got backend "
                          f"{backend.name!r} on {backend.device}. Use calibrate_with_measurements "
                          "for another device")
    if backend.allocator_window(_MARK) is None:
        raise DeviceUnavailableError(f"backend {backend.name!r} cannot record its allocator's "
                                     "events, which CPU calibration reads; use a CpuBackend")
    return backend


def record_cpu_step(workload: Workload, batch_size: int, *, seed: int = 0,
                    backend: Backend | None = None) -> _RealStep:
    """Run the real step on the CPU under the recorder and ``backend``'s allocator window
    (module docstring). ``backend``: a CPU backend that records allocator events; None
    builds and closes a ``CpuBackend``. Raises as ``calibrate_cpu`` does for another one."""
    owned = backend is None
    events_backend = _cpu_backend_with_events(make_backend("cpu") if owned else backend)
    holder: dict[str, Any] = {}

    @contextlib.contextmanager
    def window(resident: list[torch.Tensor]) -> Iterator[None]:
        holder["resident"] = unique_storage_bytes(resident)
        with events_backend.allocator_window(_MARK, pause_collector=True) as events:
            yield
        holder["timeline"] = events.timeline

    try:
        torch.manual_seed(seed)
        trace = trace_step(workload, batch_size, "cpu", device="cpu", profile_markers=True,
                           step_window=window)
    finally:
        if owned:
            events_backend.close()
    timeline: AllocatorTimeline = holder["timeline"]
    return _RealStep(trace, holder["resident"] + timeline.peak_bytes, _op_windows(timeline))


def _observations(real: _RealStep) -> dict[tuple[str, int], tuple[tuple[int, ...], int]]:
    """(op, occurrence) -> (real output sizes, hidden transient bytes) for each call."""
    found = {}
    for index, call in enumerate(real.trace.step_ops):
        peak, _net = real.window_bytes.get(index, (0, 0))
        found[call.key] = (call.output_bytes, max(0, peak - sum(call.output_bytes)))
    return found


def learn_op_corrections(meta: Mapping[int, Trace], real: Mapping[int, _RealStep]
                         ) -> dict[tuple[str, int], OpCorrection]:
    """Per operator call: real output sizes that differ from meta's, and workspaces."""
    sizes = sorted(real)
    observed = {b: _observations(real[b]) for b in sizes}
    meta_outputs = {b: {c.key: c.output_bytes for c in meta[b].step_ops} for b in sizes}
    corrections = {}
    for key in observed[sizes[0]]:
        if not all(key in observed[b] and key in meta_outputs[b] for b in sizes):
            continue
        outs = [observed[b][key][0] for b in sizes]
        metas = [meta_outputs[b][key] for b in sizes]
        output_fix: list[Curve | None] = []
        # Pair outputs only when real and meta return the same number of new storages (meta
        # kernels sometimes return one storage twice, e.g. mkldnn_rnn_layer_backward's bias
        # gradients); otherwise only the workspace is learned and the residual keeps the rest.
        if all(len(o) == len(m) == len(outs[0]) for o, m in zip(outs, metas, strict=True)):
            for k in range(len(outs[0])):
                if all(o[k] == m[k] for o, m in zip(outs, metas, strict=True)):
                    output_fix.append(None)
                else:
                    output_fix.append(Curve.through([(b, o[k]) for b, o in
                                                     zip(sizes, outs, strict=True)],
                                                    through_origin=True))
        workspaces = [observed[b][key][1] for b in sizes]
        workspace = (Curve.through(list(zip(sizes, workspaces, strict=True)),
                                   through_origin=True)
                     if max(workspaces) >= MIN_WORKSPACE_BYTES else None)
        if workspace is not None or any(f is not None for f in output_fix):
            corrections[key] = OpCorrection(key[0], key[1], tuple(output_fix), workspace)
    return corrections


def calibrate_cpu(workload: Workload, batch_sizes: Sequence[int],
                  meta_trace: Callable[[int], Trace], *,
                  backend: Backend | None = None) -> Calibration:
    """CPU calibration at ``batch_sizes`` (one or two small sizes; see module docstring), on
    ``backend`` (None: a ``CpuBackend`` built and closed here). Raises ConfigError /
    DeviceUnavailableError for a backend that is not a CPU one recording allocator events,
    StepError when the real step fails."""
    sizes = tuple(sorted(set(batch_sizes)))
    owned = backend is None
    events_backend = _cpu_backend_with_events(make_backend("cpu") if owned else backend)
    real = {}
    try:
        for b in sizes:
            try:
                real[b] = record_cpu_step(workload, b, backend=events_backend)
            except Exception as exc:  # the user's step failing for real: name it, keep cause
                raise StepError(
                    f"calibration: the real training step of workload {workload.name!r} at "
                    f"batch size {b} failed: {type(exc).__name__}: {exc}. Predict with "
                    "calibrate=False (--no-calibrate) to skip calibration",
                    batch_size=b) from exc
    finally:
        if owned:
            events_backend.close()
    meta = {b: meta_trace(b) for b in sizes}
    corrections = learn_op_corrections(meta, real)
    points = _points(sizes, meta, real, corrections)
    # Guard: pairing calls by (op, occurrence) assumes the real step and the trace run the
    # same operators. If they diverge, corrections land on the wrong calls; when that makes
    # any calibration size worse than the bare trace, keep only the residual.
    if any(abs(p.corrected_peak_bytes - p.measured_peak_bytes)
           > abs(p.traced_peak_bytes - p.measured_peak_bytes) for p in points):
        corrections = {}
        points = _points(sizes, meta, real, corrections)
    residual = Curve.through([(p.batch_size, p.measured_peak_bytes - p.corrected_peak_bytes)
                              for p in points])
    activation_residual = Curve.through(
        [(b, real[b].trace.activation_bytes - meta[b].activation_bytes) for b in sizes])
    return Calibration("cpu", sizes, residual, tuple(points), corrections, activation_residual)


def _points(sizes: Sequence[int], meta: Mapping[int, Trace], real: Mapping[int, _RealStep],
            corrections: Mapping[tuple[str, int], OpCorrection]) -> list[CalibrationPoint]:
    points = []
    for b in sizes:
        traced = AffineTrace.constant(meta[b])
        corrected, _ = traced.with_corrections(corrections, b)
        points.append(CalibrationPoint(b, real[b].measured_peak_bytes, traced.cpu_peak_bytes(b),
                                       corrected.cpu_peak_bytes(b)))
    return points


def calibrate_with_measurements(
    workload: Workload, batch_sizes: Sequence[int], device: str,
    predicted_peak: Callable[[int], int],
) -> Calibration:
    """Residual-only calibration from ``measure()`` on ``device`` (e.g. "cuda")."""
    from ..probe.step import TimingPolicy, measure

    points = []
    for b in sorted(set(batch_sizes)):
        m = measure(workload, b, device=device,
                    timing=TimingPolicy(timed_steps=1, max_timed_steps=1, budget_s=0.0))
        if not m.feasible or m.peak_allocated_bytes is None:
            continue
        predicted = predicted_peak(b)
        points.append(CalibrationPoint(b, m.peak_allocated_bytes, predicted, predicted))
    residual = Curve.through([(p.batch_size, p.measured_peak_bytes - p.corrected_peak_bytes)
                              for p in points])
    return Calibration(device, tuple(p.batch_size for p in points), residual, tuple(points))
