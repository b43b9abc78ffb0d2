"""FSDP2's schedule laid over the single-process step's memory events: one rank's compute peak.

The single-process prediction's event list says, storage by storage, what the step holds at each
moment, and which module allocated each storage (forward, and in backward the module whose
forward made the autograd node). FSDP2 (``fully_shard`` per repeated block, then the root) adds
bytes that depend on *where* the step is, so the per-rank peak is the highest point of

    D'(t) + X(t)

over the step, where ``D'(t)`` is the single-process dynamic bytes at event ``t`` with the
gradients of the units already reduced sharded (``G_k / N``), and ``X(t)`` what FSDP2 holds
then (torch 2.13, ``_fsdp_param_group.py`` / ``_fsdp_state.py``):

- forward: the root's parameters, gathered at the root's pre-forward and kept to the end of
  backward (FSDP2 does not reshard the root after forward); each unit's gathered parameters
  during its forward; and the flat **all-gather output** of the unit gathered last. In forward
  FSDP2 frees it only at the *next* unit's copy-out (to overlap that copy-out with the next
  all-gather) or, for the last one, at the root's post-forward. With only a root (no repeated
  blocks: the LSTM), the root's all-gather output lives through the whole model forward, next to
  its copied-out parameters: ``2 x P``.
- backward: the root's parameters; the unit being back-propagated, gathered; the all-gather
  output of the unit prefetched next (the root's pre-backward prefetches the last block; each
  block's pre-backward the block before it). The root's pre-backward runs when the gradient
  reaches the model's outputs: at once when the loss is computed inside the model (Hugging Face
  models), after the loss's own backward ops otherwise.
- optimizer: the units resharded; the optimizer runs on the shards, so its per-parameter
  temporaries and the gradients are ``1 / N`` of the single-process step's.

Boundaries come from the events' modules: the first allocation in backward is the loss
gradient (module ``(backward)``), the first in the optimizer is tagged ``(optimizer)``; a free
belongs to where the allocation before it happened. The reduce-scatters at each unit's
post-backward are moments of their own (``sharding._fsdp_extra``); the input of the last one
stays until the next (FSDP2's ``reduce_scatter_states``, one buffer by default).

What the trace gets wrong at the moment FSDP peaks shows here even where the single-process
peak hides it. Known: ``nn.Linear`` on a non-contiguous 3-D input (an LSTM's output into its
head) adds the bias out of place in the trace (ATen's ``linear`` does whenever a dispatch mode
is active, as the trace's recorder is) but in place in the real step: one output too many, in
forward, where FSDP holds the root twice (LSTM, 2 ranks: +0.3% at batch 8, +2% at 16).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..prediction.events import MemEvent
from ..prediction.recorder import BACKWARD_MODULE, LOSS_MODULE, OPTIMIZER_MODULE, SETUP_MODULE

_OUTSIDE_MODEL = frozenset({LOSS_MODULE, BACKWARD_MODULE, OPTIMIZER_MODULE, SETUP_MODULE, None})
ROOT = -1  # "in the model, outside every repeated block"
OUTSIDE = -2  # loss_fn, the engine, the optimizer


@dataclass(frozen=True)
class FsdpUnits:
    """What the schedule needs of the model: the repeated blocks (qualified module names,
    forward order), their parameter and gradient bytes, and the root's parameter bytes."""

    names: tuple[str, ...]
    parameter_bytes: tuple[int, ...]
    gradient_bytes: tuple[int, ...]
    root_bytes: int

    def unit_of(self, module: str | None) -> int:
        if module in _OUTSIDE_MODEL:
            return OUTSIDE
        for k, name in enumerate(self.names):
            if module == name or module.startswith(name + "."):  # type: ignore[union-attr]
                return k
        return ROOT


@dataclass(frozen=True)
class ComputePeak:
    """The highest ``D'(t) + X(t)`` of the step and where it is."""

    bytes: int
    phase: str  # "forward", "backward" or "optimizer"
    unit: str  # a block's name, "root" or "outside the model"
    fsdp_bytes: int  # X(t) there


def _phases(events: Sequence[MemEvent], units: FsdpUnits) -> list[tuple[str, int]]:
    """(phase, unit) of every event; a free takes those of the allocation before it."""
    out, phase, where = [], "forward", OUTSIDE
    unit_of: dict[str | None, int] = {}
    for e in events:
        if e.kind == "alloc":
            if e.module == BACKWARD_MODULE and phase == "forward":
                phase = "backward"
            elif e.module == OPTIMIZER_MODULE:
                phase = "optimizer"
            where = unit_of.get(e.module)
            if where is None:
                where = unit_of[e.module] = units.unit_of(e.module)
        out.append((phase, where))
    return out


def fsdp_compute_peak(events: Sequence[MemEvent], units: FsdpUnits, world_size: int
                      ) -> ComputePeak:
    """The per-rank compute peak above the sharded resident state (module docstring).

    ``events``: the single-process step's events, from its first event to its last (what was
    resident when the step began is not in them)."""
    n = world_size
    root, sizes = units.root_bytes, units.parameter_bytes
    where = _phases(events, units)
    allocs = [(i, p, u) for i, (e, (p, u)) in enumerate(zip(events, where, strict=True))
              if e.kind == "alloc" and u != OUTSIDE]
    forward_end = max((i for i, p, _ in allocs if p == "forward"), default=-1)
    root_pre_backward = min((i for i, p, _ in allocs if p == "backward"), default=len(events))
    in_backward = {u for _, p, u in allocs if p == "backward" and u >= 0}
    best = ComputePeak(0, "forward", "outside the model", 0)
    now = 0  # the single-process step's dynamic bytes
    reduced = 0.0  # what the reduced units' gradients no longer hold
    root_gathered = 0  # the root's parameters, gathered
    held = 0  # the all-gather output FSDP2 still holds
    gathered = 0  # the running unit's copied-out parameters
    scatter_input = 0  # the last reduce-scatter's input, kept until the next one
    unit = OUTSIDE  # the unit whose forward or backward is running

    reduced_units: set[int] = set()

    def reduce(k: int) -> None:  # a unit's post-backward: its gradients -> their shard
        nonlocal reduced, scatter_input
        if k not in reduced_units:
            reduced_units.add(k)
            reduced += units.gradient_bytes[k] * (1 - 1 / n)
            scatter_input = sizes[k]

    def consider(phase: str, dynamic: float, fsdp: int, at: int) -> None:
        nonlocal best
        if dynamic + fsdp > best.bytes:
            name = units.names[at] if at >= 0 else \
                ("root" if at == ROOT else "outside the model")
            best = ComputePeak(int(dynamic + fsdp), phase, name, fsdp)

    for i, (e, (phase, u)) in enumerate(zip(events, where, strict=True)):
        if i == forward_end + 1:  # the root's post-forward frees the last all-gather output
            held = gathered = 0
            unit = OUTSIDE
        if phase == "optimizer":
            root_gathered = held = gathered = scatter_input = 0
        elif e.kind == "alloc" and u != OUTSIDE and phase == "forward":
            if not root_gathered:  # the root's pre-forward
                root_gathered = held = root
            if u >= 0 and u != unit:  # a block's pre-forward: its output and the one held
                consider(phase, now - reduced, root + held + sizes[u], u)
                held = gathered = sizes[u]  # the one held before is freed at the copy-out
            elif u == ROOT and unit >= 0:  # the block's post-forward reshards it
                gathered = 0
            unit = u
        elif e.kind == "alloc" and phase == "backward":
            if i == root_pre_backward and sizes:
                held = sizes[-1]  # the root's pre-backward prefetches the last block
            if u >= 0 and u != unit:  # a block's pre-backward: copy out, prefetch the next
                if unit >= 0:  # the block before it reduced first
                    reduce(unit)
                consider(phase, now - reduced, root + held + scatter_input + sizes[u], u)
                held = sizes[u - 1] if u > 0 and u - 1 in in_backward else 0
                gathered = sizes[u]
                unit = u
            elif u == ROOT and unit >= 0:  # the block's post-backward
                reduce(unit)
                gathered = 0
                unit = u
        now += e.nbytes if e.kind == "alloc" else -e.nbytes
        if phase == "optimizer":
            consider(phase, now / n, 0, OUTSIDE)
        else:
            consider(phase, now - reduced, root_gathered + held + gathered + scatter_input, u)
    return best
