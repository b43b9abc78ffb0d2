"""FLOPs and bytes moved by one training step, counted on the meta device (no memory, no compute).

FLOPs come from ``torch.utils.flop_counter.FlopCounterMode`` (matmuls, convolutions, attention:
the ops that dominate; elementwise ops count 0 there), taught first to count batchprof's own
``torch.ops.batchprof.matmul`` (``kernels.ops.register_flop_formulas``), which it would count as 0. Bytes moved is the sum, over every aten op
of forward, backward and the optimizer step, of the bytes of its tensor inputs and outputs: what
an unfused kernel per op would read and write, an upper bound on DRAM traffic for fused kernels
and a lower bound when caches thrash. Both feed the roofline view of each batch size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import FlopCounterMode

from batchprof.errors import TraceError
from batchprof.kernels.ops import register_flop_formulas
from batchprof.workloads.base import Workload


@dataclass(frozen=True)
class StepCosts:
    batch_size: int
    flops: int
    bytes_moved: int
    dtype: str  # dominant parameter dtype, to pick the matching FLOP/s ceiling

    @property
    def arithmetic_intensity(self) -> float | None:
        return self.flops / self.bytes_moved if self.bytes_moved else None


class _BytesMoved(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves((args, kwargs, out)):
            if isinstance(t, torch.Tensor):
                self.total += t.numel() * t.element_size()
        return out


def step_costs(workload: Workload, batch_size: int) -> StepCosts:
    """Count one training step (forward, backward, optimizer step) of ``workload`` on meta.

    Raises TraceError when the step cannot run on the meta device.
    """
    register_flop_formulas()  # idempotent: a model calling the custom matmul counts its FLOPs
    meta = torch.device("meta")
    try:
        with meta:
            model = workload.model_fn()
        model.train()
        optimizer = workload.optimizer_fn(model.parameters())
        batch = workload.batch_fn(batch_size, meta)
        counter, moved = FlopCounterMode(display=False), _BytesMoved()
        with counter, moved:
            workload.loss_fn(model, batch).backward()
            optimizer.step()
    except (NotImplementedError, RuntimeError) as exc:
        raise TraceError(f"cannot count FLOPs for workload {workload.name!r} on the meta "
                         f"device: {type(exc).__name__}: {exc}") from exc
    dtypes = [p.dtype for p in model.parameters()]
    dtype = max(set(dtypes), key=dtypes.count) if dtypes else torch.float32
    return StepCosts(batch_size, int(counter.get_total_flops()), moved.total,
                     str(dtype).removeprefix("torch."))
