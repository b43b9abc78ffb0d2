"""Per-rank profiling under torchrun (DDP, FSDP2) and sharded capacity plans (issue 15).

Modules: launch (the torchrun environment, the process group with a timeout), collectives
(feasibility as an AND over ranks, gathering, consistency checks, failure reporting),
parallel (DDP / fully_shard wrapping), rank_probe (one lockstep per-rank measurement),
records (DistributedMeasurement), profile (measure / search over the world), sharding
(per-rank prediction for ddp / fsdp / zero1 / zero2 from the single-process prediction),
configs (documented model configurations for plans), text (lines for the CLI).
"""

from __future__ import annotations

import importlib
from typing import Any

from .errors import RankFailedError, WorldMismatchError

_LAZY = {
    "measure_distributed": ".profile",
    "profile_distributed": ".profile",
    "DistributedProfile": ".profile",
    "DistributedMeasurement": ".records",
    "predict_sharded": ".sharding",
    "plan_sharded": ".sharding",
    "ShardedPrediction": ".sharding",
    "process_group": ".launch",
    "rank_env": ".launch",
}

__all__ = ["RankFailedError", "WorldMismatchError", *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'batchprof.distributed' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value
