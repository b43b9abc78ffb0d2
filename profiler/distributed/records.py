"""One batch size across all ranks: each rank's Measurement and the world's verdict.

A distributed probe keeps every rank's own ``Measurement`` (its peak, its step times, its
verdict against its own budget) in rank order; the world's figures are derived: feasible iff
every rank fit, the peak of the rank closest to its capacity, the step time of the slowest rank
at each step, and the global batch ``batch_size * world_size * grad_accumulation``.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

from ..records.measurement import Measurement
from ..records.search import Outcome


@dataclass(frozen=True)
class DistributedMeasurement:
    """``batch_size`` is per rank (per micro-step); ``ranks`` holds one Measurement per rank."""

    workload: str
    batch_size: int
    world_size: int
    strategy: str
    grad_accumulation: int
    ranks: tuple[Measurement, ...]

    @property
    def feasible(self) -> bool:
        return all(m.feasible for m in self.ranks)

    @property
    def failed_ranks(self) -> tuple[int, ...]:
        return tuple(r for r, m in enumerate(self.ranks) if not m.feasible)

    @property
    def reason(self) -> str | None:
        failed = self.failed_ranks
        if not failed:
            return None
        first = self.ranks[failed[0]]
        return f"rank {', '.join(map(str, failed))}: {first.reason}"

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.world_size * self.grad_accumulation

    @property
    def binding(self) -> Measurement:
        """The rank with the least headroom (highest peak/capacity; highest peak if unbounded)."""
        def load(m: Measurement) -> float:
            peak = m.peak_allocated_bytes or 0
            return peak / m.capacity_bytes if m.capacity_bytes else float(peak)
        return max(self.ranks, key=load)

    @property
    def peak_allocated_bytes(self) -> int | None:
        peaks = [m.peak_allocated_bytes for m in self.ranks]
        return None if any(p is None for p in peaks) else max(peaks)  # type: ignore[type-var]

    @property
    def step_times_s(self) -> tuple[float, ...]:
        """Per timed step, the slowest rank's time (every rank waits for it)."""
        per_rank = [m.step_times_s for m in self.ranks]
        if not per_rank or any(not t for t in per_rank):
            return ()
        return tuple(max(ts) for ts in zip(*per_rank, strict=False))

    @property
    def samples_per_s(self) -> float | None:
        """Global samples per second: world_size * batch_size per (slowest-rank) step."""
        times = self.step_times_s
        return self.batch_size * self.world_size / statistics.median(times) if times else None

    def outcome(self) -> Outcome:
        """What the search sees: the world's verdict, the binding rank's memory, and the
        per-rank batch's throughput (so the knee is read on the per-rank batch)."""
        binding = self.binding
        times = self.step_times_s
        return Outcome(batch_size=self.batch_size, feasible=self.feasible,
                       samples_per_s=self.batch_size / statistics.median(times) if times else None,
                       step_times_s=times, reason=self.reason,
                       peak_bytes=binding.peak_allocated_bytes,
                       capacity_bytes=binding.capacity_bytes)

    def to_dict(self) -> dict[str, Any]:
        return {"workload": self.workload, "batch_size": self.batch_size,
                "world_size": self.world_size, "strategy": self.strategy,
                "grad_accumulation": self.grad_accumulation, "feasible": self.feasible,
                "reason": self.reason, "global_batch": self.global_batch,
                "peak_allocated_bytes": self.peak_allocated_bytes,
                "samples_per_s": self.samples_per_s,
                "ranks": [m.to_dict() for m in self.ranks]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DistributedMeasurement:
        return cls(d["workload"], d["batch_size"], d["world_size"], d["strategy"],
                   d["grad_accumulation"], tuple(Measurement.from_dict(m) for m in d["ranks"]))

    def rank_rows(self) -> list[dict[str, Any]]:
        """The per-rank table: one flat row per rank."""
        return [{"rank": r, **m.to_row()} for r, m in enumerate(self.ranks)]
