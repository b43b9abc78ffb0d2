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

Never known: outputs of random or uninitialized factories (``randint``, ``normal_``,
``empty``), of anything computed from parameters or the batch's random data, and tensors larger
than ``MAX_ELEMENTS`` (their shadow would cost real memory and time). A tensor that an
operator with an unknown input writes into stops being known. Shadows live as long as the meta
tensor (weak keys) and belong to one trace.
"""

from __future__ import annotations

import weakref
from typing import Any

import torch
from torch.utils._pytree import tree_flatten, tree_map
from torch.utils.weak import WeakTensorKeyDictionary

from .opargs import OpFacts, storage_key, unflatten

MAX_ELEMENTS = 1 << 20
_META = torch.device("meta")
_CPU = torch.device("cpu")


class _ValueFree:
    """Stands for an argument whose values the operator ignores (ones_like(x): x's shape)."""

    def __init__(self, meta: torch.Tensor):
        self.meta = meta


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

    def __len__(self) -> int:
        return len(self._shadows)

    def shadow(self, t: torch.Tensor) -> torch.Tensor | None:
        return self._shadows.get(t)

    def inputs_known(self, facts: OpFacts, leaves: list[Any], sig: tuple,
                     args: tuple) -> list[Any] | None:
        """The shadow arguments (the flattened ``leaves``, with their signature ``sig`` last;
        opargs.flatten) when every input's value is known and the operator involves the meta
        device; else None. Computes nothing."""
        if facts.random_output:
            return None
        involves_meta = False
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
                    swapped.append(leaf)
            elif isinstance(leaf, torch.device) and leaf.type == "meta":
                involves_meta = True
                swapped.append(_CPU)
            elif isinstance(leaf, str) and leaf == "meta":
                involves_meta = True
                swapped.append("cpu")
            else:
                swapped.append(leaf)
        return [*swapped, sig] if involves_meta else None

    def small(self, out: Any) -> bool:
        """Whether every tensor of a (meta) result is small enough to shadow."""
        return all(t.numel() <= self.max_elements for t in tree_flatten(out)[0]
                   if isinstance(t, torch.Tensor))

    def compute(self, func: Any, shadow_inputs: list[Any]) -> tuple[bool, Any]:
        """(True, the operator's result on the shadows), or (False, None) if it fails there."""
        swapped = [torch.empty_strided(s.meta.shape, s.meta.stride(), dtype=s.meta.dtype)
                   if isinstance(s, _ValueFree) else s for s in shadow_inputs[:-1]]
        shadow_args, shadow_kwargs = unflatten(swapped, shadow_inputs[-1])
        try:
            result = func(*shadow_args, **shadow_kwargs)
        except Exception:  # the shadow is a best effort: the meta kernel decides
            return False, None
        return (True, result) if self.small(result) else (False, None)

    def attach(self, out: Any, shadow_out: Any) -> None:
        """Remember the shadow of each meta tensor in ``out``."""
        outs, shadows = tree_flatten(out)[0], tree_flatten(shadow_out)[0]
        if len(outs) != len(shadows):
            return
        for t, s in zip(outs, shadows, strict=True):
            if isinstance(t, torch.Tensor) and isinstance(s, torch.Tensor) \
                    and t.is_meta and t.shape == s.shape:
                self._shadows[t] = s
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
