"""What each rank runs in tests/test_distributed*.py (registered by name)."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from tests.distributed_helpers import scenario


@scenario
def measure_once(rank: int, world_size: int, workload: str, strategies: list[str],
                 batch_size: int, limits: list[Any] | None = None) -> dict[str, Any]:
    """One probe per strategy; each with this rank's wall time."""
    import time

    import batchprof
    from batchprof.distributed.collectives import World
    from batchprof.distributed.rank_probe import measure_rank

    world = World("cpu")
    limit = None if limits is None else batchprof.parse_bytes(limits[rank])
    out = {}
    for strategy in strategies:
        started = time.perf_counter()
        ranks = measure_rank(batchprof.load_workload(workload), batch_size, world, strategy,
                             memory_limit_bytes=limit)
        out[strategy] = {"ranks": [m.to_dict() for m in ranks],
                         "elapsed_s": time.perf_counter() - started}
    return out


@scenario
def profile_run(rank: int, world_size: int, workload: str, strategy: str,
                limits: list[Any] | None = None, **options: Any) -> dict[str, Any]:
    from batchprof.distributed.profile import DISTRIBUTED_SPEC, profile_distributed

    accumulation = options.pop("grad_accumulation", 1)
    spec = dataclasses.replace(DISTRIBUTED_SPEC, **options)  # the search's options
    try:
        r = profile_distributed(workload, strategy, spec=spec, memory_limit=limits,
                                grad_accumulation=accumulation)
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
    from batchprof.distributed.profile import DISTRIBUTED_SPEC, profile_distributed

    wl = tiny_blocks()
    if rank == 1:
        inner = wl.loss_fn

        def loss_fn(model, batch):
            if batch[0].shape[0] >= die_at:
                os._exit(3)
            return inner(model, batch)

        wl = batchprof.Workload(wl.name, wl.model_fn, wl.batch_fn, loss_fn, wl.optimizer_fn,
                                wl.description, wl.tags)
    try:
        profile_distributed(wl, "ddp", spec=dataclasses.replace(DISTRIBUTED_SPEC, knee=False),
                            memory_limit="2MiB")
    except Exception as exc:
        partial = getattr(exc, "partial_result", None)
        return {"error": f"{type(exc).__name__}: {exc}",
                "probes": [p.batch_size for p in partial.probes] if partial else None}
    return {}


def tiny_blocks():
    """A 3-block MLP small enough that a 2-rank probe takes well under a second."""
    import torch
    from torch import nn

    import batchprof
    from batchprof.workloads._classification import batch_maker, cross_entropy_loss

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(64, 64)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.relu(self.fc(x)) + x

    def model() -> nn.Module:
        return nn.Sequential(nn.Linear(32, 64), nn.Sequential(Block(), Block(), Block()),
                             nn.Linear(64, 10))

    return batchprof.Workload("tiny-blocks", model, batch_maker((32,), 10), cross_entropy_loss)


@scenario
def accounting(rank: int, world_size: int, batch_size: int) -> dict[str, Any]:
    """Per-rank peak/resident under ddp and fsdp, with this rank's own tensor accounting."""
    import batchprof
    from batchprof.distributed.collectives import World
    from batchprof.distributed.parallel import repeated_blocks
    from batchprof.distributed.rank_probe import measure_rank

    wl = batchprof.load_workload("tests.distributed_scenarios:tiny_blocks")
    world = World("cpu")
    with __import__("torch").device("meta"):
        meta = wl.model_fn()
    param_bytes = sum(p.numel() * p.element_size() for p in meta.parameters())
    out: dict[str, Any] = {"param_bytes": param_bytes, "blocks": len(repeated_blocks(meta))}
    for strategy in ("ddp", "fsdp"):
        ranks = measure_rank(wl, batch_size, world, strategy)
        out[strategy] = {"ranks": [m.to_dict() for m in ranks]}
    return out


@scenario
def predicted_vs_measured(rank: int, world_size: int, workloads: list[str],
                          strategies: list[str], batch_size: int,
                          repeats: int = 1) -> list[dict[str, Any]]:
    """Measured per-rank peak (this rank) next to the sharded prediction, per case;
    ``repeats`` probes per case, every one's peak kept (``measured``: the first)."""
    import batchprof
    from batchprof.distributed.collectives import World
    from batchprof.distributed.rank_probe import measure_rank
    from batchprof.distributed.sharding import predict_sharded
    from batchprof.probe import TimingPolicy

    world = World("cpu")
    quick = TimingPolicy(timed_steps=1, max_timed_steps=1)
    rows = []
    for ref in workloads:
        wl = batchprof.load_workload(ref)
        for strategy in strategies:
            probes = [measure_rank(wl, batch_size, world, strategy, timing=quick)[rank]
                      for _ in range(repeats)]
            predicted = predict_sharded(wl, [batch_size], world_size, strategy)[0]
            rows.append({"workload": ref, "strategy": strategy,
                         "measured": probes[0].peak_allocated_bytes,
                         "measured_all": [m.peak_allocated_bytes for m in probes],
                         "measured_resident": probes[0].resident_bytes,
                         "predicted": predicted.peak_allocated_bytes,
                         "predicted_resident": predicted.resident_bytes,
                         "single": predicted.single_process_peak_bytes,
                         "components": dict(predicted.components)})
    return rows


@scenario
def measure_api(rank: int, world_size: int) -> dict[str, Any]:
    from batchprof.distributed.profile import measure_distributed
    from batchprof.distributed.text import measurement_lines

    m = measure_distributed(tiny_blocks(), 8, "fsdp", grad_accumulation=4)
    return {"global_batch": m.global_batch, "feasible": m.feasible,
            "lines": measurement_lines(m), "samples_per_s": m.samples_per_s}
