"""The dispatch mode a trace records with: every storage an operator call makes, and its free.

``StorageRecorder`` (the same mechanism as the CPU backend's budget guard) sees each operator's
outputs; an output whose storage is not one of the operator's inputs and has not been seen
before is a new allocation (views and in-place results are not). Its free is a
``weakref.finalize`` on the ``UntypedStorage``, which PyTorch keeps alive exactly as long as the
storage itself. On meta, the known-value shadows (known.py) answer reads of value-determined
tensors, and the meta-kernel cache (metacache.py) skips repeated kernels. trace.py drives a
step through it and tags what it recorded.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from ..errors import TraceError
from .known import KnownValues
from .metacache import MetaKernelCache
from .opargs import flatten, op_facts, storage_key
from .paths import META_OUTPUT_FIXES

_MODULE_KEY = "batchprof_module"
LOSS_MODULE = "(loss_fn)"  # ops of loss_fn outside any module
BACKWARD_MODULE = "(backward)"  # backward ops whose forward module is unknown
OPTIMIZER_MODULE = "(optimizer)"
SETUP_MODULE = "(setup)"  # model construction, optimizer construction, the batch

# Hints for the operators that fail on meta because their result depends on tensor values.
_DATA_DEPENDENT = {
    "aten._local_scalar_dense": "Tensor.item() / .tolist() / bool(tensor) need a value",
    "aten.nonzero": "torch.nonzero / boolean-mask indexing has a data-dependent shape",
    "aten.index": "boolean-mask indexing has a data-dependent shape",
    "aten.masked_select": "masked_select has a data-dependent shape",
    "aten.unique": "unique has a data-dependent shape",
    "aten._unique2": "unique has a data-dependent shape",
    "aten.repeat_interleave": "repeat_interleave with tensor repeats has a data-dependent shape",
}


@dataclass(frozen=True)
class OpCall:
    """One operator call of the measured step.

    ``occurrence`` numbers calls of the same operator within the step (0, 1, ...), so calls of
    two traces of one workload can be paired by (op, occurrence). ``event_index`` is the index
    in ``Trace.events`` just after this call's output allocations. ``output_bytes``: bytes of
    each new storage it returned, in order.
    """

    op: str
    occurrence: int
    module: str
    event_index: int
    output_bytes: tuple[int, ...] = ()

    @property
    def key(self) -> tuple[str, int]:
        return (self.op, self.occurrence)



class StorageRecorder(TorchDispatchMode):
    """Records storage allocations/frees of every operator while active (see module doc)."""

    def __init__(self, device: torch.device, *, record_ops: bool = False,
                 profile_markers: bool = False, use_cache: bool = True):
        super().__init__()
        self.device = device
        self.profile_markers = profile_markers
        self.record_ops = record_ops
        self.events: list[tuple[str, int]] = []  # (kind, storage id)
        self.info: dict[int, tuple[int, str, str]] = {}  # sid -> (nbytes, module, op)
        self.off_device: set[int] = set()
        self.live: dict[int, int] = {}  # storage key -> sid
        self.ops: list[OpCall] = []
        self._occurrences: dict[str, int] = {}
        self.phase = "setup"
        self.module_stack: list[str] = []
        self.closed = False
        self.fixes: dict[str, int] = {}  # paths.META_OUTPUT_FIXES applied, by name
        # One cache per recorder, i.e. per trace: no entry outlives the trace (metacache.py).
        self.cache = MetaKernelCache() if device.type == "meta" and use_cache else None
        self.known = KnownValues() if device.type == "meta" else None  # known.py
        self._next_sid = 0

    # --- where are we ---------------------------------------------------------------------

    def current_module(self) -> str:
        if self.phase in ("forward", "warmup-forward"):
            return self.module_stack[-1] if self.module_stack else LOSS_MODULE
        if self.phase in ("backward", "warmup-backward"):
            node = torch._C._current_autograd_node()
            if node is not None:
                return node.metadata.get(_MODULE_KEY, BACKWARD_MODULE)
            return BACKWARD_MODULE
        if self.phase in ("optimizer", "warmup-optimizer"):
            return OPTIMIZER_MODULE
        return SETUP_MODULE

    def sid_of(self, t: Any) -> int | None:
        if not isinstance(t, torch.Tensor):
            return None
        key = storage_key(t)
        return None if key is None else self.live.get(key)

    # --- recording ------------------------------------------------------------------------

    def _released(self, key: int, sid: int) -> None:
        if self.closed:
            return
        if self.live.get(key) == sid:
            del self.live[key]
        self.events.append(("free", sid))

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        index = len(self.ops)
        facts = op_facts(func)
        flat_inputs, sig = flatten((args, kwargs))  # once, for all that reads them (opargs.py)
        known = self.known
        shadow_inputs = known.inputs_known(facts, flat_inputs, sig, args) \
            if known is not None else None
        cache = self.cache
        # A view's output is its input's storage: the cache would refuse it after the kernel.
        cache_key = cache.key(func, sig, flat_inputs) if cache is not None \
            and not facts.is_view else None
        out = cache.replay(cache_key, flat_inputs) if cache_key is not None else None
        shadow_out: Any = None
        on_meta = self.device.type == "meta"
        if out is None:
            try:
                if self.profile_markers and self.record_ops:
                    with torch.autograd.profiler.record_function(f"batchprof#{index}"):
                        out = func(*args, **kwargs)
                else:
                    out = func(*args, **kwargs)
            except Exception as exc:
                if not on_meta:
                    raise
                ok, shadow_out = known.compute(func, facts, shadow_inputs) if shadow_inputs \
                    else (False, None)
                if not ok:
                    raise _trace_error(func, exc, self.current_module()) from exc
                # A value (or a value-dependent shape) meta cannot give: the shadow knows it.
                # Not a function of metadata, so never cached.
                out = known.as_meta(shadow_out)
                known.answered[facts.name] = known.answered.get(facts.name, 0) + 1
                cache_key = None
            fix = META_OUTPUT_FIXES.get(func) if on_meta else None
            if fix is not None:
                out = fix[1](out)
                self.fixes[fix[0]] = self.fixes.get(fix[0], 0) + 1
            if cache_key is not None:
                cache.store(cache_key, flat_inputs, out)
        if known is not None:
            if shadow_out is not None:
                known.attach(out, shadow_out)
            elif not (shadow_inputs is not None and known.small(out)
                      and known.record(func, facts, shadow_inputs, out)):
                known.forget_written(facts, args, kwargs)
        inputs: set[int | None] | None = None
        module = self.current_module()
        op = facts.name
        new: list[int] = []
        live = self.live
        for t in (out,) if isinstance(out, torch.Tensor) else flatten(out)[0]:
            if not isinstance(t, torch.Tensor):
                continue
            key = storage_key(t)
            if key is None or key in live:
                continue
            if inputs is None:
                inputs = {storage_key(t) for t in flat_inputs if isinstance(t, torch.Tensor)}
            if key in inputs:
                continue
            storage = t.untyped_storage()
            sid = self._next_sid
            self._next_sid += 1
            nbytes = storage.nbytes()
            live[key] = sid
            self.info[sid] = (nbytes, module, op)
            if t.device != self.device:
                self.off_device.add(sid)
            self.events.append(("alloc", sid))
            weakref.finalize(storage, self._released, key, sid)
            new.append(nbytes)
        if self.record_ops:
            occurrence = self._occurrences.get(op, 0)
            self._occurrences[op] = occurrence + 1
            self.ops.append(OpCall(op, occurrence, module, len(self.events), tuple(new)))
        return out


def _trace_error(func: Any, exc: Exception, module: str = "") -> TraceError:
    op = str(func)
    packet = op.rsplit(".", 1)[0] if op.count(".") >= 2 else op
    hint = _DATA_DEPENDENT.get(packet)
    reason = hint or f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return TraceError(
        f"cannot trace the step on the meta device: operator {op} failed ({reason})"
        f"{f' in module {module!r}' if module else ''}. "
        "Prediction needs every operator to run without real values; data-dependent operators "
        "(nonzero, boolean-mask indexing, .item(), unique) cannot. Measure instead "
        "(batchprof measure / run fall back to real probes).",
        op_name=op,
    )
