"""Pure search: the largest batch that fits (max_batch) and the throughput knee (knee/).

No torch anywhere in this package; everything is tested on synthetic curves."""

from __future__ import annotations

from ..records.search import KneeResult, MaxBatchResult, Outcome
from .knee.find import find_knee
from .knee.points import needs_more_steps
from .max_batch import find_max_batch, max_batch_probe_budget

__all__ = ["KneeResult", "MaxBatchResult", "Outcome", "find_knee", "find_max_batch", "max_batch_probe_budget", "needs_more_steps"]
