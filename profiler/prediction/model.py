"""The batch-affine model: one event list whose every size is ``fixed + per_sample * b``.

Two traces of one workload at batch sizes b1 < b2 have the same events in the same order
(same operators, same storages) and differ only in sizes, each of which is affine in b (a
tensor's bytes are its batch dimension times the rest, plus nothing). So every event's size is
the line through its two values, and the whole step at any b follows: on the CPU the peak is
``resident(b) + max_i running_sum_i(b)`` -- a maximum of affine functions, evaluated exactly
with one cumulative sum, not approximated by a single line -- and on CUDA the same event list
at b is replayed through the caching-allocator model. A third trace at another size checks the
model; ``fit_error`` is the largest relative difference of any event's predicted size from the
traced one (0.0 when exact).

Corrections learned by calibration (``OpCorrection``) are affine in b too and are folded into
the event list: a different output size for an operator call, or a kernel-internal transient
("workspace") allocated after its outputs and freed at once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .events import WORKSPACE, MemEvent
from .trace import OpCall, Trace


@dataclass(frozen=True)
class Affine:
    """``fixed_bytes + per_sample_bytes * b``."""

    fixed_bytes: float
    per_sample_bytes: float

    def at(self, batch_size: int) -> int:
        return int(round(self.fixed_bytes + self.per_sample_bytes * batch_size))



@dataclass(frozen=True)
class Curve:
    """Bytes as a function of b, piecewise linear through measured ``(b, bytes)`` points and
    extended linearly beyond them (by the first segment below, the last one above).

    Calibration quantities (a kernel's workspace, the residual) are affine in b in most places
    but not everywhere: a kernel library can switch algorithm at b = 1 or at some size. Through
    every calibration point exactly, the curve reproduces each calibration size and extrapolates
    from the two largest. With one point it is a constant, or proportional to b
    (``through_origin``: buffers shaped like activations).
    """

    points: tuple[tuple[int, float], ...]
    through_origin: bool = False

    @classmethod
    def through(cls, points: Sequence[tuple[int, float]], *, through_origin: bool = False
                ) -> Curve:
        return cls(tuple(sorted((int(b), float(y)) for b, y in points)), through_origin)

    def segment(self, batch_size: int) -> Affine:
        """The affine piece that applies at ``batch_size``."""
        pts = self.points
        if not pts:
            return Affine(0.0, 0.0)
        if len(pts) == 1:
            b0, y0 = pts[0]
            return Affine(0.0, y0 / b0) if self.through_origin else Affine(y0, 0.0)
        i = 0
        while i < len(pts) - 2 and pts[i + 1][0] <= batch_size:
            i += 1
        (b0, y0), (b1, y1) = pts[i], pts[i + 1]
        slope = (y1 - y0) / (b1 - b0)
        return Affine(y0 - slope * b0, slope)

    def at(self, batch_size: int) -> int:
        return self.segment(batch_size).at(batch_size)

    def segment_index(self, batch_size: int) -> int:
        """Which piece applies (sizes with equal index share one affine model)."""
        i = 0
        while i < len(self.points) - 2 and self.points[i + 1][0] <= batch_size:
            i += 1
        return i


@dataclass(frozen=True)
class OpCorrection:
    """What calibration learned about one operator call, keyed by (op, occurrence).

    ``output_bytes``: the real size of each new output where it differs from meta's (None:
    same). ``workspace``: bytes the kernel allocates internally beyond its outputs (peak
    inside the call minus its outputs).
    """

    op: str
    occurrence: int
    output_bytes: tuple[Curve | None, ...] = ()
    workspace: Curve | None = None


class StructureMismatch(ValueError):
    """Two traces do not have the same events in the same order."""


@dataclass(frozen=True)
class AffineTrace:
    """An event list whose sizes are affine in the batch size (see module docstring)."""

    kinds: tuple[str, ...]
    storage_ids: tuple[int, ...]
    categories: tuple[str, ...]
    modules: tuple[str | None, ...]
    ops: tuple[str | None, ...]
    fixed: np.ndarray
    per_sample: np.ndarray
    warmup_start: int
    step_start: int
    step_ops: tuple[OpCall, ...]
    off_device_storages: frozenset[int]
    anchors: tuple[int, ...]

    @classmethod
    def from_traces(cls, first: Trace, second: Trace) -> AffineTrace:
        if first.batch_size == second.batch_size:
            raise ValueError("the two traces must be at different batch sizes")
        if (first.structure != second.structure or first.step_start != second.step_start
                or first.warmup_start != second.warmup_start):
            raise StructureMismatch(
                f"traces at batch {first.batch_size} and {second.batch_size} differ in "
                "structure (different operators or storages), so sizes cannot be interpolated")
        n1 = np.array([e.nbytes for e in first.events], dtype=float)
        n2 = np.array([e.nbytes for e in second.events], dtype=float)
        slope = (n2 - n1) / (second.batch_size - first.batch_size)
        return cls._from_trace(first, n1 - slope * first.batch_size, slope,
                               (first.batch_size, second.batch_size))

    @classmethod
    def constant(cls, trace: Trace) -> AffineTrace:
        """One trace taken as is (per-sample 0): for a size the affine model does not cover."""
        return cls._from_trace(trace, np.array([e.nbytes for e in trace.events], dtype=float),
                               np.zeros(len(trace.events)), (trace.batch_size,))

    @classmethod
    def _from_trace(cls, trace: Trace, fixed: np.ndarray, per_sample: np.ndarray,
                    anchors: tuple[int, ...]) -> AffineTrace:
        """The event structure of ``trace`` with the given byte model."""
        return cls(
            kinds=tuple(e.kind for e in trace.events),
            storage_ids=tuple(e.storage_id for e in trace.events),
            categories=tuple(e.category for e in trace.events),
            modules=tuple(e.module for e in trace.events),
            ops=tuple(e.op for e in trace.events),
            fixed=fixed,
            per_sample=per_sample,
            warmup_start=trace.warmup_start,
            step_start=trace.step_start,
            step_ops=trace.step_ops,
            off_device_storages=trace.off_device_storages,
            anchors=anchors,
        )

    def sizes(self, batch_size: int) -> np.ndarray:
        # A calibrated line extrapolated below its points can dip under zero: no allocation.
        return np.maximum(np.rint(self.fixed + self.per_sample * batch_size), 0).astype(np.int64)

    def fit_error(self, check: Trace) -> float:
        """Largest relative difference between predicted and traced event sizes at
        ``check.batch_size``; inf when the structure differs."""
        if tuple(zip(self.kinds, self.storage_ids, (o or "" for o in self.ops),
                     strict=True)) != check.structure:
            return float("inf")
        predicted = self.sizes(check.batch_size)
        traced = np.array([e.nbytes for e in check.events], dtype=np.int64)
        diff = np.abs(predicted - traced)
        if not diff.any():
            return 0.0
        return float(np.max(diff / np.maximum(traced, 1)))

    def events(self, batch_size: int, *, drop_off_device: bool = False) -> list[MemEvent]:
        sizes = self.sizes(batch_size)
        return [MemEvent(k, s, int(n), c, m, o)
                for k, s, n, c, m, o in zip(self.kinds, self.storage_ids, sizes, self.categories,
                                            self.modules, self.ops, strict=True)
                if not (drop_off_device and s in self.off_device_storages)]

    def index(self, position: int, *, drop_off_device: bool = False) -> int:
        """``position`` (e.g. ``step_start``) in the list ``events(...)`` returns."""
        if not drop_off_device:
            return position
        return sum(1 for s in self.storage_ids[:position] if s not in self.off_device_storages)

    def cpu_peak_bytes(self, batch_size: int) -> int:
        """Resident at step start + highest running sum in the step (exact CPU semantics)."""
        sizes = self.sizes(batch_size)
        signed = np.where(np.array(self.kinds) == "alloc", sizes, -sizes)
        resident = int(signed[:self.step_start].sum())
        step = np.cumsum(signed[self.step_start:])
        return resident + max(0, int(step.max()) if step.size else 0)

    def with_corrections(self, corrections: Mapping[tuple[str, int], OpCorrection],
                         batch_size: int) -> tuple[AffineTrace, int]:
        """A copy with calibration's per-call corrections applied, exact on the calibration
        segment that contains ``batch_size``; also returns how many calls were corrected."""
        if not corrections:
            return self, 0
        fixed = self.fixed.copy()
        per_sample = self.per_sample.copy()
        inserts: dict[int, list[tuple[Affine, str | None, str]]] = {}
        applied = 0
        position = {sid: i for i, (k, sid) in enumerate(zip(self.kinds, self.storage_ids,
                                                            strict=True)) if k == "alloc"}
        frees = {sid: i for i, (k, sid) in enumerate(zip(self.kinds, self.storage_ids,
                                                         strict=True)) if k == "free"}
        for call in self.step_ops:
            fix = corrections.get(call.key)
            if fix is None:
                continue
            applied += 1
            first = call.event_index - len(call.output_bytes)
            if len(fix.output_bytes) == len(call.output_bytes):
                for k, size in enumerate(fix.output_bytes):
                    if size is None:
                        continue
                    line = size.segment(batch_size)
                    sid = self.storage_ids[first + k]
                    for i in (position.get(sid), frees.get(sid)):
                        if i is not None:
                            fixed[i], per_sample[i] = line.fixed_bytes, line.per_sample_bytes
            if fix.workspace is not None:
                inserts.setdefault(call.event_index, []).append(
                    (fix.workspace.segment(batch_size), call.module, call.op))
        if not inserts and applied == 0:
            return self, 0
        return self._with_inserts(fixed, per_sample, inserts), applied

    def _with_inserts(self, fixed: np.ndarray, per_sample: np.ndarray,
                      inserts: Mapping[int, list[tuple[Affine, str | None, str]]]) -> AffineTrace:
        kinds, sids, cats, mods, ops = [], [], [], [], []
        fx: list[float] = []
        ps: list[float] = []
        next_sid = max(self.storage_ids, default=-1) + 1
        step_start, warmup_start = self.step_start, self.warmup_start
        n = len(self.kinds)
        for i in range(n + 1):
            for size, module, op in inserts.get(i, ()):
                for kind in ("alloc", "free"):
                    kinds.append(kind)
                    sids.append(next_sid)
                    cats.append(WORKSPACE)
                    mods.append(module)
                    ops.append(op)
                    fx.append(size.fixed_bytes)
                    ps.append(size.per_sample_bytes)
                next_sid += 1
                if i < self.step_start:
                    step_start += 2
                if i < self.warmup_start:
                    warmup_start += 2
            if i < n:
                kinds.append(self.kinds[i])
                sids.append(self.storage_ids[i])
                cats.append(self.categories[i])
                mods.append(self.modules[i])
                ops.append(self.ops[i])
                fx.append(fixed[i])
                ps.append(per_sample[i])
        return AffineTrace(tuple(kinds), tuple(sids), tuple(cats), tuple(mods), tuple(ops),
                           np.array(fx), np.array(ps), warmup_start, step_start, self.step_ops,
                           self.off_device_storages, self.anchors)


def largest_fitting(peak_of: Callable[[int], int], capacity_bytes: int, *, upper_limit: int = 1 << 24
                    ) -> int | None:
    """Largest b >= 1 with ``peak_of(b) <= capacity_bytes`` (peak nondecreasing in b), by
    doubling then bisection; None when batch 1 does not fit."""
    if peak_of(1) > capacity_bytes:
        return None
    low, high = 1, 2
    while high <= upper_limit and peak_of(high) <= capacity_bytes:
        low, high = high, high * 2
    if high > upper_limit:
        return low
    while high - low > 1:
        mid = (low + high) // 2
        if peak_of(mid) <= capacity_bytes:
            low = mid
        else:
            high = mid
    return low
