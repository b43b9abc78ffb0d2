"""The memory event a meta-device trace emits and an allocator model replays.

One ``MemEvent`` per storage allocation or free, in program order. ``storage_id`` pairs a free
with its allocation; ``nbytes`` is what the op asked the allocator for (the storage's byte
size, before any allocator rounding). Views are not events: only storages are.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# What a storage is for. The trace tags each allocation with one of these; reports group by them.
PARAMETER = "parameter"
BUFFER = "buffer"  # module buffers, e.g. BatchNorm running stats
GRADIENT = "gradient"  # .grad of parameters (not intermediate gradients: those are temporaries)
OPTIMIZER_STATE = "optimizer_state"
ACTIVATION = "activation"  # saved for backward at the end of forward
TEMPORARY = "temporary"  # everything else produced and freed within the step
INPUT = "input"  # the batch
WORKSPACE = "workspace"  # library workspaces (cuBLAS), injected by the CUDA model, never traced

CATEGORIES: tuple[str, ...] = (
    PARAMETER, BUFFER, GRADIENT, OPTIMIZER_STATE, ACTIVATION, TEMPORARY, INPUT, WORKSPACE,
)

EventKind = Literal["alloc", "free"]


@dataclass(frozen=True, slots=True)
class MemEvent:
    """One allocation or free of one storage.

    For a ``"free"`` event, ``nbytes`` and ``category`` should repeat the allocation's (the
    replay trusts the allocation's values; these are for readers of the event list).
    ``module`` is the innermost module running when the storage was allocated (qualified name,
    "" for the root); ``op`` the operator that allocated it (e.g. ``"aten.mm.default"``).
    """

    kind: EventKind
    storage_id: int
    nbytes: int
    category: str
    module: str | None = None
    op: str | None = None
