"""ThroughputSweep: several batch sizes timed on one built model, interleaved in rounds."""

from __future__ import annotations

import gc

import torch

from batchprof.backends import Backend
from batchprof.probe.step import TrainingStep
from batchprof.workloads.base import Workload


class ThroughputSweep:
    """Times several batch sizes on ONE built model, interleaved in rounds.

    Separate probes rebuild the model, and on a shared machine throughput drifts between
    probes by more than it spreads within one (seen here: ±15–25% between probes at one batch
    size against 2–10% within a probe), which is enough to move a knee on a flat curve by two
    doublings. Timing every size on the same model and interleaving the sizes round by round
    makes that drift hit all sizes alike, and what remains common to a round is divided out
    (:mod:`batchprof.search.knee.drift`). This class only times visits; the driver
    (:class:`batchprof.search.knee.driver.SweepDriver`) decides which. Memory is not measured
    here (the probes did that).
    """

    def __init__(self, workload: Workload, backend: Backend, seed: int = 0):
        self.backend = backend
        torch.manual_seed(seed)
        self.step = TrainingStep(workload, 1, backend.device)

    def visit(self, batch_size: int, steps: int) -> tuple[float, ...]:
        """One visit: an untimed step at ``batch_size`` (the allocator's pattern changes
        with the size), then ``steps`` timed ones. The rounds, their order, the budget and the
        drift correction belong to :mod:`batchprof.search.knee.driver`."""
        self.backend.start_timing(batch_size)
        self.step.batch = self.step.workload.batch_fn(batch_size, self.backend.device)
        self.step()
        return tuple(self.backend.time_step(self.step) for _ in range(steps))

    def close(self) -> None:
        del self.step
        gc.collect()
        self.backend.cleanup()
