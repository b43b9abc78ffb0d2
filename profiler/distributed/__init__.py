"""Per-rank profiling under torchrun (DDP, FSDP2) and sharded capacity plans (issue 15).

Modules: launch (the torchrun environment, the process group with a timeout), collectives
(feasibility as an AND over ranks, gathering, consistency checks, failure reporting),
parallel (DDP / fully_shard wrapping), rank_probe (one lockstep per-rank measurement),
records (DistributedMeasurement), profile (the distributed search), sharding (per-rank
prediction for ddp / fsdp / zero1 / zero2 from the single-process prediction).
"""

from __future__ import annotations

from .errors import RankFailedError, WorldMismatchError

__all__ = ["RankFailedError", "WorldMismatchError"]
