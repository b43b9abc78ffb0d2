"""Wrap a workload's model for data parallelism: DDP, or FSDP2 (``fully_shard``).

FSDP: each repeated block (the children of a ModuleList or Sequential whose children are all of
one class, e.g. a transformer's layers) becomes its own FSDP unit, then the root, as the FSDP2
documentation and torchtitan do; with no repeated blocks only the root is sharded. DDP: the
model as ``DistributedDataParallel`` with attribute access forwarded to the wrapped module, so a
``loss_fn`` that reads ``model.config`` still works.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn

from ..errors import ConfigError
from ..workloads.base import Workload

MEASURED_STRATEGIES = ("ddp", "fsdp")


def check_strategy(strategy: str, allowed: Iterable[str] = MEASURED_STRATEGIES) -> str:
    allowed = tuple(allowed)
    if strategy not in allowed:
        raise ConfigError(f"--parallel must be one of {', '.join(allowed)}, got {strategy!r}")
    return strategy


def repeated_blocks(model: nn.Module) -> list[nn.Module]:
    """Children of containers (ModuleList/Sequential) that hold 2+ modules of one class,
    outermost containers first; a container inside a block already found is not searched."""
    found: list[nn.Module] = []
    taken: set[int] = set()
    for _, module in model.named_modules():
        if id(module) in taken or not isinstance(module, (nn.ModuleList, nn.Sequential)):
            continue
        children = list(module.children())
        if len(children) >= 2 and len({type(c) for c in children}) == 1 \
                and any(True for _ in children[0].parameters()):
            found.extend(children)
            for child in children:
                taken.update(id(m) for m in child.modules())
    return found


class _DDP(nn.parallel.DistributedDataParallel):
    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("module"), name)


def wrap(model: nn.Module, strategy: str, device: torch.device) -> nn.Module:
    """The model wrapped for ``strategy`` (needs the default process group)."""
    check_strategy(strategy)
    if strategy == "ddp":
        ids = [device.index or 0] if device.type == "cuda" else None
        return _DDP(model, device_ids=ids)
    from torch.distributed.fsdp import fully_shard

    for block in repeated_blocks(model):
        fully_shard(block)
    fully_shard(model)
    return model


def local_tensor(t: torch.Tensor) -> torch.Tensor:
    """A DTensor's local shard (what this rank holds); any other tensor as is."""
    to_local = getattr(t, "to_local", None)
    return to_local() if callable(to_local) else t


def parallel_workload(workload: Workload, strategy: str, device: torch.device) -> Workload:
    """``workload`` whose model_fn returns the wrapped model (loss, batch, optimizer as is)."""
    check_strategy(strategy)
    inner: Callable[[], nn.Module] = workload.model_fn

    def model_fn() -> nn.Module:
        return wrap(inner(), strategy, device)

    return Workload(f"{workload.name}", model_fn, workload.batch_fn, workload.loss_fn,
                    workload.optimizer_fn, workload.description,
                    {**workload.tags, "parallel": strategy})
