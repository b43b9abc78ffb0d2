"""RunStatus: what a run is doing now, for a progress display (``profile(on_status=...)``)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RunStatus:
    """One progress report. ``str(status)`` is the plain line (what ``on_status`` callers that
    print text show); a progress bar reads the figures."""

    phase: str  # "max-batch search", "throughput ladder", "knee sweep"
    message: str
    elapsed_s: float  # since the run began
    remaining_s: float | None = None  # estimate of what is left; None: unknown
    budget_s: float | None = None  # the run's time budget; None: unbounded

    def line(self) -> str:
        left = "" if self.remaining_s is None else f", about {self.remaining_s:.0f} s left"
        return f"[{self.phase}] {self.message} ({self.elapsed_s:.0f} s elapsed{left})"

    def __str__(self) -> str:
        return self.line()
