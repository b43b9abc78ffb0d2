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

from typing import Any

import torch
from torch.utils._pytree import tree_flatten, tree_map, tree_unflatten
from torch.utils.weak import WeakTensorKeyDictionary

MAX_ELEMENTS = 1 << 20
_META = torch.device("meta")
_CPU = torch.device("cpu")
# Operator names whose outputs are random or uninitialized: never known.
_UNKNOWN_OUTPUT = ("rand", "normal", "bernoulli", "uniform", "exponential", "cauchy",
                   "geometric", "log_normal", "multinomial", "dropout", "empty", "poisson",
                   "set_", "resize")
# Operators whose first argument's values do not matter (only its shape and dtype).
_VALUE_FREE = frozenset({"ones_like", "zeros_like", "full_like", "new_ones", "new_zeros",
                         "new_full", "fill_", "zero_", "fill"})


def _storage_key(t: torch.Tensor) -> int | None:
    try:
        return t.untyped_storage()._cdata
    except (RuntimeError, NotImplementedError):
        return None


class _ValueFree:
    """Stands for an argument whose values the operator ignores (ones_like(x): x's shape)."""

    def __init__(self, meta: torch.Tensor):
        self.meta = meta


class KnownValues:
    """CPU shadows of value-determined meta tensors (see module docstring)."""

    def __init__(self, max_elements: int = MAX_ELEMENTS):
        self.max_elements = max_elements
        self._shadows = WeakTensorKeyDictionary()
        # Cheap pre-checks before the weak dictionary (ids and storages may be stale: then
        # the dictionary decides).
        self._ids: set[int] = set()
        self._storages: set[int | None] = set()
        self.answered: dict[str, int] = {}  # values read on meta that shadows answered, by op

    def __len__(self) -> int:
        return len(self._shadows)

    def shadow(self, t: torch.Tensor) -> torch.Tensor | None:
        return self._shadows.get(t)

    def inputs_known(self, func: Any, args: tuple, kwargs: dict) -> list[Any] | None:
        """The shadow arguments (flattened, with their spec last) when every input's value is
        known and the operator involves the meta device; else None. Computes nothing."""
        packet = str(func).split(".")[1] if str(func).count(".") >= 1 else str(func)
        if any(word in packet for word in _UNKNOWN_OUTPUT):
            return None
        leaves, spec = tree_flatten((args, kwargs))
        involves_meta = False
        swapped: list[Any] = []
        value_free = packet in _VALUE_FREE and args and isinstance(args[0], torch.Tensor)
        for i, leaf in enumerate(leaves):
            if isinstance(leaf, torch.Tensor):
                if leaf.device.type == "meta":
                    involves_meta = True
                    shadow = self._shadows.get(leaf) if id(leaf) in self._ids else None
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
        return [*swapped, spec] if involves_meta else None

    def small(self, out: Any) -> bool:
        """Whether every tensor of a (meta) result is small enough to shadow."""
        return all(t.numel() <= self.max_elements for t in tree_flatten(out)[0]
                   if isinstance(t, torch.Tensor))

    def compute(self, func: Any, shadow_inputs: list[Any]) -> tuple[bool, Any]:
        """(True, the operator's result on the shadows), or (False, None) if it fails there."""
        swapped = [torch.empty_strided(s.meta.shape, s.meta.stride(), dtype=s.meta.dtype)
                   if isinstance(s, _ValueFree) else s for s in shadow_inputs[:-1]]
        shadow_args, shadow_kwargs = tree_unflatten(swapped, shadow_inputs[-1])
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
                    and t.device.type == "meta" and t.shape == s.shape:
                self._shadows[t] = s
                self._ids.add(id(t))
                self._storages.add(_storage_key(t))

    def forget_written(self, func: Any, args: tuple, kwargs: dict) -> None:
        """An operator with an unknown input ran: tensors it wrote to are no longer known."""
        if not self._shadows:
            return
        schema = getattr(func, "_schema", None)
        if schema is None or not schema.is_mutable:
            return
        written: set[int | None] = set()
        for i, arg in enumerate(schema.arguments):
            alias = arg.alias_info
            if alias is None or not alias.is_write:
                continue
            value = args[i] if i < len(args) else kwargs.get(arg.name)
            for t in tree_flatten(value)[0]:
                if isinstance(t, torch.Tensor):
                    written.add(_storage_key(t))
        if written & self._storages:
            for t in [t for t in self._shadows.keys() if _storage_key(t) in written]:
                del self._shadows[t]

    def as_meta(self, shadow_out: Any) -> Any:
        """Meta tensors shaped like the shadow's outputs (where the meta kernel cannot say:
        a data-dependent shape), values as they are."""
        return tree_map(lambda s: torch.empty_strided(s.shape, s.stride(), dtype=s.dtype,
                                                      device=_META)
                        if isinstance(s, torch.Tensor) else s, shadow_out)
