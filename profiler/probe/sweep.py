"""ThroughputSweep: several batch sizes timed on one built model, interleaved in rounds."""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Sequence

import torch

from batchprof.backends import Backend
from batchprof.probe.step import TrainingStep
from batchprof.records.search import Outcome
from batchprof.search.knee.drift import Visit, corrected_medians
from batchprof.workloads.base import Workload


class ThroughputSweep:
    """Times several batch sizes on ONE built model, interleaved in rounds.

    Separate probes rebuild the model, and on a shared machine throughput drifts between
    probes by more than it spreads within one (seen here: ±15–25% between probes at one batch
    size against 2–10% within a probe), which is enough to move a knee on a flat curve by two
    doublings. Timing every size on the same model and interleaving the sizes round by round
    makes that drift hit all sizes alike, and what remains common to a round is divided out
    (:mod:`batchprof.search.knee.drift`); the knee is found on these corrected times. Memory is not
    measured here (the probes did that); each visit starts with an untimed step at its size
    because the allocator's pattern changes with the size.
    """

    def __init__(self, workload: Workload, backend: Backend, seed: int = 0):
        self.backend = backend
        torch.manual_seed(seed)
        self.step = TrainingStep(workload, 1, backend.device)
        self.visits: list[Visit] = []
        self.rounds = 0
        self.elapsed_s = 0.0  # time spent in visits

    def round(self, sizes: Sequence[int], steps: int) -> None:
        """One round: an untimed step, then ``steps`` timed ones, at each size in turn
        (ascending in even rounds, descending in odd ones, so linear drift cancels)."""
        ordered = sorted(sizes, reverse=self.rounds % 2 == 1)
        for b in ordered:
            started = time.perf_counter()
            self.backend.start_timing(b)
            self.step.batch = self.step.workload.batch_fn(b, self.backend.device)
            self.step()
            taken = tuple(self.backend.time_step(self.step) for _ in range(steps))
            self.visits.append(Visit(self.rounds, b, taken))
            self.elapsed_s += time.perf_counter() - started
        self.rounds += 1

    @property
    def sizes(self) -> list[int]:
        return sorted({v.batch_size for v in self.visits})

    def outcomes(self) -> list[Outcome]:
        """One Outcome per size; its ``step_times_s`` hold one drift-corrected median per
        visit (see drift.corrected_medians), so the knee's noise model sees visits."""
        return [Outcome(b, True, b / statistics.median(ts), ts)
                for b, ts in corrected_medians(self.visits).items()]

    def close(self) -> None:
        del self.step
        gc.collect()
        self.backend.cleanup()
