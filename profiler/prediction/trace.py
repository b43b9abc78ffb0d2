"""Trace a training step on the meta device: every storage's allocation and free, in order.

``trace_step(workload, batch_size, target)`` builds the model under ``torch.device("meta")``,
makes the batch with ``batch_fn(b, meta)``, runs one warm-up step (it creates the optimizer
state, as in a real probe) and then the measured step, recording from the first parameter to
the last free. Nothing is computed and no tensor memory exists, so a 124M-parameter model at
batch 512 traces in about the same time as at batch 1.

What is recorded: each storage's allocation and free (recorder.py's ``StorageRecorder``,
which says how). Each allocation is tagged with a category
(events.CATEGORIES: parameters, buffers, gradients, optimizer state, activations = saved for
backward, inputs = the batch, temporaries = everything else) and with the innermost module
running: forward via global module hooks; backward via the autograd node being executed, which
the forward hooks tagged with the module that created it.

Semantics match the CPU backend's measurement (DESIGN.md): the measured step is step 2
(forward, backward, optimizer.step, zero_grad(set_to_none=True)); its peak is the bytes live at
step start plus the highest running sum of the step's events (``replay`` with
``reset_peak_at=Trace.step_start``).

Operators that cannot run on meta (data-dependent ones: ``nonzero``, boolean-mask indexing,
``.item()``) raise ``TraceError`` naming the operator.
"""

from __future__ import annotations

import contextlib
import time
import weakref
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import torch
from torch.utils._pytree import tree_leaves

from ..errors import TraceError
from ..workloads.base import Workload
from .autocast import MetaAutocast
from .events import (
    ACTIVATION,
    BUFFER,
    GRADIENT,
    INPUT,
    OPTIMIZER_STATE,
    PARAMETER,
    TEMPORARY,
    MemEvent,
)
from .opargs import storage_key
from .paths import PathCorrections, apply_optimizer_defaults
from .recorder import (
    _MODULE_KEY,
    LOSS_MODULE,
    OpCall,
    StorageRecorder,
)

__all__ = ["OpCall", "Trace", "trace_step"]  # OpCall: model.py reads it from here


@dataclass(frozen=True)
class Trace:
    """Every allocation and free from model construction to the end of the measured step."""

    workload: str
    batch_size: int
    target: str
    device: str
    events: tuple[MemEvent, ...]
    warmup_start: int  # index of the warm-up step's first event (model, optimizer, batch before)
    step_start: int
    step_ops: tuple[OpCall, ...]
    off_device_storages: frozenset[int]  # storages on the host while the step runs on `device`
    resident_bytes: int
    activation_bytes: int
    activation_bytes_by_module: Mapping[str, int] = field(default_factory=dict)
    corrections: Mapping[str, int] = field(default_factory=dict)
    trace_time_s: float = 0.0

    def __post_init__(self) -> None:
        for name in ("activation_bytes_by_module", "corrections"):
            object.__setattr__(self, name, MappingProxyType(dict(getattr(self, name))))

    @property
    def structure(self) -> tuple[tuple[str, int, str], ...]:
        """(kind, storage id, op) per event: two traces with equal structure differ only in
        sizes, which is what lets the batch-affine model interpolate them event by event."""
        return tuple((e.kind, e.storage_id, e.op or "") for e in self.events)


def _tag_graph(tensors: Any, name: str) -> None:
    """Tag untagged autograd nodes reachable from ``tensors`` with module ``name``."""
    stack = [t.grad_fn for t in tree_leaves(tensors)
             if isinstance(t, torch.Tensor) and t.grad_fn is not None]
    while stack:
        node = stack.pop()
        metadata = node.metadata
        if _MODULE_KEY in metadata:
            continue
        metadata[_MODULE_KEY] = name
        stack.extend(fn for fn, _ in node.next_functions if fn is not None)


@contextlib.contextmanager
def _module_hooks(recorder: StorageRecorder, model: torch.nn.Module) -> Iterator[None]:
    names = {id(m): name or type(model).__name__ for name, m in model.named_modules()}

    def pre(module: torch.nn.Module, args: Any) -> None:
        if recorder.phase.endswith("forward"):
            parent = recorder.module_stack[-1] if recorder.module_stack else LOSS_MODULE
            _tag_graph(args, parent)  # nodes the parent made before calling this module
            recorder.module_stack.append(names.get(id(module), type(module).__name__))

    def post(module: torch.nn.Module, args: Any, output: Any) -> None:
        if recorder.phase.endswith("forward") and recorder.module_stack:
            _tag_graph(output, recorder.module_stack.pop())

    handles = [torch.nn.modules.module.register_module_forward_pre_hook(pre),
               torch.nn.modules.module.register_module_forward_hook(post)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> Iterator[torch.Tensor]:
    for state in optimizer.state.values():
        for value in state.values():
            if isinstance(value, torch.Tensor):
                yield value


class _Categories:
    """Storage ids seen in each role; a storage's category is its highest-priority role."""

    ORDER = (PARAMETER, BUFFER, GRADIENT, OPTIMIZER_STATE, INPUT, ACTIVATION)

    def __init__(self) -> None:
        self.sids: dict[str, set[int]] = {c: set() for c in self.ORDER}

    def add(self, recorder: StorageRecorder, category: str, tensors: Any) -> None:
        for t in tree_leaves(tensors):
            sid = recorder.sid_of(t)
            if sid is not None:
                self.sids[category].add(sid)

    def of(self, sid: int) -> str:
        for c in self.ORDER:
            if sid in self.sids[c]:
                return c
        return TEMPORARY


def trace_step(
    workload: Workload,
    batch_size: int,
    target: str = "cpu",
    *,
    device: str | torch.device = "meta",
    compute_capability: tuple[int, int] = (8, 0),
    profile_markers: bool = False,
    meta_cache: bool = True,
    step_window: Callable[[list[torch.Tensor]], contextlib.AbstractContextManager] | None = None,
) -> Trace:
    """Trace model construction, a warm-up step and the measured step at ``batch_size``.

    ``target`` ("cpu" | "cuda") picks the kernel-path corrections (batchprof.prediction.paths)
    applied on meta. ``device`` other than meta records a *real* run the same way (used by
    calibration on the CPU, with ``profile_markers`` naming each operator call for
    torch.profiler). Raises TraceError when an operator cannot run on meta.
    """
    device = torch.device(device)
    started = time.perf_counter()
    recorder = StorageRecorder(device, profile_markers=profile_markers, use_cache=meta_cache)
    autocast = MetaAutocast(target)
    corrections = PathCorrections(target, compute_capability=compute_capability,
                                  autocast=autocast)
    categories = _Categories()
    extra_fired: list[str] = []
    result: dict[str, Any] = {}
    try:
        on_meta = device.type == "meta"
        # One torch-function mode: autocast's casts, then the path corrections (paths.py).
        with recorder, corrections if on_meta else contextlib.nullcontext():
            with torch.device(device):
                model = workload.model_fn()
            model.train()
            optimizer = workload.optimizer_fn(model.parameters())
            if device.type == "meta":
                extra_fired = apply_optimizer_defaults(optimizer, target)
            batch = workload.batch_fn(batch_size, device)
            categories.add(recorder, INPUT, batch)
            with _module_hooks(recorder, model):
                result["warmup_start"] = len(recorder.events)
                _step(recorder, workload, model, optimizer, batch, categories, "warmup-", {})
                result["step_start"] = len(recorder.events)
                resident = [*model.parameters(), *model.buffers(),
                            *_optimizer_tensors(optimizer),
                            *(t for t in tree_leaves(batch) if isinstance(t, torch.Tensor))]
                window = step_window(resident) if step_window else contextlib.nullcontext()
                del resident
                with window:
                    recorder.record_ops = True
                    _step(recorder, workload, model, optimizer, batch, categories, "", result)
                    recorder.record_ops = False
                result["step_end"] = len(recorder.events)
            categories.add(recorder, PARAMETER, list(model.parameters()))
            categories.add(recorder, BUFFER, list(model.buffers()))
            del batch
    except TraceError:
        raise
    except Exception as exc:
        if device.type != "meta":
            raise
        raise TraceError(
            f"cannot trace workload {workload.name!r} on the meta device: "
            f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}. The model, "
            "batch and loss must work under torch.device('meta') (build tensors on the given "
            "device, no .item() or data-dependent shapes)."
        ) from exc
    finally:
        recorder.closed = True
    return _build_trace(workload, batch_size, target, device, recorder, categories, result,
                        {**corrections.fired, **recorder.fixes, **dict.fromkeys(extra_fired, 1),
                         **({"autocast_casts": autocast.casts} if autocast.casts else {}),
                         **({"known_values": sum(recorder.known.answered.values())}
                            if recorder.known and recorder.known.answered else {})},
                        time.perf_counter() - started)


def _step(recorder: StorageRecorder, workload: Workload, model: torch.nn.Module,
          optimizer: torch.optim.Optimizer, batch: Any, categories: _Categories,
          prefix: str, result: dict[str, Any]) -> None:
    """One training step, as probe.py runs it (the measured one drops the loss before step)."""
    state_keys = {storage_key(t) for t in [*model.parameters(), *model.buffers()]}
    saved: weakref.WeakValueDictionary = weakref.WeakValueDictionary()

    def pack(t: torch.Tensor) -> torch.Tensor:
        key = storage_key(t)
        if key is not None and key not in state_keys:
            saved[key] = t.untyped_storage()
        return t

    recorder.phase = prefix + "forward"
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = workload.loss_fn(model, batch)
    _tag_graph(loss, LOSS_MODULE)
    if prefix == "":
        result["activation_bytes"], result["activation_bytes_by_module"] = \
            _saved_bytes(recorder, saved)
    for saved_key in list(saved.keys()):
        sid = recorder.live.get(saved_key)
        if sid is not None:
            categories.sids[ACTIVATION].add(sid)
    recorder.phase = prefix + "backward"
    _backward(loss)
    categories.add(recorder, GRADIENT, [p.grad for p in model.parameters()])
    if prefix == "":
        del loss
    recorder.phase = prefix + "optimizer"
    optimizer.step()
    categories.add(recorder, OPTIMIZER_STATE, list(_optimizer_tensors(optimizer)))
    optimizer.zero_grad(set_to_none=True)
    recorder.phase = "idle"


def _backward(loss: torch.Tensor) -> None:
    """``loss.backward()`` with the trace's torch-function modes still active inside it.

    A mode is off inside its own handler, and ``Tensor.backward`` goes through the handler, so
    backward would run without the path corrections; activation checkpointing re-runs forward
    code inside backward, which must take the forward's paths (else its recompute check fails).
    Calling the engine directly skips the handler (what ``torch.autograd.backward`` does after
    its torch-function check: ones_like(loss) as the gradient, accumulate into ``.grad``).
    """
    from torch.autograd.graph import _engine_run_backward

    grad = torch.ones_like(loss, memory_format=torch.preserve_format)
    _engine_run_backward((loss,), (grad,), False, False, (), allow_unreachable=True,
                         accumulate_grad=True)


def _saved_bytes(recorder: StorageRecorder,
                 saved: weakref.WeakValueDictionary) -> tuple[int, dict[str, int]]:
    """Bytes of the saved storages alive now (each once), in total and by module. A function
    of its own so that no strong reference to a storage outlives it."""
    by_module: dict[str, int] = {}
    total = 0
    for key in list(saved.keys()):
        storage = saved.get(key)
        if storage is None:
            continue
        nbytes = storage.nbytes()
        total += nbytes
        sid = recorder.live.get(key)
        module = recorder.info[sid][1] if sid is not None else LOSS_MODULE
        by_module[module] = by_module.get(module, 0) + nbytes
    return total, by_module


def _build_trace(workload: Workload, batch_size: int, target: str, device: torch.device,
                 recorder: StorageRecorder, categories: _Categories, result: dict[str, Any],
                 fired: Mapping[str, int], elapsed_s: float) -> Trace:
    events = []
    live_bytes = 0
    step_start = result["step_start"]
    resident = 0
    # Events after the step (the batch and model going away) are not part of it.
    for i, (kind, sid) in enumerate(recorder.events[:result["step_end"]]):
        if i == step_start:
            resident = live_bytes
        nbytes, module, op = recorder.info[sid]
        live_bytes += nbytes if kind == "alloc" else -nbytes
        events.append(MemEvent(kind, sid, nbytes, categories.of(sid), module, op))
    if step_start == len(events):
        resident = live_bytes
    return Trace(
        workload=workload.name,
        batch_size=batch_size,
        target=target,
        device=device.type,
        events=tuple(events),
        warmup_start=result["warmup_start"],
        step_start=step_start,
        step_ops=tuple(recorder.ops),
        off_device_storages=frozenset(recorder.off_device),
        resident_bytes=resident,
        activation_bytes=result.get("activation_bytes", 0),
        activation_bytes_by_module=result.get("activation_bytes_by_module", {}),
        corrections=fired,
        trace_time_s=elapsed_s,
    )
