"""``profile_distributed``: the largest per-rank batch that fits on every rank, and the knee.

The search is :func:`batchprof.search.find_max_batch` / ``find_knee`` over a probe that is a
lockstep per-rank measurement (:mod:`.rank_probe`) whose verdict is the AND over ranks. Every
rank runs the same search on the same gathered outcomes, so every rank asks for the same next
size without further coordination. Only rank 0 is meant to write (``on_probe`` is called on
rank 0 alone). An error after probing began carries the finished probes in
``exc.partial_result``.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..backends import resolve_device
from ..errors import BatchprofError, BudgetError, ConfigError
from ..probe.step import TimingPolicy
from ..records.search import KneeResult, MaxBatchResult, Outcome
from ..search.knee.find import find_knee
from ..search.max_batch import find_max_batch
from ..spec import RunSpec, throughput_ladder
from ..units import parse_bytes
from ..workloads.base import Workload
from ..workloads.registry import load_workload
from .collectives import World, fingerprint
from .errors import WorldMismatchError
from .parallel import check_strategy
from .rank_probe import measure_rank
from .records import DistributedMeasurement


@dataclass(frozen=True)
class DistributedProfile:
    """Per-rank ``max_batch`` and ``knee_batch``; their global batches; every probe."""

    workload: str
    world_size: int
    strategy: str
    grad_accumulation: int
    max_batch: int | None
    knee_batch: int | None
    probes: tuple[DistributedMeasurement, ...]
    max_search: MaxBatchResult | None = None
    knee: KneeResult | None = None
    notes: tuple[str, ...] = ()
    error: str | None = None
    elapsed_s: float | None = None

    def global_batch(self, per_rank: int | None) -> int | None:
        return None if per_rank is None else per_rank * self.world_size * self.grad_accumulation

    @property
    def global_max_batch(self) -> int | None:
        return self.global_batch(self.max_batch)

    @property
    def global_knee_batch(self) -> int | None:
        return self.global_batch(self.knee_batch)

    def rank_table(self, batch_size: int | None = None) -> list[dict[str, Any]]:
        """Per-rank rows at ``batch_size`` (default: the max batch; its last probe)."""
        b = self.max_batch if batch_size is None else batch_size
        probe = next((p for p in reversed(self.probes) if p.batch_size == b), None)
        return [] if probe is None else probe.rank_rows()

    def to_dict(self) -> dict[str, Any]:
        return {"workload": self.workload, "world_size": self.world_size,
                "strategy": self.strategy, "grad_accumulation": self.grad_accumulation,
                "max_batch": self.max_batch, "global_max_batch": self.global_max_batch,
                "knee_batch": self.knee_batch, "global_knee_batch": self.global_knee_batch,
                "probes": [p.to_dict() for p in self.probes],
                "max_search": self.max_search.to_dict() if self.max_search else None,
                "knee": self.knee.to_dict() if self.knee else None,
                "notes": list(self.notes), "error": self.error, "elapsed_s": self.elapsed_s}


def workload_fingerprint(workload: Workload) -> str:
    """Name, tags and parameter shapes (built on the meta device: no memory, no compute)."""
    with torch.device("meta"):
        model = workload.model_fn()
    shapes = [(n, tuple(p.shape), str(p.dtype)) for n, p in model.named_parameters()]
    return fingerprint(workload.name, sorted(workload.tags.items(), key=str), shapes)


def rank_limit(memory_limit: Any, rank: int, world_size: int) -> int | None:
    """This rank's budget: one value for all ranks, or a sequence with one per rank."""
    if isinstance(memory_limit, (list, tuple)):
        if len(memory_limit) != world_size:
            raise WorldMismatchError(f"{len(memory_limit)} per-rank memory limits for a world "
                                     f"of {world_size} ranks; give one, or one per rank")
        memory_limit = memory_limit[rank]
    return None if memory_limit is None else parse_bytes(memory_limit)


def check_global_batch(global_batch: int, world_size: int, grad_accumulation: int) -> int:
    """The per-rank batch a global batch implies; WorldMismatchError unless it divides."""
    per = world_size * grad_accumulation
    if global_batch % per:
        raise WorldMismatchError(
            f"global batch {global_batch} is not divisible by world size {world_size} x "
            f"grad accumulation {grad_accumulation} = {per}; choose a multiple of {per} "
            f"(e.g. {max(per, global_batch // per * per)})")
    return global_batch // per


def _setup(workload: Workload | str, strategy: str, device: str, world: World | None,
           options: tuple) -> tuple[Workload, World]:
    check_strategy(strategy)
    wl = load_workload(workload)
    world = world or World(device)
    world.phase = "checking that every rank runs the same workload"
    world.check_same("the workload (name, tags, parameter shapes)", workload_fingerprint(wl))
    world.check_same("the options", options)
    return wl, world


def measure_distributed(
    workload: Workload | str, batch_size: int, strategy: str = "ddp", *, device: str = "cpu",
    memory_limit: int | str | Sequence[int | str] | None = None, grad_accumulation: int = 1,
    timing: TimingPolicy | None = None, world: World | None = None,
) -> DistributedMeasurement:
    """One per-rank batch size on every rank of the default process group (same errors as
    :func:`profile_distributed`)."""
    wl, world = _setup(workload, strategy, device, world,
                       (strategy, batch_size, grad_accumulation))
    limit = rank_limit(memory_limit, world.rank, world.world_size)
    base = timing or TimingPolicy()
    policy = dataclasses.replace(base, max_timed_steps=base.timed_steps)
    ranks = measure_rank(wl, batch_size, world, strategy, device=device,
                         memory_limit_bytes=limit, timing=policy)
    return DistributedMeasurement(wl.name, batch_size, world.world_size, strategy,
                                  grad_accumulation, tuple(ranks))


def predicted_hint(workload: Workload, world: World, strategy: str, device: str,
                   limit: int | None) -> tuple[int | None, str]:
    """The per-rank max batch the sharded prediction gives for the smallest budget of any
    rank, computed on rank 0 and shared, so every rank starts the search at the same size."""
    limits = world.gather(limit)
    hint, note = None, "prediction unavailable: a rank has no memory limit"
    if world.is_main and all(x is not None for x in limits):
        try:
            from ..prediction.model import largest_fitting
            from ..prediction.predictor import Predictor
            from .sharding import ModelLayout, predict_rank

            target = "cuda" if device.startswith("cuda") else "cpu"
            predictor = Predictor(workload, target, calibrate=target == "cpu")
            layout = ModelLayout.of(workload, world.world_size)

            def peak(b: int) -> int:
                p = predict_rank(predictor, b, layout, world.world_size, strategy)
                return p.peak_reserved_bytes if target == "cuda" else p.peak_allocated_bytes

            hint = largest_fitting(peak, min(limits))
            note = (f"search seeded by the sharded prediction: about {hint} per rank"
                    if hint else "prediction found no batch that fits; measuring only")
        except BatchprofError as exc:
            note = f"prediction unavailable: {exc}"
    return world.gather((hint, note))[0]


DISTRIBUTED_SPEC = RunSpec(device="cpu", use_prediction=False)  # profile_distributed's default


def _search_spec(spec: RunSpec | None, memory_limit: Any) -> tuple[RunSpec, Any]:
    """The spec's search options, and the budget: ``memory_limit`` (one per rank allowed) or
    the spec's ``memory_limit_bytes``. ConfigError for what the distributed search lacks."""
    spec = DISTRIBUTED_SPEC if spec is None else spec
    if not isinstance(spec, RunSpec):
        raise ConfigError(f"spec must be a batchprof RunSpec (e.g. RunSpec(max_batch=64)), "
                          f"got {type(spec).__name__}")
    unsupported = [name for name, value in (("dataset_size", spec.dataset_size),
                                            ("hint", spec.hint), ("roofline", spec.roofline))
                   if value not in (None, False)]
    if unsupported:
        raise ConfigError(f"profile_distributed does not support {', '.join(unsupported)} in "
                          "the spec; leave them unset")
    if spec.memory_limit_bytes is not None:
        if memory_limit is not None:
            raise ConfigError("give the budget once: memory_limit (one value, or one per "
                              "rank) or the spec's memory_limit_bytes, not both")
        memory_limit = spec.memory_limit_bytes
    return dataclasses.replace(spec, device=resolve_device(spec.device)), memory_limit


def profile_distributed(
    workload: Workload | str, strategy: str = "ddp", *, spec: RunSpec | None = None,
    memory_limit: int | str | Sequence[int | str] | None = None, grad_accumulation: int = 1,
    on_probe: Callable[[DistributedMeasurement], None] | None = None,
    world: World | None = None,
) -> DistributedProfile:
    """Search the per-rank batch over every rank of the default process group.

    ``spec`` (a :class:`batchprof.spec.RunSpec`, as ``batchprof.profile`` takes) says how to
    search: the device ("auto" resolved here), the batch bounds (``min_batch``, ``max_batch``,
    ``multiple_of``), ``knee`` and ``alpha``, ``timing``, and ``use_prediction`` (seed the
    search with the sharded prediction, :func:`predicted_hint`); by default
    ``DISTRIBUTED_SPEC``: the CPU, no bounds, the knee, no prediction. The distributed search
    has no deadline: the spec's ``time_budget_s`` is not applied. ``memory_limit``: a budget
    for every rank, or one per rank (or the spec's ``memory_limit_bytes``, for every rank).
    Raises ConfigError for a spec it cannot follow, WorldMismatchError when ranks disagree on
    the workload or options, RankFailedError when a rank fails mid-step or dies, BudgetError
    when the smallest batch does not fit; errors raised after probing began carry
    ``partial_result``.
    """
    clock = time.perf_counter()
    spec, memory_limit = _search_spec(spec, memory_limit)
    device, min_batch, multiple_of = spec.device, spec.min_batch, spec.multiple_of
    options = (strategy, min_batch, spec.max_batch, multiple_of, grad_accumulation, spec.knee,
               spec.alpha, spec.use_prediction)
    wl, world = _setup(workload, strategy, device, world, options)
    limit = rank_limit(memory_limit, world.rank, world.world_size)
    base = spec.timing
    policy = dataclasses.replace(base, max_timed_steps=base.timed_steps)  # same count everywhere
    probes: list[DistributedMeasurement] = []

    def probe(b: int) -> Outcome:
        ranks = measure_rank(wl, b, world, strategy, device=device, memory_limit_bytes=limit,
                             timing=policy)
        m = DistributedMeasurement(wl.name, b, world.world_size, strategy, grad_accumulation,
                                   tuple(ranks))
        probes.append(m)
        if on_probe is not None and world.is_main:
            on_probe(m)
        return m.outcome()

    search: MaxBatchResult | None = None
    knee_result: KneeResult | None = None
    notes: list[str] = []
    try:
        hint = None
        if spec.use_prediction:
            hint, note = predicted_hint(wl, world, strategy, device, limit)
            notes.append(note)
        search = find_max_batch(probe, hint=hint, min_batch=min_batch,
                                max_batch=spec.max_batch, multiple_of=multiple_of)
        if search.max_batch is None:
            failed = probes[-1] if probes else None
            raise BudgetError(f"batch size {min_batch} per rank does not fit on every rank"
                              + (f" ({failed.reason})" if failed and failed.reason else "")
                              + "; raise --memory-limit or shard further (--parallel fsdp)")
        if spec.knee:
            seen = {p.batch_size for p in probes}
            for b in throughput_ladder(min_batch, search.max_batch, multiple_of):
                if b not in seen:
                    probe(b)
            fit = [p.outcome() for p in probes if p.feasible]
            knee_result = find_knee(fit, alpha=spec.alpha, refine=probe,
                                    multiple_of=multiple_of)
    except BatchprofError as exc:
        exc.partial_result = _result(wl, world, strategy, grad_accumulation, search,  # type: ignore[attr-defined]
                                     knee_result, probes, notes, clock, exc)
        raise
    return _result(wl, world, strategy, grad_accumulation, search, knee_result, probes, notes,
                   clock, None)


def _result(wl: Workload, world: World, strategy: str, accumulation: int,
            search: MaxBatchResult | None, knee: KneeResult | None,
            probes: list[DistributedMeasurement], notes: list[str], clock: float,
            error: BaseException | None) -> DistributedProfile:
    return DistributedProfile(
        workload=wl.name, world_size=world.world_size, strategy=strategy,
        grad_accumulation=accumulation, max_batch=search.max_batch if search else None,
        knee_batch=knee.knee_batch if knee else None, probes=tuple(probes), max_search=search,
        knee=knee, notes=tuple(notes) + (search.notes if search else ())
        + (knee.notes if knee else ()),
        error=None if error is None else f"{type(error).__name__}: {error}",
        elapsed_s=time.perf_counter() - clock)
