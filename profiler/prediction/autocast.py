"""Autocast on the meta device: the casts ``torch.autocast`` would make, made explicitly.

Autocast is a dispatch key of a device (AutocastCPU, AutocastCUDA): it casts the inputs of
selected operators before they run. Meta tensors carry no such key, so a meta trace of a step
under ``torch.autocast("cpu", torch.bfloat16)`` runs every operator in fp32 and predicts the
fp32 model. ``MetaAutocast`` applies the same policy to meta tensors while autocast is on for
the target's device type (or on the CPU: ``emulated_autocast``, used by what-if), above
autograd as the real key is: it casts the arguments of each torch-function call, asked first
by the trace's one torch-function mode (``paths.PathCorrections``):

- operators on the lower-precision list (matmuls, linear, convolutions, SDPA, ...) get every
  fp32 floating tensor argument cast to the autocast dtype (``Tensor.to``, recorded by the trace
  like the real ``_to_copy``); casts of leaf tensors that require grad (the fp32 master weights)
  are cached until autocast ends, as ``at::autocast::cached_cast`` does, so each weight is
  copied once per forward and that copy is what backward keeps;
- operators on the fp32 list (losses; on CUDA also norms, softmax, exp/log ...) get
  lower-precision arguments cast to fp32.

The lists follow aten/src/ATen/autocast_mode.cpp for the Python entry points that reach those
operators (``F.linear`` -> aten::linear, ``Tensor.__matmul__`` -> aten::matmul, ...). Not
modelled: the "promote" list (cat/stack take the widest dtype; meta promotes the same way).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch.nn import functional as F
from torch.utils._pytree import tree_map

_LOWER_COMMON = (
    F.linear, torch.matmul, torch.Tensor.matmul, torch.Tensor.__matmul__,
    torch.Tensor.__rmatmul__, torch.mm, torch.Tensor.mm, torch.bmm, torch.Tensor.bmm,
    torch.baddbmm, torch.Tensor.baddbmm, torch.addmm, torch.Tensor.addmm, torch.addbmm,
    torch.Tensor.addbmm, F.conv1d, F.conv2d, F.conv3d, F.conv_transpose1d, F.conv_transpose2d,
    F.conv_transpose3d, F.prelu, F.scaled_dot_product_attention,
)
_LOWER_CUDA_ONLY = (torch.einsum, torch.addmv, torch.addr, torch.mv, torch.Tensor.mv,
                    torch.chain_matmul, torch.linalg.multi_dot)
_FP32_COMMON = (
    F.cross_entropy, F.nll_loss, F.mse_loss, F.l1_loss, F.smooth_l1_loss, F.huber_loss, F.kl_div,
    F.binary_cross_entropy, F.binary_cross_entropy_with_logits, F.poisson_nll_loss,
    F.cosine_embedding_loss, F.hinge_embedding_loss, F.margin_ranking_loss,
    F.soft_margin_loss, F.triplet_margin_loss, F.multi_margin_loss, F.multilabel_margin_loss,
    torch.prod, torch.cdist,
)
_FP32_CUDA_ONLY = (
    F.layer_norm, F.group_norm, F.softmax, F.log_softmax, F.softplus, F.cosine_similarity,
    torch.exp, torch.Tensor.exp, torch.log, torch.Tensor.log, torch.log1p, torch.expm1,
    torch.rsqrt, torch.Tensor.rsqrt, torch.reciprocal, torch.pow, torch.Tensor.pow,
    torch.cumsum, torch.Tensor.cumsum, torch.softmax, torch.Tensor.softmax,
    torch.log_softmax, torch.Tensor.log_softmax, torch.logsumexp,
)

@contextlib.contextmanager
def emulated_autocast(dtype: torch.dtype) -> Iterator[None]:
    """Autocast to ``dtype`` for meta tensors: ``torch.autocast`` refuses the meta device, so
    the CPU's autocast state carries the request (it never touches meta tensors) and
    ``MetaAutocast`` reads it. Being torch's own state, it is saved and restored by
    torch.utils.checkpoint around a recompute, as a real autocast region would be."""
    with torch.autocast("cpu", dtype=dtype):
        yield


def _floating(t: Any) -> bool:
    return isinstance(t, torch.Tensor) and t.device.type == "meta" and t.is_floating_point()


class MetaAutocast:
    """Applies autocast's casts to meta tensors while autocast is on (module docstring).

    Not a mode of its own: one torch-function mode per trace (``PathCorrections``) calls
    ``cast_args`` before anything else, as this would have done entered above it. Two stacked
    Python modes cost a fifth of a GPT-2 trace (measured: 0.80 s vs 0.64 s per trace)."""

    def __init__(self, target: str):
        self.device_type = "cuda" if target == "cuda" else "cpu"
        self._device_types = tuple(dict.fromkeys((self.device_type, "cpu")))
        cuda = self.device_type == "cuda"
        self._lower = frozenset(_LOWER_COMMON + (_LOWER_CUDA_ONLY if cuda else ()))
        self._fp32 = frozenset(_FP32_COMMON + (_FP32_CUDA_ONLY if cuda else ()))
        self._cache: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.casts = 0  # arguments cast (each cached weight once), for the trace's record

    def _dtype(self) -> torch.dtype | None:
        # The cuda target also follows CPU autocast: it carries emulated_autocast, and a
        # workload's autocast("cuda") is switched off by torch on a machine without CUDA.
        for device_type in self._device_types:
            if torch.is_autocast_enabled(device_type):
                return torch.get_autocast_dtype(device_type)
        return None

    def cast_args(self, func: Any, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        """``func``'s arguments as autocast would pass them (unchanged when autocast is off)."""
        if func not in self._lower and func not in self._fp32:
            # Most calls: nothing to cast. Only the weight-cast cache must go once autocast
            # has ended, so the autocast state is read only while that cache holds something.
            if self._cache and self._dtype() is None:
                self._cache.clear()  # autocast ended: clear_autocast_cache
            return args, kwargs
        dtype = self._dtype()
        if dtype is None:
            if self._cache:  # autocast ended: its weight-cast cache goes (clear_autocast_cache)
                self._cache.clear()
            return args, kwargs
        if func in self._lower:
            return tree_map(lambda t: self._cast(t, dtype), (args, kwargs))
        if func in self._fp32:
            return tree_map(lambda t: self._cast(t, torch.float32), (args, kwargs))
        return args, kwargs

    def _cast(self, t: Any, dtype: torch.dtype) -> Any:
        if not _floating(t) or t.dtype in (dtype, torch.float64):
            return t
        if dtype == torch.float32:  # fp32-list: only lower-precision inputs are cast
            self.casts += 1
            return t.to(dtype)
        if t.dtype != torch.float32:
            return t
        cacheable = t.is_leaf and t.requires_grad and not t._is_view() \
            and torch.is_autocast_cache_enabled()
        if cacheable:
            hit = self._cache.get(id(t))
            if hit is not None and hit[0] is t and hit[1].dtype == dtype:
                return hit[1]
        self.casts += 1
        cast = t.to(dtype)
        if cacheable:
            self._cache[id(t)] = (t, cast)
        return cast
