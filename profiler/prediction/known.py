"""Known values: real values of the meta tensors whose values do not depend on data.

A meta trace has shapes but no values, so Python control flow that reads a tensor (``.item()``,
``bool(t)``, ``t.all()``) or an operator whose output shape depends on values (``nonzero``)
cannot go on. Many such reads in real models are of tensors the step computed from shapes and
constants alone: ``arange`` position ids, an all-ones attention mask, ``cumsum``/``diff`` of
those (transformers' masking utilities check ``(packed_mask[:, -1] == 0).all()`` and
``padding_mask.all()`` to pick a mask path). ``KnownValues`` keeps a small CPU "shadow" with the
real value for every meta tensor produced by a deterministic operator from known inputs
(constants, deterministic factories, real host tensors, other known tensors) and answers those
reads from it, so the trace takes the branch the real step takes.

Shadows are computed lazily: an operator on known inputs records itself (``_Deferred``) and runs
on the CPU only when a value is read -- most known tensors never are (the (seq, seq) causal mask
the CPU's math attention builds in every layer, an optimizer's zero-initialised states), and
computing them all cost 40% of a GPT-2 trace. A deferred call holds the shadows it reads, never a
meta tensor (a held meta tensor would move its free in the trace). What it reads can change only
by an operator that writes a shadow (an in-place operator on known inputs): before one runs,
every deferred call that reads the storage it writes is computed, so each value is the one the
eager order gives. Operators with a real (host) tensor input, or that write, run at once.

Never known: outputs of random or uninitialized factories (``randint``, ``normal_``,
``empty``), of anything computed from parameters or the batch's random data, and tensors larger
than ``MAX_ELEMENTS`` (their shadow would cost real memory and time). A tensor that an
operator with an unknown input writes into stops being known. Shadows live as long as the meta
tensor (weak keys) and belong to one trace.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils._pytree import tree_flatten, tree_map
from torch.utils.weak import WeakTensorKeyDictionary

from .opargs import OpFacts, storage_key, unflatten

MAX_ELEMENTS = 1 << 20
_META = torch.device("meta")
_CPU = torch.device("cpu")


class _ValueFree:
    """Stands for an argument whose values the operator ignores (ones_like(x): x's shape).
    Keeps the shape, not the meta tensor (a deferred call must not keep a storage alive)."""

    __slots__ = ("shape", "stride", "dtype")

    def __init__(self, meta: torch.Tensor):
        self.shape, self.stride, self.dtype = meta.shape, meta.stride(), meta.dtype

    def value(self) -> torch.Tensor:
        return torch.empty_strided(self.shape, self.stride, dtype=self.dtype)


class _Deferred:
    """An operator call on known inputs (shadows, deferred outputs, plain values), computed the
    first time one of its outputs is read. ``shapes``: the meta outputs' shapes, flattened
    (None for a non-tensor); an output whose shadow has another shape, or a call that fails on
    the shadows or makes a large result, is unknown."""

    __slots__ = ("func", "inputs", "sig", "shapes", "max_elements", "values", "reads",
                 "__weakref__")

    def __init__(self, func: Any, inputs: list[Any], sig: tuple,
                 shapes: list[torch.Size | None], max_elements: int):
        self.func, self.inputs, self.sig = func, inputs, sig
        self.shapes, self.max_elements = shapes, max_elements
        self.values: list[torch.Tensor | None] | None = None  # computed: per output
        # The inputs a write could change (shadows, deferred outputs; not shapes or numbers).
        self.reads = tuple(e for e in inputs if isinstance(e, (torch.Tensor, _Out)))

    @property
    def pending(self) -> bool:
        return self.values is None

    def force(self) -> list[torch.Tensor | None]:
        if self.values is None:
            # Dependencies first, without recursion: a chain of known operators can be long.
            for call in _pending_closure(self):
                call.values = call._compute()
                call.inputs = call.reads = ()  # what it read is no longer needed
        return self.values

    def _compute(self) -> list[torch.Tensor | None]:
        ok, result = _run_on_shadows(self.func, self.inputs, self.sig, self.max_elements)
        flat = tree_flatten(result)[0] if ok else ()
        if len(flat) != len(self.shapes):
            return [None] * len(self.shapes)
        return [v if isinstance(v, torch.Tensor) and shape is not None and v.shape == shape
                else None for v, shape in zip(flat, self.shapes, strict=True)]


@dataclass(frozen=True)
class ShadowInputs:
    """An operator's flattened arguments with shadows in the meta tensors' places.
    ``reads_host``: a real tensor of the step is among them."""

    entries: list[Any]
    sig: tuple
    reads_host: bool


class _Out:
    """The shadow of one output of a deferred call."""

    __slots__ = ("call", "index")

    def __init__(self, call: _Deferred, index: int):
        self.call, self.index = call, index

    def value(self) -> torch.Tensor | None:
        return self.call.force()[self.index]


def _pending_closure(root: _Deferred, done: Any = ()) -> list[_Deferred]:
    """``root`` and the pending calls it reads, transitively, each after what it reads (not
    going into calls whose id is in ``done``)."""
    order: list[_Deferred] = []
    seen: set[int] = set()
    stack: list[tuple[_Deferred, bool]] = [(root, False)]
    while stack:
        call, expanded = stack.pop()
        if expanded:
            order.append(call)
            continue
        if id(call) in seen or id(call) in done or not call.pending:
            continue
        seen.add(id(call))
        stack.append((call, True))
        stack.extend((e.call, False) for e in call.reads
                     if isinstance(e, _Out) and e.call.pending)
    return order


def _roots(entry: Any, memo: dict[int, frozenset]) -> frozenset:
    """Storages a shadow entry's value is (or, deferred, may be a view of)."""
    if isinstance(entry, torch.Tensor):
        return frozenset((storage_key(entry),))
    if isinstance(entry, _Out):
        if entry.call.pending:
            return _call_roots(entry.call, memo)
        value = entry.call.values[entry.index]
        return frozenset(()) if value is None else frozenset((storage_key(value),))
    return frozenset(())


def _call_roots(call: _Deferred, memo: dict[int, frozenset]) -> frozenset:
    """Storages a pending call reads (through deferred calls too): what it could alias."""
    if id(call) not in memo:
        for c in _pending_closure(call, memo):  # what it reads is in memo before it is needed
            memo[id(c)] = frozenset().union(*(_roots(e, memo) for e in c.reads))
    return memo[id(call)]


def _small(out: Any, max_elements: int) -> bool:
    """Whether every tensor of a result is small enough to shadow."""
    return all(t.numel() <= max_elements for t in tree_flatten(out)[0]
               if isinstance(t, torch.Tensor))


def _run_on_shadows(func: Any, entries: list[Any], sig: tuple,
                    max_elements: int) -> tuple[bool, Any]:
    """(True, the operator's result on the shadows' values), or (False, None) when an input
    turns out unknown, the operator fails there, or the result is too large to shadow."""
    leaves = _materialize(entries)
    if leaves is None:
        return False, None
    args, kwargs = unflatten(leaves, sig)
    try:
        result = func(*args, **kwargs)
    except Exception:  # the shadow is a best effort: the meta kernel decides the shapes
        return False, None
    return (True, result) if _small(result, max_elements) else (False, None)


def _materialize(entries: Any) -> list[Any] | None:
    """Real values for shadow entries (None if one of them turns out unknown)."""
    out = []
    for e in entries:
        if isinstance(e, _Out):
            e = e.value()
            if e is None:
                return None
        elif isinstance(e, _ValueFree):
            e = e.value()
        out.append(e)
    return out


class KnownValues:
    """CPU shadows of value-determined meta tensors (see module docstring)."""

    def __init__(self, max_elements: int = MAX_ELEMENTS):
        self.max_elements = max_elements
        self._shadows = WeakTensorKeyDictionary()
        # Cheap pre-check before the weak dictionary (ids may be stale: then it decides).
        self._ids: set[int] = set()
        # Storage -> the shadowed meta tensors on it (weak), so that a write finds what it
        # makes unknown without walking every shadow (an optimizer's zero-initialised states
        # are known until their first update: hundreds of them).
        self._by_storage: dict[int | None, list[weakref.ref]] = {}
        self.answered: dict[str, int] = {}  # values read on meta that shadows answered, by op
        self._pending: weakref.WeakSet[_Deferred] = weakref.WeakSet()

    def __len__(self) -> int:
        return len(self._shadows)

    def shadow(self, t: torch.Tensor) -> torch.Tensor | None:
        """The real value of a known meta tensor (computed now if it was deferred), or None."""
        entry = self._shadows.get(t)
        return entry.value() if isinstance(entry, _Out) else entry

    def inputs_known(self, facts: OpFacts, leaves: list[Any], sig: tuple,
                     args: tuple) -> ShadowInputs | None:
        """The shadow arguments (the flattened ``leaves`` with their signature ``sig``;
        opargs.flatten) when every input's value is known and the operator involves the meta
        device; else None. Computes nothing."""
        if facts.random_output:
            return None
        involves_meta = reads_host = False
        swapped: list[Any] = []
        value_free = facts.value_free and args and isinstance(args[0], torch.Tensor)
        ids = self._ids
        for i, leaf in enumerate(leaves):
            if isinstance(leaf, torch.Tensor):
                if leaf.is_meta:
                    involves_meta = True
                    shadow = self._shadows.get(leaf) if id(leaf) in ids else None
                    if shadow is None and value_free and i == 0 \
                            and leaf.numel() <= self.max_elements:
                        shadow = _ValueFree(leaf)
                    if shadow is None:
                        return None
                    swapped.append(shadow)
                else:
                    reads_host = True
                    swapped.append(leaf)
            elif isinstance(leaf, torch.device) and leaf.type == "meta":
                involves_meta = True
                swapped.append(_CPU)
            elif isinstance(leaf, str) and leaf == "meta":
                involves_meta = True
                swapped.append("cpu")
            else:
                swapped.append(leaf)
        return ShadowInputs(swapped, sig, reads_host) if involves_meta else None

    def small(self, out: Any) -> bool:
        """Whether every tensor of a (meta) result is small enough to shadow."""
        return _small(out, self.max_elements)

    def record(self, func: Any, facts: OpFacts, inputs: ShadowInputs, out: Any) -> bool:
        """An operator ran on known inputs and made ``out`` (meta): make its outputs known,
        deferred unless it writes or reads a host tensor (see the module docstring). False when
        it is not known after all (computed now, it failed on the shadows)."""
        if facts.written or inputs.reads_host:
            ok, shadow_out = self.compute(func, facts, inputs)
            if ok:
                self.attach(out, shadow_out)
            return ok
        outs = tree_flatten(out)[0]
        call = _Deferred(func, inputs.entries, inputs.sig,
                         [t.shape if isinstance(t, torch.Tensor) else None for t in outs],
                         self.max_elements)
        self._pending.add(call)
        for i, t in enumerate(outs):
            if isinstance(t, torch.Tensor) and t.is_meta:
                self._remember(t, _Out(call, i))
        return True

    def _before_write(self, facts: OpFacts, inputs: ShadowInputs) -> None:
        """Compute every deferred call that reads a storage this operator is about to write
        (through a shadow, or through a deferred view of one), so it sees the value before."""
        args, kwargs = unflatten(inputs.entries, inputs.sig)
        written: set[int | None] = set()
        for i, name in facts.written:
            value = args[i] if i < len(args) else kwargs.get(name)
            for e in tree_flatten(value)[0]:
                if isinstance(e, _Out):
                    e.value()  # the write runs on it: computed now, it has its storage
                written |= _roots(e, {})
        if not written:
            return
        memo: dict[int, frozenset] = {}
        for call in [c for c in self._pending if c.reads]:
            if call.pending and _call_roots(call, memo) & written:
                call.force()

    def compute(self, func: Any, facts: OpFacts, inputs: ShadowInputs) -> tuple[bool, Any]:
        """(True, the operator's result on the shadows), or (False, None) if it fails there."""
        if facts.written:
            self._before_write(facts, inputs)
        return _run_on_shadows(func, inputs.entries, inputs.sig, self.max_elements)

    def attach(self, out: Any, shadow_out: Any) -> None:
        """Remember the shadow of each meta tensor in ``out``."""
        outs, shadows = tree_flatten(out)[0], tree_flatten(shadow_out)[0]
        if len(outs) != len(shadows):
            return
        for t, s in zip(outs, shadows, strict=True):
            if isinstance(t, torch.Tensor) and isinstance(s, torch.Tensor) \
                    and t.is_meta and t.shape == s.shape:
                self._remember(t, s)

    def _remember(self, t: torch.Tensor, entry: torch.Tensor | _Out) -> None:
        self._shadows[t] = entry
        self._ids.add(id(t))
        self._by_storage.setdefault(storage_key(t), []).append(weakref.ref(t))

    def forget_written(self, facts: OpFacts, args: tuple, kwargs: dict) -> None:
        """An operator with an unknown input ran: tensors it wrote to are no longer known."""
        if not facts.written or not self._ids:
            return
        written: set[int | None] = set()
        for i, name in facts.written:
            value = args[i] if i < len(args) else kwargs.get(name)
            for t in tree_flatten(value)[0]:
                if isinstance(t, torch.Tensor):
                    written.add(storage_key(t))
                    self._forget(t)  # itself, whatever storage it had (set_ moves it)
        for key in written:
            for ref in self._by_storage.pop(key, ()):
                t = ref()
                if t is None:
                    continue
                now = storage_key(t)
                if now == key:
                    self._forget(t)
                else:  # moved to another storage since (set_): index it where it is now
                    self._by_storage.setdefault(now, []).append(ref)

    def _forget(self, t: torch.Tensor) -> None:
        if id(t) in self._ids and t in self._shadows:
            del self._shadows[t]
            self._ids.discard(id(t))

    def as_meta(self, shadow_out: Any) -> Any:
        """Meta tensors shaped like the shadow's outputs (where the meta kernel cannot say:
        a data-dependent shape), values as they are."""
        return tree_map(lambda s: torch.empty_strided(s.shape, s.stride(), dtype=s.dtype,
                                                      device=_META)
                        if isinstance(s, torch.Tensor) else s, shadow_out)
