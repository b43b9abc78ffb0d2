"""One batch size on one backend -> one Measurement.

The probe builds the workload on the backend's device, runs warm-up steps (the first creates
optimizer state) under the budget guard, measures one steady-state step inside the backend's
memory window (with a saved-tensors hook counting activation bytes), then times steps with no
memory instrumentation active. A memory-only probe (``timed=False``, what the max-batch search
runs: feasibility needs no timing) stops after the instrumented step: its Measurement has no
step times (``step_times_s == ()``, ``samples_per_s`` None), so whoever needs throughput times
that size itself; on the CPU, memory-only probes after the first run on the model the first
built (``KeptModel``: no rebuild, no warm-up, the same reading). An out-of-memory step is
data: ``feasible=False`` with the reason. Cleanup runs after leaving the ``except`` block,
because the traceback keeps the step's tensors alive until then.
"""

from __future__ import annotations

import contextlib
import gc
import math
import time
import weakref
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils._pytree import tree_leaves

from batchprof import defaults
from batchprof.backends import Backend, make_backend, unique_storage_bytes
from batchprof.errors import BudgetError, ConfigError, StepError
from batchprof.probe.leak import memory_after_probe
from batchprof.records.measurement import Measurement
from batchprof.records.step_times import needs_more_steps
from batchprof.spec import DEFAULT_TIMED_STEPS, TimingPolicy  # noqa: F401 - re-exported
from batchprof.units import format_bytes, parse_bytes
from batchprof.workloads.base import Workload
from batchprof.workloads.registry import load_workload


def validate_batch_size(batch_size: Any) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int):
        raise ConfigError(f"batch size must be a positive integer, got {batch_size!r}")
    if batch_size <= 0:
        raise ConfigError(f"batch size must be a positive integer, got {batch_size}")
    return batch_size


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> Iterator[torch.Tensor]:
    for state in optimizer.state.values():
        for value in state.values():
            if isinstance(value, torch.Tensor):
                yield value


class TrainingStep:
    """The workload's training step, bound to a built model, optimizer and batch."""

    def __init__(self, workload: Workload, batch_size: int, device: torch.device):
        with torch.device(device):
            self.model = workload.model_fn()
        self.model.train()
        self.workload = workload
        self.optimizer = workload.optimizer_fn(self.model.parameters())
        self.batch = workload.batch_fn(batch_size, device)

    def model_state(self) -> list[torch.Tensor]:
        return [*self.model.parameters(), *self.model.buffers()]

    def resident(self) -> list[torch.Tensor]:
        grads = [p.grad for p in self.model.parameters() if p.grad is not None]
        batch = [t for t in tree_leaves(self.batch) if isinstance(t, torch.Tensor)]
        return [*self.model_state(), *grads, *_optimizer_tensors(self.optimizer), *batch]

    def __call__(self) -> None:
        loss = self.workload.loss_fn(self.model, self.batch)
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def run_counting_activations(self) -> int:
        """One step; returns bytes saved for backward still alive at the end of forward,
        each storage once, excluding parameters and buffers (they are resident, not
        activations)."""
        state_ptrs = {t.untyped_storage().data_ptr() for t in self.model_state()}
        saved: weakref.WeakValueDictionary = weakref.WeakValueDictionary()

        def pack(t: torch.Tensor) -> torch.Tensor:
            storage = t.untyped_storage()
            if storage.data_ptr() not in state_ptrs:
                saved[id(storage)] = storage
            # A detached alias (same storage and version counter, no grad_fn), not ``t``: a
            # saved *output* handed back as itself holds its own grad_fn, a cycle through C++
            # that the garbage collector cannot see. Backward breaks it; a step stopped
            # mid-forward by an OOM never runs backward, and each such probe of the transformer
            # kept its 98 MiB of activations alive (a false "LEAK" note, a real one).
            return t.detach()

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = self.workload.loss_fn(self.model, self.batch)
        self.loss_value = _loss_value(loss)
        activation_bytes = sum(s.nbytes() for s in {id(s): s for s in saved.values()}.values())
        loss.backward()
        del loss
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return activation_bytes


def _loss_value(loss: Any) -> float | None:
    """The loss as a float (one sync, on the measured step only); None if not a scalar."""
    if isinstance(loss, torch.Tensor) and loss.numel() == 1:
        return float(loss.detach())
    return None


def _check_model_fits(step: TrainingStep, backend: Backend) -> None:
    capacity = backend.capacity_bytes()
    own = unique_storage_bytes(step.model_state())
    if capacity is not None and own > capacity:
        raise BudgetError(
            f"the model's parameters and buffers alone take {format_bytes(own)} ({own} bytes); "
            f"the memory limit is {format_bytes(capacity)}. Raise --memory-limit above "
            f"{format_bytes(own)} (training also needs gradients, optimizer state and "
            "activations on top)"
        )


def _time_steps(step: TrainingStep, backend: Backend, policy: TimingPolicy) -> tuple[float, ...]:
    times = [backend.time_step(step) for _ in range(policy.timed_steps)]
    started = time.perf_counter()
    while (len(times) < policy.max_timed_steps
           and time.perf_counter() - started < policy.budget_s
           and needs_more_steps(times, policy.target_iqr_fraction, min_steps=policy.timed_steps)):
        times.append(backend.time_step(step))
    return tuple(times)


_FROZEN_DEPTH = 0


@contextlib.contextmanager
def older_objects_frozen() -> Iterator[None]:
    """Collect, then move every object alive now out of the collector's sight for the block
    (``gc.freeze``), so the collections each probe runs (before its memory window, after its
    step) walk only what the run created. With torch and transformers imported a full
    collection walks ~200k objects: 0.09-0.15 s, three times a probe, up to half of a
    memory-only probe's time. What the run makes (models, steps, tensors) is collected as
    before; what was frozen is unfrozen at the end (its garbage, if any, goes at the next
    collection). Nested runs freeze once."""
    global _FROZEN_DEPTH
    if _FROZEN_DEPTH == 0:
        gc.collect()
        gc.freeze()
    _FROZEN_DEPTH += 1
    try:
        yield
    finally:
        _FROZEN_DEPTH -= 1
        if _FROZEN_DEPTH == 0:
            gc.unfreeze()


class KeptModel:
    """A built model kept from one memory-only probe to the next (``measure(kept=...)``).

    A memory-only probe builds the model, runs the warm-up step(s) that create gradients'
    and optimizer state, and then the one instrumented step. The next probe on a kept model
    swaps in its own batch and runs the instrumented step alone: the model is already in the
    steady state a warm-up would bring it to (parameters, optimizer state, no gradients
    held), so the reading is the same. Only for backends whose readings do not depend on what
    ran before in the process (``Backend.keeps_model_between_probes``: the CPU, whose windows
    count allocator events; not CUDA, whose caching allocator carries earlier sizes' blocks).
    Measured on the CPU, fresh against kept at batch 8, 3, 16, 5, 12: equal peaks to the byte
    for the three built-ins and the zoo's gpt2, bert, resnet and convnext, at 0.4-0.7x the
    time. A probe on the kept model that runs out of memory puts it back in its steady state
    (:func:`_after_failed_step`); any other failure drops it: the next probe is fresh.
    """

    def __init__(self) -> None:
        self.step: TrainingStep | None = None

    def drop(self) -> None:
        self.step = None


def _after_failed_step(kept: KeptModel, *, oom: bool) -> None:
    """A kept model that ran out of memory part-way through a step is put back in its steady
    state (its optimizer state was complete before this step; the gradients the step left are
    dropped, as ``zero_grad(set_to_none=True)`` does after every step) and kept. Anything else
    (a fresh model's first step, whose optimizer state may be half-built; a failure that is
    not memory) drops it: the next probe builds a fresh one."""
    if oom and kept.step is not None:
        kept.step.optimizer.zero_grad(set_to_none=True)
        kept.step.batch = None
    else:
        kept.drop()


def _run_probe(workload: Workload, batch_size: int, backend: Backend, policy: TimingPolicy,
               sampler: Any, result: dict[str, Any], timed: bool = True,
               kept: KeptModel | None = None) -> None:
    """Everything that holds tensors lives in this frame, so it dies when the probe ends
    (except a ``kept`` model, which the caller keeps on purpose; its batch is let go)."""
    step = kept.step if kept is not None else None
    if step is not None and step.workload is workload:
        step.batch = workload.batch_fn(batch_size, backend.device)
        warmup_steps = 0  # the kept model is in the steady state already (KeptModel)
        result["kept_model"] = True
    else:
        if kept is not None:
            kept.drop()
        step = TrainingStep(workload, batch_size, backend.device)
        _check_model_fits(step, backend)
        warmup_steps = policy.warmup_steps
    for _ in range(warmup_steps):
        with backend.budget_guard(step.resident()):
            step()
    with backend.memory_window(step.resident()) as reading:
        result["activation_bytes"] = step.run_counting_activations()
    result["reading"] = reading
    result["loss"] = step.loss_value
    if not timed:  # memory only: no timed steps, no sampler window
        if kept is not None:
            step.batch = None
            kept.step = step
        return
    key = f"batch-{batch_size}-{id(step)}"
    if sampler is not None:
        sampler.begin_window(key)
    try:
        result["step_times_s"] = _time_steps(step, backend, policy)
    finally:
        if sampler is not None:
            result["samples"] = tuple(sampler.end_window(key))


def measure(
    workload: Workload | str,
    batch_size: int,
    device: str = defaults.DEVICE,
    memory_limit: int | str | None = None,
    *,
    timing: TimingPolicy | None = None,
    backend: Backend | None = None,
    sampler: Any = None,
    seed: int = 0,
    timed: bool = True,
    kept: KeptModel | None = None,
) -> Measurement:
    """Measure one batch size: feasibility, peak memory, activation bytes, step times.

    ``timed=False`` measures memory only: the warm-up step(s) and the one instrumented step,
    no timed steps and no sampler window; the Measurement's ``step_times_s`` is ``()`` and its
    ``samples_per_s`` None (``m.timed`` is False). What the max-batch search needs, at about
    a third of a timed probe's steps.

    An OOM (or exceeding ``memory_limit``) returns ``feasible=False`` with the reason.
    Raises ConfigError/BudgetError/WorkloadError for bad input, and StepError when the step
    fails for a reason other than memory (the original error is ``__cause__``).
    ``sampler``: an object with ``begin_window(key)`` / ``end_window(key)`` whose samples
    are attached to the Measurement (see batchprof.sampling). ``kept`` (memory-only probes on
    a backend that allows it): a :class:`KeptModel` the probe runs on, or fills, instead of a
    fresh model and warm-up; such a Measurement says ``extra["kept_model"]``.
    """
    workload = load_workload(workload)
    batch_size = validate_batch_size(batch_size)
    limit = parse_bytes(memory_limit) if memory_limit is not None else None
    # one full collection, not three (older_objects_frozen; within profile() it is a no-op)
    with older_objects_frozen():
        if backend is not None:
            return _measure_on(workload, batch_size, backend, timing, sampler, seed, timed,
                               kept if not timed and backend.keeps_model_between_probes
                               else None)
        backend = make_backend(device, limit)
        try:  # built here, so closed here (a CUDA limit's memory fraction is restored)
            return _measure_on(workload, batch_size, backend, timing, sampler, seed, timed)
        finally:
            backend.close()


def _measure_on(workload: Workload, batch_size: int, backend: Backend,
                timing: TimingPolicy | None, sampler: Any, seed: int,
                timed: bool, kept: KeptModel | None = None) -> Measurement:
    policy = timing or TimingPolicy()
    backend.start_probe(batch_size)
    torch.manual_seed(seed)
    started = time.perf_counter()
    result: dict[str, Any] = {}
    oom_reason: str | None = None
    failure: BaseException | None = None
    try:
        _run_probe(workload, batch_size, backend, policy, sampler, result, timed, kept)
    except (BudgetError, ConfigError):
        if kept is not None:
            kept.drop()
        raise
    except Exception as exc:  # noqa: BLE001 - classified just below, by type
        if kept is not None:
            _after_failed_step(kept, oom=backend.is_oom(exc) and bool(result.get("kept_model")))
        if backend.is_oom(exc):
            oom_reason = f"out of memory: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        else:
            failure = exc
    except BaseException:  # Ctrl-C: the same, and on it goes
        if kept is not None:
            kept.drop()
        raise
    # Outside the except block: the traceback no longer pins the step's tensors.
    gc.collect()
    backend.cleanup()
    after = memory_after_probe(backend.device)  # leak detection (probe.leak)
    if failure is not None:
        raise StepError(
            f"the training step of workload {workload.name!r} at batch size {batch_size} "
            f"failed (not out-of-memory): {type(failure).__name__}: {failure}",
            batch_size=batch_size,
        ) from failure
    reading = result.get("reading")
    loss = result.get("loss")
    notes = ()
    if loss is not None and not math.isfinite(loss):
        notes = (f"the loss was {loss} at batch {batch_size}: the step ran and its memory is "
                 "real, but the training is diverging (check the learning rate, inputs, dtype)",)
    return Measurement(
        workload=workload.name,
        batch_size=batch_size,
        device=backend.name,
        feasible=oom_reason is None,
        reason=oom_reason,
        memory_limit_bytes=backend.memory_limit_bytes,
        capacity_bytes=backend.capacity_bytes(),
        resident_bytes=reading.resident_bytes if reading else None,
        peak_allocated_bytes=reading.peak_allocated_bytes if reading else None,
        peak_reserved_bytes=reading.peak_reserved_bytes if reading else None,
        activation_bytes=result.get("activation_bytes"),
        step_times_s=result.get("step_times_s", ()),
        num_alloc_retries=reading.num_alloc_retries if reading else None,
        samples=result.get("samples", ()),
        wall_time_s=time.perf_counter() - started,
        notes=notes,
        extra={**after, **({"kept_model": True} if result.get("kept_model") else {})},
    )
