"""Probing: one batch size on one backend -> one Measurement (step), several sizes timed in
rounds on one model (sweep), and a probe recorded for a person to inspect (snapshot)."""

from __future__ import annotations

from .step import DEFAULT_TIMED_STEPS, TimingPolicy, measure, validate_batch_size
from .sweep import ThroughputSweep

__all__ = ["DEFAULT_TIMED_STEPS", "ThroughputSweep", "TimingPolicy", "measure", "validate_batch_size"]
