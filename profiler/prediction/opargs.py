"""An operator call's arguments, flattened once, and the static facts of an operator.

The trace's dispatch mode (recorder.StorageRecorder) sees every ATen call of a step, about 8,000
for a GPT-2 step with its optimizer, and three parts of it read the arguments: the known-value
shadows (known.py), the meta-kernel cache key (metacache.py) and the storage bookkeeping.
``torch.utils._pytree`` flattened them once for each (a generic walk that asks every node
whether it is a namedtuple or a registered type): measured, a third of the mode's own time.
ATen arguments are tensors, scalars, lists/tuples of them and a kwargs dict, so ``flatten``
walks only ``tuple``, ``list`` and ``dict`` (exact types, as pytree does; anything else is a
leaf) and returns the leaves with a structure signature from which ``unflatten`` rebuilds the
arguments. ``OpFacts`` are what the mode asks of an operator on every call (its name, whether
its outputs are random, which arguments it writes): functions of the operator alone, so they
are computed once per operator and safe to keep for the process.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import torch

# Operator names whose outputs are random or uninitialized: never known (known.py).
_UNKNOWN_OUTPUT = ("rand", "normal", "bernoulli", "uniform", "exponential", "cauchy",
                   "geometric", "log_normal", "multinomial", "dropout", "empty", "poisson",
                   "set_", "resize")
# Operators whose first argument's values do not matter (only its shape and dtype).
_VALUE_FREE = frozenset({"ones_like", "zeros_like", "full_like", "new_ones", "new_zeros",
                         "new_full", "fill_", "zero_", "fill"})


def storage_key(t: torch.Tensor) -> int | None:
    """The identity of ``t``'s storage (None where it has none: a functional wrapper)."""
    try:
        return t.untyped_storage()._cdata
    except (RuntimeError, NotImplementedError):
        return None


def flatten(tree: Any) -> tuple[list[Any], tuple]:
    """(leaves, signature) of ``tree``: tuples, lists and dicts are walked, all else is a leaf.
    Two trees with equal signatures have the same structure (a pre-order code of the nodes)."""
    leaves: list[Any] = []
    sig: list[Any] = []
    _walk(tree, leaves, sig)
    return leaves, tuple(sig)


def _walk(node: Any, leaves: list[Any], sig: list[Any]) -> None:
    kind = type(node)
    if kind is tuple or kind is list:
        sig.append((kind, len(node)))
        for child in node:
            _walk(child, leaves, sig)
    elif kind is dict:
        sig.append((dict, tuple(node)))
        for child in node.values():
            _walk(child, leaves, sig)
    else:
        sig.append(None)
        leaves.append(node)


def unflatten(leaves: list[Any], sig: tuple) -> Any:
    """The tree ``flatten`` read ``sig`` from, with ``leaves`` in its leaves' places."""
    tree, _, _ = _build(leaves, sig, 0, 0)
    return tree


def _build(leaves: list[Any], sig: tuple, at: int, leaf: int) -> tuple[Any, int, int]:
    node = sig[at]
    at += 1
    if node is None:
        return leaves[leaf], at, leaf + 1
    kind, shape = node
    if kind is dict:
        out = {}
        for name in shape:
            out[name], at, leaf = _build(leaves, sig, at, leaf)
        return out, at, leaf
    children = []
    for _ in range(shape):
        child, at, leaf = _build(leaves, sig, at, leaf)
        children.append(child)
    return kind(children), at, leaf


@dataclass(frozen=True)
class OpFacts:
    """What the trace asks of an operator on every call; see :func:`op_facts`."""

    name: str  # str(func): "aten.add.Tensor"
    random_output: bool  # outputs random or uninitialized: never known
    value_free: bool  # the first argument's values do not matter
    written: tuple[tuple[int, str], ...]  # (position, name) of the arguments it writes
    is_view: bool = False  # its output aliases an input (view, detach, t): never cached


@functools.cache
def op_facts(func: Any) -> OpFacts:
    name = str(func)
    packet = name.split(".")[1] if name.count(".") >= 1 else name
    schema = getattr(func, "_schema", None)
    written = () if schema is None or not schema.is_mutable else tuple(
        (i, arg.name) for i, arg in enumerate(schema.arguments)
        if arg.alias_info is not None and arg.alias_info.is_write)
    return OpFacts(name, any(word in packet for word in _UNKNOWN_OUTPUT),
                   packet in _VALUE_FREE, written, bool(getattr(func, "is_view", False)))
