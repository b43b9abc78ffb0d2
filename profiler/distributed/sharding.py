"""Per-rank peak memory when a step is sharded N ways, from the single-process prediction.

Nothing is traced again: the single-process ``Prediction`` at the per-rank batch gives the
step's peak ``S``, its resident bytes, and what was live at the peak by category (parameters
``P``, gradients ``G_peak``, optimizer state ``O``); parameter sizes per FSDP unit come from the
model built on the meta device (the units :func:`parallel.repeated_blocks` picks, and the root).
Each strategy then moves bytes as it does:

- ``ddp``: ``S`` + the gradient buckets (one flat copy of every gradient,
  ``gradient_as_bucket_view=False``; a first bucket of 1 MiB, then ``bucket_cap`` = 25 MiB each,
  rounded like any allocation on CUDA). Measured on 2 CPU ranks: exact to the byte.
- ``zero1``: DDP with the optimizer state sharded: ``S - O + O/N`` + buckets.
- ``zero2``: gradients sharded too: ``S - O + O/N - G_peak + G_peak/N`` + one bucket in flight.
- ``fsdp`` (FSDP2, ``fully_shard`` per repeated block then the root; the root's parameters
  stay gathered between forward and backward): resident = padded shards of ``P`` and ``O`` +
  the batch and buffers; on top, the largest of (a) the step's compute peak, the single-process
  step's events with FSDP2's schedule laid over them (:mod:`.schedule`: gathered units, the
  all-gather output held through a unit's forward, the prefetched block in backward, gradients
  sharded once their unit is reduced), (b) each block's reduce-scatter (its gathered
  parameters, unsharded gradients, reduce-scatter input and output, the prefetched block, the
  gathered root, the shards already reduced, the activations still held) and (c) the root's
  reduce-scatter at the end of backward. FSDP needs the step's events, not only the
  Prediction (:func:`predict_rank` passes them).
  Measured on 2 CPU ranks (gloo), the built-ins and two Hugging Face models at batch 4, 8 and
  16: within 0.01%, except the LSTM (+0.3% at 8, +2% at 16: the trace's head, see
  ``schedule``) and the tiny test model at 4 (+1.1%: (b) counts the block's gathered
  parameters, which FSDP2 reshards before it reduce-scatters). gloo's reduce-scatter copies
  its input and frees the copy on its worker thread, sometimes after the next unit's backward
  has begun: a probe can then peak up to one unit higher than this (thread scheduling).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import torch

from ..errors import ConfigError
from ..prediction.allocators import round_size
from ..prediction.events import MemEvent
from ..prediction.model import largest_fitting
from ..workloads.base import Workload
from ..workloads.registry import load_workload
from .parallel import repeated_blocks
from .schedule import FsdpUnits, fsdp_compute_peak

STRATEGIES = ("ddp", "fsdp", "zero1", "zero2")
DDP_BUCKET_CAP_BYTES = 25 * 2**20  # DistributedDataParallel(bucket_cap_mb=25)
DDP_FIRST_BUCKET_BYTES = 2**20  # dist._DEFAULT_FIRST_BUCKET_BYTES


@dataclass(frozen=True)
class ModelLayout:
    """Parameter bytes of the whole model, of each FSDP unit, and their padded shards."""

    parameter_bytes: int
    parameter_sizes: tuple[int, ...]  # bytes per parameter, in registration order
    unit_bytes: tuple[int, ...]  # repeated blocks, in forward order
    root_bytes: int  # parameters outside the blocks
    padded_shard_bytes: int  # this rank's shard of every parameter (dim 0 padded to N)
    unit_names: tuple[str, ...] = ()  # the blocks' qualified module names
    unit_gradient_bytes: tuple[int, ...] = ()  # the blocks' parameters that take a gradient

    @classmethod
    def of(cls, workload: Workload, world_size: int) -> ModelLayout:
        with torch.device("meta"):
            model = workload.model_fn()
        params = list({id(p): p for p in model.parameters()}.values())  # tied weights once
        names = {id(m): name for name, m in model.named_modules()}

        def nbytes(p: torch.nn.Parameter) -> int:
            return p.numel() * p.element_size()

        def shard(p: torch.nn.Parameter) -> int:
            if p.dim() == 0:
                return nbytes(p)
            rows = math.ceil(p.shape[0] / world_size)
            return rows * (p.numel() // max(p.shape[0], 1)) * p.element_size()

        units, grads, unit_names = [], [], []
        in_blocks: set[int] = set()
        for block in repeated_blocks(model):
            own = [p for p in block.parameters() if id(p) not in in_blocks]
            in_blocks.update(id(p) for p in own)
            units.append(sum(nbytes(p) for p in own))
            grads.append(sum(nbytes(p) for p in own if p.requires_grad))
            unit_names.append(names[id(block)])
        total = sum(nbytes(p) for p in params)
        return cls(total, tuple(nbytes(p) for p in params if p.requires_grad), tuple(units),
                   total - sum(units), sum(shard(p) for p in params), tuple(unit_names),
                   tuple(grads))

    @property
    def fsdp_units(self) -> FsdpUnits:
        return FsdpUnits(self.unit_names, self.unit_bytes,
                         self.unit_gradient_bytes or self.unit_bytes, self.root_bytes)


def ddp_bucket_sizes(parameter_sizes: Sequence[int], cap_bytes: int = DDP_BUCKET_CAP_BYTES
                     ) -> list[int]:
    """DDP's buckets: parameters in reverse order, the first bucket capped at 1 MiB."""
    buckets: list[int] = []
    current, cap = 0, DDP_FIRST_BUCKET_BYTES
    for size in reversed(parameter_sizes):
        current += size
        if current >= cap:
            buckets.append(current)
            current, cap = 0, cap_bytes
    if current:
        buckets.append(current)
    return buckets


@dataclass(frozen=True)
class ShardedPrediction:
    """Predicted memory of one rank's step at ``batch_size`` per rank."""

    workload: str
    batch_size: int
    world_size: int
    strategy: str
    target: str
    grad_accumulation: int
    peak_allocated_bytes: int
    peak_reserved_bytes: int
    resident_bytes: int
    single_process_peak_bytes: int
    components: dict[str, int] = field(default_factory=dict)
    gpu: str | None = None
    capacity_bytes: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "components", MappingProxyType(dict(self.components)))

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.world_size * self.grad_accumulation

    @property
    def fits(self) -> bool | None:
        return None if self.capacity_bytes is None else \
            self.peak_reserved_bytes <= self.capacity_bytes

    def to_dict(self) -> dict[str, Any]:
        return {"workload": self.workload, "batch_size": self.batch_size,
                "world_size": self.world_size, "strategy": self.strategy,
                "target": self.target, "grad_accumulation": self.grad_accumulation,
                "global_batch": self.global_batch,
                "peak_allocated_bytes": self.peak_allocated_bytes,
                "peak_reserved_bytes": self.peak_reserved_bytes,
                "resident_bytes": self.resident_bytes,
                "single_process_peak_bytes": self.single_process_peak_bytes,
                "components": dict(self.components), "gpu": self.gpu,
                "capacity_bytes": self.capacity_bytes, "fits": self.fits}


def check_world(world_size: int, strategy: str, grad_accumulation: int = 1) -> None:
    for name, value in (("--world-size", world_size), ("--grad-accumulation", grad_accumulation)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    if strategy not in STRATEGIES:
        raise ConfigError(f"--parallel must be one of {', '.join(STRATEGIES)}, got {strategy!r}")


def _fsdp_extra(layout: ModelLayout, n: int, compute: int, activations: int
                ) -> tuple[int, dict[str, int]]:
    """Bytes above the sharded resident state: the largest of three moments of FSDP2's
    schedule (see the module docstring, ``fsdp``); ``compute``: moment (a), from
    :func:`schedule.fsdp_compute_peak`."""
    units = layout.unit_bytes
    root = layout.root_bytes
    # (b) a block's reduce-scatter, last block first: its gathered parameters, unsharded
    # gradients and reduce-scatter input (3 x U_k) and output (U_k / N), the block before it
    # (prefetched), the gathered root, the shards already reduced, the activations of the
    # blocks not yet back-propagated (blocks taken as equal in activations).
    blocks, done = [], 0.0
    for k in reversed(range(len(units))):
        prefetched = units[k - 1] if k > 0 else 0
        blocks.append(3 * units[k] + units[k] / n + prefetched + root + done
                      + activations * k / len(units))
        done += units[k] / n
    # (c) the root's reduce-scatter at the end of backward (its parameters resharded first).
    root_scatter = 2 * root + root / n + done
    extra = max(compute, root_scatter, *blocks)
    return int(extra), {"fsdp_compute_bytes": int(compute),
                        "fsdp_block_scatter_bytes": int(max(blocks, default=0)),
                        "fsdp_root_scatter_bytes": int(root_scatter),
                        "fsdp_gathered_root_bytes": root,
                        "fsdp_largest_unit_bytes": max(units, default=0)}


def step_events(predictor: Any, batch_size: int) -> list[MemEvent]:
    """The single-process step's events at ``batch_size`` as the predictor replays them
    (calibrated; on CUDA the device's events only), from the step's first event on."""
    model = predictor.model_for(batch_size)
    cuda = predictor.target == "cuda"
    events = model.events(batch_size, drop_off_device=cuda)
    return events[model.index(model.step_start, drop_off_device=cuda):]


def _running_peak(events: Sequence[MemEvent]) -> int:
    now = peak = 0
    for e in events:
        now += e.nbytes if e.kind == "alloc" else -e.nbytes
        peak = max(peak, now)
    return peak


def shard_prediction(base: Any, layout: ModelLayout, world_size: int, strategy: str, *,
                     grad_accumulation: int = 1,
                     events: Sequence[MemEvent] | None = None) -> ShardedPrediction:
    """One rank's figures from the single-process ``base`` (a batchprof Prediction).

    ``events``: the step's events behind ``base`` (:func:`step_events`); FSDP needs them (where
    in the step each byte is held decides what FSDP adds to it), the other strategies do not.
    """
    check_world(world_size, strategy, grad_accumulation)
    if strategy == "fsdp" and events is None:
        raise ValueError("shard_prediction(..., 'fsdp') needs the step's events: pass "
                         "events=step_events(predictor, batch_size)")
    n = world_size
    cats = base.by_category
    optim = int(cats.get("optimizer_state", 0))
    grads_at_peak = int(cats.get("gradient", 0))
    cuda = base.target == "cuda"
    buckets = ddp_bucket_sizes(layout.parameter_sizes)
    bucket_bytes = sum(round_size(b) if cuda else b for b in buckets)
    comps: dict[str, int] = {"parameter_bytes": layout.parameter_bytes,
                             "optimizer_state_bytes": optim,
                             "gradients_at_single_peak_bytes": grads_at_peak}
    s, resident = base.peak_allocated_bytes, base.resident_bytes
    if strategy == "ddp":
        delta, resident_delta = bucket_bytes, bucket_bytes
        comps["ddp_bucket_bytes"] = bucket_bytes
    elif strategy == "zero1":
        saved = optim - optim // n
        delta, resident_delta = bucket_bytes - saved, bucket_bytes - saved
        comps.update(ddp_bucket_bytes=bucket_bytes, optimizer_shard_bytes=optim // n)
    elif strategy == "zero2":
        in_flight = max(buckets, default=0)
        delta = in_flight - (optim - optim // n) - (grads_at_peak - grads_at_peak // n)
        resident_delta = -(optim - optim // n)
        comps.update(bucket_in_flight_bytes=in_flight, optimizer_shard_bytes=optim // n)
    else:
        pad = layout.padded_shard_bytes * n / max(layout.parameter_bytes, 1)
        sharded = layout.padded_shard_bytes + int(optim * pad / n)
        new_resident = resident - layout.parameter_bytes - optim + sharded
        # What the prediction holds beyond its events (calibration's residual; on CUDA also
        # the allocator's rounding) is held at every moment.
        unseen = s - resident - _running_peak(events)
        compute = fsdp_compute_peak(events or (), layout.fsdp_units, n)
        extra, fsdp = _fsdp_extra(layout, n, compute.bytes + unseen, base.activation_bytes)
        delta = new_resident + extra - s
        resident_delta = new_resident - resident
        comps.update(fsdp, sharded_state_bytes=sharded, fsdp_compute_held_bytes=compute.fsdp_bytes)
    peak = int(s + delta)
    reserved = int(base.peak_reserved_bytes + delta)
    return ShardedPrediction(base.workload, base.batch_size, n, strategy, base.target,
                             grad_accumulation, peak, max(reserved, peak),
                             int(resident + resident_delta), s, comps, base.gpu,
                             base.capacity_bytes)


def predict_rank(predictor: Any, batch_size: int, layout: ModelLayout, world_size: int,
                 strategy: str, *, grad_accumulation: int = 1) -> ShardedPrediction:
    """:func:`shard_prediction` of ``predictor``'s prediction at ``batch_size``."""
    return shard_prediction(predictor.predict(batch_size), layout, world_size, strategy,
                            grad_accumulation=grad_accumulation,
                            events=step_events(predictor, batch_size) if strategy == "fsdp"
                            else None)


def predict_sharded(workload: Workload | str, batch_sizes: Sequence[int], world_size: int,
                    strategy: str, target: str = "cpu", *, gpu: Any = None,
                    calibrate: bool = True, grad_accumulation: int = 1
                    ) -> list[ShardedPrediction]:
    """Per-rank predictions at each per-rank batch size (see the module docstring)."""
    from ..prediction.predictor import Predictor

    check_world(world_size, strategy, grad_accumulation)
    wl = load_workload(workload)
    predictor = Predictor(wl, target, gpu=gpu, calibrate=calibrate,
                          check_sizes=[max(batch_sizes)] if batch_sizes else ())
    layout = ModelLayout.of(wl, world_size)
    return [predict_rank(predictor, b, layout, world_size, strategy,
                         grad_accumulation=grad_accumulation) for b in batch_sizes]


def _largest_fitting_from(low: int, peak_of: Any, capacity_bytes: int) -> int | None:
    """``largest_fitting`` that looks at sizes below ``low`` (the predictor's lower anchor)
    only when ``low`` does not fit: each such size is a trace of its own (5 s for a 1.3 B
    GPT), while sizes at or above the anchors are arithmetic on the affine model."""
    if peak_of(low) > capacity_bytes:
        return largest_fitting(peak_of, capacity_bytes, upper_limit=low - 1) if low > 1 \
            else None
    return low - 1 + largest_fitting(lambda k: peak_of(low - 1 + k), capacity_bytes)


def plan_sharded(workload: Workload | str, gpu_names: Sequence[str], world_size: int,
                 strategy: str, *, grad_accumulation: int = 1) -> list[dict[str, Any]]:
    """Per GPU: the largest per-rank batch whose predicted per-rank reserved peak fits the
    GPU's usable memory, and the global batch it gives."""
    from ..gpus import get_gpu
    from ..prediction.predictor import Predictor

    check_world(world_size, strategy, grad_accumulation)
    wl = load_workload(workload)
    specs = [get_gpu(n) for n in gpu_names]
    layout = ModelLayout.of(wl, world_size)
    by_arch: dict[tuple[int, int], Predictor] = {}
    rows = []
    for spec in specs:
        base = by_arch.get(spec.compute_capability)
        if base is None:
            base = by_arch[spec.compute_capability] = Predictor(wl, "cuda", gpu=spec,
                                                                calibrate=False)
        predictor = base.with_gpu(spec)
        usable = predictor.overheads.usable_capacity_bytes(spec.memory_bytes)

        def at(b: int, p: Any = predictor) -> ShardedPrediction:
            return predict_rank(p, b, layout, world_size, strategy,
                                grad_accumulation=grad_accumulation)

        best = _largest_fitting_from(predictor.anchors[0],
                                     lambda b: at(b).peak_reserved_bytes, usable)
        top = at(best) if best is not None else None
        rows.append({"gpu": spec.name, "usable_bytes": usable, "max_batch_per_rank": best,
                     "global_batch": top.global_batch if top else None,
                     "peak_allocated_bytes": top.peak_allocated_bytes if top else None,
                     "peak_reserved_bytes": top.peak_reserved_bytes if top else None,
                     "world_size": world_size, "strategy": strategy,
                     "grad_accumulation": grad_accumulation})
    return rows
