"""One batch size on this rank, in lockstep with the others -> this rank's Measurement.

Order of events on every rank (the same collectives in the same order everywhere):
build and wrap the model (DDP broadcasts its parameters), warm-up steps, one measured step,
then the **verdict**: ``all_true(peak <= budget)``, then timed steps only if every rank fit,
then gathering every rank's Measurement. The budget is judged *after* the measured step, on
the peak the allocator saw, so a rank over its budget still finishes the step with its peers
(whose backward waits for its gradients) and reaches the verdict; nobody is left inside a
collective. On the CPU the peak is read from the allocator's events over the whole probe:
bytes the probe allocated and still held when the measured step began (model, the wrapper's
gradient buckets, optimizer state, batch) plus the step's highest running sum. On CUDA it is
``max_memory_allocated`` (the device allocator counts everything).

A real out-of-memory (or any error) inside a phase is different: that rank stopped halfway and
its peers may be waiting for it in a collective, so it abandons the world
(:meth:`World.abandon`) and the run ends with :class:`RankFailedError` on every rank.
"""

from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils._pytree import tree_leaves

from ..backends import make_backend, unique_storage_bytes
from ..backends.cpu import collector_paused, quiet_stderr
from ..probe import TimingPolicy, _Step, validate_batch_size
from ..types import Measurement
from ..workload import Workload
from .collectives import World
from .errors import RankFailedError
from .parallel import local_tensor, parallel_workload

_MARK = "batchprof#measured-step"


class _RankStep(_Step):
    """The step with DTensor parameters, gradients and optimizer state seen as local shards."""

    def model_state(self) -> list[torch.Tensor]:
        return [local_tensor(t) for t in (*self.model.parameters(), *self.model.buffers())]

    def resident(self) -> list[torch.Tensor]:
        grads = [local_tensor(p.grad) for p in self.model.parameters() if p.grad is not None]
        optim = [local_tensor(v) for s in self.optimizer.state.values() for v in s.values()
                 if isinstance(v, torch.Tensor)]
        batch = [t for t in tree_leaves(self.batch) if isinstance(t, torch.Tensor)]
        return [*self.model_state(), *grads, *optim, *batch]


@dataclass
class _Reading:
    resident_bytes: int | None = None
    peak_allocated_bytes: int | None = None
    peak_reserved_bytes: int | None = None


class _CpuProbeMeter:
    """Allocator events over the whole probe; the reading is taken at the marked step."""

    def __init__(self) -> None:
        self.reading = _Reading()

    @contextlib.contextmanager
    def probe(self) -> Iterator[None]:
        activities = [torch.profiler.ProfilerActivity.CPU]
        with quiet_stderr(), torch.profiler.profile(activities=activities,
                                                    profile_memory=True) as prof:
            yield
        events = list(prof.profiler.kineto_results.events())
        marks = [e for e in events if e.name() == _MARK]
        if not marks:
            return
        start, end = marks[0].start_ns(), marks[0].start_ns() + marks[0].duration_ns()
        cpu = torch.autograd.DeviceType.CPU
        memory = sorted((e for e in events if e.name() == "[memory]"
                         and e.device_type() == cpu), key=lambda e: e.start_ns())
        running, resident, peak = 0, None, 0
        for e in memory:
            if resident is None and e.start_ns() >= start:
                resident = running
            running += e.nbytes()
            if start <= e.start_ns() <= end:
                peak = max(peak, running)
        resident = running if resident is None else resident
        self.reading = _Reading(resident, max(peak, resident), max(peak, resident))

    @contextlib.contextmanager
    def step(self, _step: _RankStep) -> Iterator[None]:
        with collector_paused(), torch.profiler.record_function(_MARK):
            yield


class _CudaProbeMeter:
    def __init__(self, backend: Any) -> None:
        self.backend = backend
        self.reading = _Reading()

    @contextlib.contextmanager
    def probe(self) -> Iterator[None]:
        yield

    @contextlib.contextmanager
    def step(self, step: _RankStep) -> Iterator[None]:
        with self.backend.memory_window(step.resident()) as r:
            yield
        self.reading = _Reading(r.resident_bytes, r.peak_allocated_bytes, r.peak_reserved_bytes)


def _is_oom(exc: BaseException) -> bool:
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    # The CPU allocator raises a plain RuntimeError; its message is the only signal.
    return isinstance(exc, RuntimeError) and "DefaultCPUAllocator: can't allocate" in str(exc)


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
    meter = _CpuProbeMeter() if backend.device.type == "cpu" else _CudaProbeMeter(backend)
    wrapped = parallel_workload(workload, strategy, backend.device)
    world.phase = f"running the step at batch {batch_size} per rank"
    started = time.perf_counter()
    torch.manual_seed(seed)
    result: dict[str, Any] = {}
    failure: BaseException | None = None
    try:
        _run(wrapped, batch_size, backend, meter, policy, world, memory_limit_bytes, result)
    except RankFailedError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure mid-phase breaks the lockstep
        failure = exc
    gc.collect()  # outside the except block: the traceback no longer pins the step's tensors
    backend.cleanup()
    if failure is not None:
        kind = "ran out of memory" if _is_oom(failure) else "failed"
        first = str(failure).strip().splitlines()[0] if str(failure).strip() else ""
        reason = (f"{kind} mid-step at batch {batch_size} per rank "
                  f"({type(failure).__name__}: {first})")
        world.abandon(reason)
        raise RankFailedError(f"rank {world.rank} {reason}", rank=world.rank,
                              batch_size=batch_size) from failure
    reading: _Reading = result["reading"]
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


def _run(wrapped: Workload, batch_size: int, backend: Any, meter: Any, policy: TimingPolicy,
         world: World, limit: int | None, result: dict[str, Any]) -> None:
    """Everything that holds tensors lives in this frame, so it dies when the probe ends."""
    with meter.probe():
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


def resident_of(step: _RankStep) -> int:
    """Bytes of this rank's own state (local shards), for tests and reports."""
    return unique_storage_bytes(step.resident())
