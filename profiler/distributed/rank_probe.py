"""One batch size on this rank, in lockstep with the others -> this rank's Measurement.

Order of events on every rank (the same collectives in the same order everywhere):
build and wrap the model (DDP broadcasts its parameters), warm-up steps, one measured step,
then the **verdict**: ``all_true(peak <= budget)``, then timed steps only if every rank fit,
then gathering every rank's Measurement. The budget is judged *after* the measured step, on
the peak the allocator saw, so a rank over its budget still finishes the step with its peers
(whose backward waits for its gradients) and reaches the verdict; nobody is left inside a
collective. On the CPU the reading comes from the allocator's events over the whole probe (see
``_ProbeMeter``); on CUDA from ``max_memory_allocated`` (the device allocator counts it all).

A real out-of-memory (or any error) inside a phase is different: that rank stopped halfway and
its peers may be waiting for it in a collective, so it abandons the world
(:meth:`World.abandon`) and the run ends with :class:`RankFailedError` on every rank.
"""

from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils._pytree import tree_leaves

from ..backends import AllocatorWindow, MemoryReading, make_backend
from ..probe.step import TimingPolicy, TrainingStep, validate_batch_size
from ..records.measurement import Measurement
from ..workloads.base import Workload
from .collectives import World
from .errors import RankFailedError
from .parallel import local_tensor, parallel_workload

_MARK = "batchprof#measured-step"


class _RankStep(TrainingStep):
    """The step with DTensor parameters, gradients and optimizer state seen as local shards."""

    def model_state(self) -> list[torch.Tensor]:
        return [local_tensor(t) for t in (*self.model.parameters(), *self.model.buffers())]

    def resident(self) -> list[torch.Tensor]:
        grads = [local_tensor(p.grad) for p in self.model.parameters() if p.grad is not None]
        optim = [local_tensor(v) for s in self.optimizer.state.values() for v in s.values()
                 if isinstance(v, torch.Tensor)]
        batch = [t for t in tree_leaves(self.batch) if isinstance(t, torch.Tensor)]
        return [*self.model_state(), *grads, *optim, *batch]


def wrapper_buffer_bytes(model: torch.nn.Module) -> int:
    """Bytes the parallel wrapper holds outside parameters, gradients and optimizer state:
    DDP's gradient buckets (one flat copy of the gradients unless ``gradient_as_bucket_view``),
    as its reducer reports them. FSDP2 keeps nothing resident beyond its (padded) shards."""
    logging_data = getattr(model, "_get_ddp_logging_data", None)
    if not callable(logging_data):
        return 0
    data = logging_data()
    if data.get("gradient_as_bucket_view"):
        return 0
    sizes = str(data.get("bucket_sizes", "")).replace(" ", "")
    return sum(int(s) for s in sizes.split(",") if s)


class _ProbeMeter:
    """CPU: the allocator's events over the whole probe, read at the marked step: resident =
    what the probe allocated and still held when the step began (including what the wrapper
    holds that no Python object shows, e.g. DDP's reducer buffers), peak = the highest
    running sum inside the step. CUDA: the backend's window (``max_memory_allocated``)."""

    def __init__(self, backend: Any) -> None:
        self.backend = backend
        self.reading = MemoryReading()
        self.events: AllocatorWindow | None = None  # None: the backend records no events

    @contextlib.contextmanager
    def probe(self) -> Iterator[None]:
        window = self.backend.allocator_window(_MARK)
        if window is None:
            yield
            return
        with window as self.events:
            yield
        timeline = self.events.timeline
        if timeline.spans and timeline.events:
            self.reading = _read_marked(timeline.held(), timeline.spans[0][:2])

    @contextlib.contextmanager
    def step(self, step: _RankStep) -> Iterator[None]:
        if self.events is None:
            with self.backend.memory_window(step.resident()) as self.reading:
                yield
            return
        with self.events.mark(_MARK):
            yield


def _read_marked(held: list[tuple[int, int]], span: tuple[int, int]) -> MemoryReading:
    """resident = what the probe held when the marked step began, peak = the most it held
    during the step, both from the allocator's own counter (every thread's frees counted)."""
    start, end = span
    resident, peak, now = None, 0, 0
    for time_ns, value in held:
        if resident is None and time_ns >= start:
            resident = now
        now = value
        if start <= time_ns <= end:
            peak = max(peak, now)
    resident = now if resident is None else resident
    return MemoryReading(resident_bytes=resident, peak_allocated_bytes=max(peak, resident),
                         peak_reserved_bytes=max(peak, resident))


def _collective_failed(exc: BaseException) -> bool:
    """A communication error (a peer closed its connection or timed out), not this rank's own
    failure. gloo raises plain RuntimeErrors naming its transport; nccl DistBackendError."""
    import torch.distributed as dist

    if isinstance(exc, dist.DistError):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("gloo" in text or "NCCL" in text)


def measure_rank(workload: Workload, batch_size: int, world: World, strategy: str, *,
                 device: str = "cpu", memory_limit_bytes: int | None = None,
                 timing: TimingPolicy | None = None, seed: int = 0) -> list[Measurement]:
    """Every rank's Measurement at ``batch_size`` (per rank), in rank order, on every rank.

    Each rank's ``feasible`` is its own peak against its own ``memory_limit_bytes``; the
    world's verdict is their AND (see DistributedMeasurement). Raises RankFailedError when any
    rank failed mid-step (the error names it), StepError-like failures included.
    """
    batch_size = validate_batch_size(batch_size)
    policy = timing or TimingPolicy()
    backend = make_backend(device, None)  # the limit is judged after the step, not enforced
    wrapped = parallel_workload(workload, strategy, backend.device)
    world.phase = f"running the step at batch {batch_size} per rank"
    started = time.perf_counter()
    torch.manual_seed(seed)
    result: dict[str, Any] = {}
    failure: BaseException | None = None
    try:
        _run(wrapped, batch_size, backend, policy, world, memory_limit_bytes, result)
    except RankFailedError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure mid-phase breaks the lockstep
        failure = exc
    gc.collect()  # outside the except block: the traceback no longer pins the step's tensors
    backend.cleanup()
    if failure is not None:
        if _collective_failed(failure):  # a peer left: say who, not "this rank failed"
            raise world.peer_failure("in a collective of the step", failure) from failure
        kind = "ran out of memory" if backend.is_oom(failure) else "failed"
        first = str(failure).strip().splitlines()[0] if str(failure).strip() else ""
        reason = (f"{kind} mid-step at batch {batch_size} per rank "
                  f"({type(failure).__name__}: {first})")
        world.abandon(reason)
        raise RankFailedError(f"rank {world.rank} {reason}", rank=world.rank,
                              batch_size=batch_size) from failure
    reading: MemoryReading = result["reading"]
    mine = Measurement(
        workload=workload.name, batch_size=batch_size, device=f"{backend.name}#{world.rank}",
        feasible=result["fits"], reason=result.get("reason"),
        memory_limit_bytes=memory_limit_bytes, capacity_bytes=memory_limit_bytes,
        resident_bytes=reading.resident_bytes, peak_allocated_bytes=reading.peak_allocated_bytes,
        peak_reserved_bytes=reading.peak_reserved_bytes,
        activation_bytes=result.get("activation_bytes"),
        step_times_s=result.get("step_times_s", ()), wall_time_s=time.perf_counter() - started,
        extra={"rank": world.rank, "world_size": world.world_size, "parallel": strategy})
    world.phase = f"gathering results of batch {batch_size} per rank"
    return [Measurement.from_dict(d) for d in world.gather(mine.to_dict())]


def _run(wrapped: Workload, batch_size: int, backend: Any, policy: TimingPolicy,
         world: World, limit: int | None, result: dict[str, Any]) -> None:
    """Everything that holds tensors lives in this frame, so it dies when the probe ends."""
    meter = _ProbeMeter(backend)
    with meter.probe():  # before the model is built: every allocation of the probe is seen
        step = _RankStep(wrapped, batch_size, backend.device)
        for _ in range(policy.warmup_steps):
            step()
        with meter.step(step):
            result["activation_bytes"] = step.run_counting_activations()
    reading = meter.reading
    result["reading"] = reading
    peak = reading.peak_reserved_bytes if backend.device.type == "cuda" \
        else reading.peak_allocated_bytes
    fits = limit is None or (peak is not None and peak <= limit)
    result["fits"] = fits
    if not fits:
        result["reason"] = (f"peak {peak} bytes above this rank's {limit}-byte budget"
                            if peak is not None else "no peak reading")
    world.phase = f"agreeing on batch {batch_size} per rank"
    if world.all_true(fits):
        world.phase = f"timing batch {batch_size} per rank"
        # A fixed number of steps: every rank must run the same collectives.
        result["step_times_s"] = tuple(backend.time_step(step)
                                       for _ in range(policy.timed_steps))
    del step

