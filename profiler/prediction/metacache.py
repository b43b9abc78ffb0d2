"""A cache of meta-kernel outputs keyed by input metadata: the trace's main speed-up.

Used by recorder.StorageRecorder; see ``MetaKernelCache``. Each trace owns its cache (nothing
outlives one trace: a failed trace cannot leave entries behind for the next one), and only
operators whose every tensor argument is on the meta device are cached: an operator that
touches a real tensor (an optimizer's step counter on the CPU, a value read by ``.item()``)
reads or writes data, so its result is not a function of metadata and is always run.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils._pytree import tree_flatten, tree_unflatten

from .opargs import storage_key

# A Parameter is a plain tensor to a kernel (layer norm's weight, an optimizer's in-place
# update): a third of a GPT-2 trace's uncached kernel time was ops that take one. Other
# subclasses (DTensor, FakeTensor, ...) dispatch on their own and are never cached.
_PLAIN_TENSORS = (torch.Tensor, torch.nn.Parameter)


class MetaKernelCache:
    """Outputs of meta kernels, remembered by their inputs' metadata.

    A meta kernel is a pure function of shapes, strides, dtypes and arguments, and many of
    PyTorch's are Python (torch._refs / _prims): the bulk of a trace's time. A transformer
    repeats the same operator on the same shapes once per layer, and an optimizer once per
    parameter of a shape, so after the first call an operator's outputs are rebuilt with
    ``empty_strided`` (fresh storages) or handed back as the input they alias (in-place ops
    return ``self``). Anything else (views, outputs sharing a storage, odd storage sizes) is
    never cached and always runs the kernel, and so is every operator with a non-meta
    tensor argument (see the module docstring).
    """

    _PLAIN = (int, float, bool, str, type(None), torch.dtype, torch.device, torch.layout,
              torch.memory_format, torch.Size)

    def __init__(self, max_entries: int = 16384):
        self.max_entries = max_entries
        self._entries: dict[Any, tuple[str, Any]] = {}

    def key(self, func: Any, sig: tuple, leaves: list[Any]) -> Any:
        """The cache key of a call: the operator, its arguments' structure (``sig``,
        opargs.flatten) and each leaf's metadata or value; None (never cached) when a tensor
        argument is not a plain meta tensor (real data matters, even a 0-d host scalar) or a
        leaf is of a kind the key cannot describe."""
        frozen: list[Any] = []
        plain = self._PLAIN
        for leaf in leaves:
            if isinstance(leaf, torch.Tensor):
                if not leaf.is_meta or type(leaf) not in _PLAIN_TENSORS:
                    return None
                frozen.append((leaf.shape, leaf.stride(), leaf.dtype))
            elif isinstance(leaf, plain):
                frozen.append((type(leaf), leaf))  # 1, 1.0 and True are equal but differ
            else:
                return None
        return (func, sig, tuple(frozen))

    def replay(self, key: Any, flat_inputs: list[Any]) -> Any:
        entry = self._entries.get(key) if key is not None else None
        if entry is None:
            return None
        kind, payload = entry
        if kind == "self":
            return flat_inputs[payload]
        leaves, spec = payload
        return tree_unflatten([torch.empty_strided(d[1], d[2], dtype=d[3], device="meta")
                               if isinstance(d, tuple) and d and d[0] == "T" else d
                               for d in leaves], spec)

    def store(self, key: Any, flat_inputs: list[Any], out: Any) -> None:
        if key is None or len(self._entries) >= self.max_entries:
            return
        if isinstance(out, torch.Tensor):
            for i, t in enumerate(flat_inputs):
                if t is out:
                    self._entries[key] = ("self", i)
                    return
        leaves, spec = tree_flatten(out)
        inputs = {storage_key(t) for t in flat_inputs if isinstance(t, torch.Tensor)}
        seen: set[int | None] = set()
        described: list[Any] = []
        for t in leaves:
            if not isinstance(t, torch.Tensor):
                if not isinstance(t, self._PLAIN) or isinstance(t, (int, float, bool)):
                    return  # a number out of an operator is a value: never replay it
                described.append(t)
                continue
            key_s = storage_key(t)
            if (t.device.type != "meta" or key_s is None or key_s in inputs or key_s in seen
                    or t.storage_offset() != 0 or type(t) is not torch.Tensor
                    or t.untyped_storage().nbytes() != _minimal_nbytes(t)):
                return
            seen.add(key_s)
            described.append(("T", tuple(t.shape), t.stride(), t.dtype))
        self._entries[key] = ("new", (described, spec))


def _minimal_nbytes(t: torch.Tensor) -> int:
    if t.numel() == 0:
        return 0
    return (1 + sum((size - 1) * stride for size, stride in zip(t.shape, t.stride(),
                                                                strict=True))) * t.element_size()

