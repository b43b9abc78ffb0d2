"""What each rank runs in tests/test_distributed*.py (registered by name)."""

from __future__ import annotations

import os
from typing import Any

from tests.distributed_helpers import scenario


@scenario
def measure_once(rank: int, world_size: int, workload: str, strategy: str, batch_size: int,
                 limits: list[Any] | None = None) -> dict[str, Any]:
    import batchprof
    from batchprof.distributed.collectives import World
    from batchprof.distributed.rank_probe import measure_rank

    world = World("cpu")
    limit = None if limits is None else batchprof.parse_bytes(limits[rank])
    ranks = measure_rank(batchprof.load_workload(workload), batch_size, world, strategy,
                         memory_limit_bytes=limit)
    return {"ranks": [m.to_dict() for m in ranks], "mine": ranks[rank].to_dict()}


@scenario
def profile_run(rank: int, world_size: int, workload: str, strategy: str,
                limits: list[Any] | None = None, **options: Any) -> dict[str, Any]:
    from batchprof.distributed.profile import profile_distributed

    try:
        r = profile_distributed(workload, strategy, memory_limit=limits, **options)
    except Exception as exc:
        partial = getattr(exc, "partial_result", None)
        return {"error": f"{type(exc).__name__}: {exc}",
                "partial": partial.to_dict() if partial else None}
    return r.to_dict()


@scenario
def differing_workloads(rank: int, world_size: int) -> dict[str, Any]:
    from batchprof.distributed.profile import profile_distributed

    profile_distributed("mlp" if rank == 0 else "cnn", "ddp", memory_limit="64MiB")
    return {}


@scenario
def rank_dies(rank: int, world_size: int, die_at: int) -> dict[str, Any]:
    """Rank 1 exits mid-step at batch ``die_at``; rank 0 must report it, probes kept."""
    import batchprof
    from batchprof.distributed.profile import profile_distributed

    wl = batchprof.load_workload("mlp")
    if rank == 1:
        inner = wl.loss_fn

        def loss_fn(model, batch):
            if batch[0].shape[0] >= die_at:
                os._exit(3)
            return inner(model, batch)

        wl = batchprof.Workload(wl.name, wl.model_fn, wl.batch_fn, loss_fn, wl.optimizer_fn,
                                wl.description, wl.tags)
    try:
        profile_distributed(wl, "ddp", memory_limit="64MiB", knee=False)
    except Exception as exc:
        partial = getattr(exc, "partial_result", None)
        return {"error": f"{type(exc).__name__}: {exc}",
                "probes": [p.batch_size for p in partial.probes] if partial else None}
    return {}
