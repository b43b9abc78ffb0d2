"""Kernel-path corrections: make the meta trace take the path the target's kernels take.

A meta-device trace runs the same Python and the same composite (decomposed) operators as a real
run, but wherever ATen picks a kernel by *device*, meta takes the generic path. Each correction
below is a named, explicit substitution that routes one such call to the operator(s) the target
device would run, still on meta tensors, so the trace records the storages that device really
allocates. ``PathCorrections.fired`` counts which ones applied (reported with the prediction).

cpu target
  ``sdpa_cpu_flash``: ``scaled_dot_product_attention`` on the CPU runs
      ``_scaled_dot_product_flash_attention_for_cpu`` whenever its gates pass (no dropout, dense
      4-D inputs, ...): output + logsumexp (b, h, seq), no (seq x seq) weights. Meta always takes
      the math path. The CPU's own chooser (``aten._fused_sdp_choice``) is asked, on tiny CPU
      stand-ins with the same dtype, heads and head dim.
  ``lstm_cpu_mkldnn``: ``torch.lstm`` on float32 CPU tensors runs oneDNN's ``mkldnn_rnn_layer``
      per layer and direction (aten/src/ATen/native/mkldnn/RNN.cpp); meta takes the generic
      per-time-step decomposition (different storages, and thousands of ops). The substitute
      replays RNN.cpp's sequence. oneDNN's workspace is an output whose meta size is 0; its real
      size is learned by calibration (batchprof.prediction.calibrate).
cuda target
  ``sdpa_cuda_fused``: CUDA runs flash attention (fp16/bf16, compute capability >= 8.0, head
      dim <= 256, no mask) or memory-efficient attention (otherwise, incl. fp32): output +
      logsumexp (b, h, seq) fp32 + RNG state saved for backward, O(seq) instead of the math
      path's O(seq^2) attention weights and dropout mask. The choice mirrors PyTorch's gates
      (sdp_utils.cpp) in simplified form; ``torch.nn.attention.sdpa_kernel`` restrictions in
      user code are not seen.
  ``dropout_cuda_native``: ``dropout`` on CUDA is the fused ``native_dropout``, whose mask is
      bool (1 byte per element); meta (like the CPU) builds a float mask with ``bernoulli_``
      (4 bytes per element for float32).
  ``optimizer_foreach_cuda`` (see ``apply_optimizer_defaults``): an optimizer built with
      ``foreach=None`` runs its foreach implementation on CUDA (param-sized temporaries for all
      parameters at once inside ``step``) but the single-tensor one on meta and CPU; the trace
      pins ``foreach=True`` for the cuda target.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Callable
from typing import Any

import torch
from torch.nn import functional as F
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import _disable_current_modes

from .autocast import MetaAutocast

SDPA_MATH, SDPA_FLASH, SDPA_EFFICIENT = 0, 1, 2
_LSTM_MODE = 2  # ideep::rnn_kind::LSTM, the `mode` argument RNN.cpp passes to mkldnn_rnn_layer


def _is_meta(t: Any) -> bool:
    return isinstance(t, torch.Tensor) and t.device.type == "meta"


def _standin(t: torch.Tensor, seq_dims: tuple[int, ...]) -> torch.Tensor:
    """A tiny contiguous CPU tensor shaped like ``t``: batch -> 1, sequence dims -> <= 8."""
    shape = list(t.shape)
    if len(shape) >= 3:
        shape[0] = 1
    for d in seq_dims:
        shape[d] = min(shape[d], 8)
    out = torch.empty(shape, dtype=t.dtype)
    return out.requires_grad_(t.requires_grad) if out.is_floating_point() else out


def cpu_sdpa_backend(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                     attn_mask: torch.Tensor | None, dropout_p: float, is_causal: bool,
                     scale: float | None, enable_gqa: bool) -> int:
    """What the CPU's own chooser picks for these (meta) inputs, asked on tiny stand-ins."""
    if any(t.stride(-1) != 1 for t in (query, key, value)):
        return SDPA_MATH  # the flash gate needs unit last-dim stride
    # Outside any dispatch mode: the stand-ins are not part of the traced step.
    with _disable_current_modes():
        q, k, v = (_standin(t, (-2,)) for t in (query, key, value))
        mask = None
        if attn_mask is not None:
            shape = list(attn_mask.shape)
            if len(shape) == 4:
                shape[0] = 1
            for d in range(max(0, len(shape) - 2), len(shape)):
                shape[d] = min(shape[d], 8)
            mask = torch.zeros(shape, dtype=attn_mask.dtype)
        return int(torch.ops.aten._fused_sdp_choice(q, k, v, mask, dropout_p, is_causal,
                                                    scale=scale, enable_gqa=enable_gqa))


def cuda_sdpa_backend(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                      attn_mask: torch.Tensor | None, enable_gqa: bool,
                      compute_capability: tuple[int, int]) -> int:
    """PyTorch's CUDA gates (sdp_utils.cpp), simplified to what decides memory: dtype, head
    dim, mask, architecture. Flash: fp16/bf16, sm80+, head dim <= 256 and a multiple of 8, no
    mask. Memory-efficient: fp32/fp16/bf16, sm50+, head dim a multiple of 8 (4 for fp32)."""
    if enable_gqa or any(t.dim() != 4 or t.stride(-1) != 1 for t in (query, key, value)):
        return SDPA_MATH
    head_dim = query.shape[-1]
    if value.shape[-1] != head_dim or key.shape[-1] != head_dim:
        return SDPA_MATH
    half = query.dtype in (torch.float16, torch.bfloat16)
    if (half and attn_mask is None and compute_capability >= (8, 0) and head_dim <= 256
            and head_dim % 8 == 0):
        return SDPA_FLASH
    if query.dtype in (torch.float32, torch.float16, torch.bfloat16) \
            and compute_capability >= (5, 0) and head_dim % (4 if not half else 8) == 0:
        return SDPA_EFFICIENT
    return SDPA_MATH


def _sdpa_args(args: tuple, kwargs: dict) -> dict[str, Any]:
    names = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa")
    bound: dict[str, Any] = {"attn_mask": None, "dropout_p": 0.0, "is_causal": False,
                             "scale": None, "enable_gqa": False}
    bound.update(zip(names, args, strict=False))
    bound.update(kwargs)
    return bound


def _mkldnn_lstm(input: torch.Tensor, hx: tuple[torch.Tensor, torch.Tensor],
                 params: list[torch.Tensor], has_biases: bool, num_layers: int,
                 dropout: float, train: bool, bidirectional: bool, batch_first: bool):
    """aten/src/ATen/native/mkldnn/RNN.cpp ``mkldnn_rnn``, op for op, on meta tensors."""
    h0, c0 = hx
    x = (input.transpose(0, 1) if batch_first else input).contiguous()
    h0, c0 = h0.contiguous(), c0.contiguous()
    directions = 2 if bidirectional else 1
    stride = 4 if has_biases else 2
    hidden_size = c0.size(2)
    layer_input = x
    hys: list[torch.Tensor] = []
    cys: list[torch.Tensor] = []
    for layer in range(num_layers):
        outputs = []
        for direction in range(directions):
            index = layer * directions + direction
            w = params[index * stride:(index + 1) * stride]
            b_ih, b_hh = (w[2], w[3]) if has_biases else (
                torch.zeros(w[0].size(0), device=x.device, dtype=x.dtype),
                torch.zeros(w[1].size(0), device=x.device, dtype=x.dtype))
            out, hy, cy, _workspace = torch.ops.aten.mkldnn_rnn_layer(
                layer_input, w[0], w[1], b_ih, b_hh, h0[index], c0[index], direction > 0, [],
                _LSTM_MODE, hidden_size, num_layers, has_biases, bidirectional, batch_first,
                train)
            outputs.append(out)
            hys.append(hy)
            cys.append(cy)
        layer_input = outputs[0] if directions == 1 else torch.cat(outputs, -1)
        if dropout != 0 and train and layer < num_layers - 1:
            layer_input = torch.dropout(layer_input, dropout, True)
    output = layer_input.transpose(0, 1) if batch_first else layer_input
    return output, torch.stack(hys, 0), torch.stack(cys, 0)


class PathCorrections(TorchFunctionMode):
    """While active, routes device-dependent calls on meta tensors to the target's path."""

    def __init__(self, target: str, *, compute_capability: tuple[int, int] = (8, 0),
                 autocast: MetaAutocast | None = None):
        super().__init__()
        self.autocast = autocast  # autocast.MetaAutocast: its casts come before any path
        if target not in ("cpu", "cuda"):
            raise ValueError(f"target must be 'cpu' or 'cuda', got {target!r}")
        self.target = target
        self.compute_capability = compute_capability
        self.fired: collections.Counter[str] = collections.Counter()
        handlers: dict[Any, tuple[str, Callable[..., Any]]] = {}
        if target == "cpu":
            handlers[F.scaled_dot_product_attention] = ("sdpa_cpu_flash", self._sdpa_cpu)
            handlers[torch.lstm] = ("lstm_cpu_mkldnn", self._lstm_cpu)
        else:
            handlers[F.scaled_dot_product_attention] = ("sdpa_cuda_fused", self._sdpa_cuda)
            handlers[F.dropout] = ("dropout_cuda_native", self._dropout_cuda)
            handlers[torch.dropout] = ("dropout_cuda_native", self._dropout_cuda)
        self._handlers = handlers

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.autocast is not None:
            args, kwargs = self.autocast.cast_args(func, args, kwargs)
        entry = self._handlers.get(func)
        if entry is not None:
            name, handler = entry
            result = handler(args, kwargs)
            if result is not NotImplemented:
                self.fired[name] += 1
                return result
        return func(*args, **kwargs)

    # --- cpu -----------------------------------------------------------------------------

    def _sdpa_cpu(self, args: tuple, kwargs: dict) -> Any:
        a = _sdpa_args(args, kwargs)
        q, k, v, mask = a["query"], a["key"], a["value"], a["attn_mask"]
        if not all(_is_meta(t) for t in (q, k, v)):
            return NotImplemented
        # The CPU flash kernel takes grouped-query attention (fewer k/v heads) natively.
        choice = cpu_sdpa_backend(q, k, v, mask, a["dropout_p"], a["is_causal"], a["scale"],
                                  a["enable_gqa"])
        if choice != SDPA_FLASH:
            return NotImplemented  # math on the CPU too: meta already takes it
        return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
            q, k, v, a["dropout_p"], a["is_causal"], attn_mask=mask, scale=a["scale"])[0]

    def _lstm_cpu(self, args: tuple, kwargs: dict) -> Any:
        if kwargs or len(args) != 9 or not isinstance(args[1], (tuple, list)):
            return NotImplemented  # packed sequences take the generic path on the CPU too
        input, hx = args[0], args[1]
        if not _is_meta(input) or input.dtype != torch.float32 or input.numel() == 0:
            return NotImplemented
        if not (torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled):
            return NotImplemented
        if len(hx) != 2 or hx[0].size(2) != hx[1].size(2):
            return NotImplemented  # proj_size: not oneDNN's path
        return _mkldnn_lstm(*args)

    # --- cuda ----------------------------------------------------------------------------

    def _sdpa_cuda(self, args: tuple, kwargs: dict) -> Any:
        a = _sdpa_args(args, kwargs)
        q, k, v, mask = a["query"], a["key"], a["value"], a["attn_mask"]
        if not all(_is_meta(t) for t in (q, k, v)):
            return NotImplemented
        choice = cuda_sdpa_backend(q, k, v, mask, a["enable_gqa"], self.compute_capability)
        if choice == SDPA_FLASH:
            return torch.ops.aten._scaled_dot_product_flash_attention(
                q, k, v, a["dropout_p"], a["is_causal"], False, scale=a["scale"])[0]
        if choice == SDPA_EFFICIENT:
            needs_lse = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))
            return torch.ops.aten._scaled_dot_product_efficient_attention(
                q, k, v, mask, needs_lse, a["dropout_p"], a["is_causal"], scale=a["scale"])[0]
        return NotImplemented

    def _dropout_cuda(self, args: tuple, kwargs: dict) -> Any:
        """F.dropout(input, p=0.5, training=True, inplace=False) and torch.dropout(input, p,
        train): the out-of-place training call with 0 < p < 1 is native_dropout on CUDA."""
        a: dict[str, Any] = {"p": 0.5, "training": True, "inplace": False}
        a.update(zip(("input", "p", "training", "inplace"), args, strict=False))
        a.update(kwargs)
        training = a.pop("train", a["training"])
        x, p = a["input"], float(a["p"])
        if not _is_meta(x) or a["inplace"] or not training or not 0 < p < 1 \
                or x.numel() == 0 or not x.is_floating_point():
            return NotImplemented
        return torch.native_dropout(x, p, True)[0]


def _distinct_bias_grads(out: tuple) -> tuple:
    """Meta's mkldnn_rnn_layer_backward returns one tensor as both bias gradients; oneDNN's
    returns two storages (and autograd then accumulates each without a copy)."""
    grads = list(out)
    if grads[3] is grads[4]:
        grads[4] = torch.empty_like(grads[3])
    return tuple(grads)


# Operator -> (correction name, fix of the meta kernel's outputs). Applied by the trace's
# recorder to what a meta kernel returned, so the storages match the CPU kernel's.
META_OUTPUT_FIXES: dict[Any, tuple[str, Callable[[Any], Any]]] = {
    torch.ops.aten.mkldnn_rnn_layer_backward.default: ("lstm_cpu_mkldnn_backward",
                                                        _distinct_bias_grads),
}


def apply_optimizer_defaults(optimizer: torch.optim.Optimizer, target: str) -> list[str]:
    """``optimizer_foreach_cuda``: pin foreach=True where CUDA would default to it.

    Mirrors torch.optim.optimizer._default_to_fused_or_foreach for plain CUDA tensors: a group
    with ``foreach`` None, not ``fused`` and not ``differentiable`` runs foreach on CUDA.
    Returns the names of the corrections applied (empty when none).
    """
    if target != "cuda":
        return []
    changed = False
    for group in optimizer.param_groups:
        if "foreach" in group and group["foreach"] is None and not group.get("fused") \
                and not group.get("differentiable"):
            group["foreach"] = True
            changed = True
    return ["optimizer_foreach_cuda"] if changed else []


def sdpa_math_saved_bytes(batch: int, heads: int, seq_q: int, seq_k: int, itemsize: int,
                          dropout: bool) -> int:
    """Bytes the math path keeps for backward per attention call beyond q/k/v/output: the
    softmax weights, plus the dropout mask and the dropped weights when dropout is on.
    Used in tests and docs to size what the fused CUDA paths save instead."""
    weights = batch * heads * seq_q * seq_k * itemsize
    return weights * (3 if dropout else 1)


def sdpa_fused_saved_bytes(batch: int, heads: int, seq_q: int, backend: int) -> int:
    """Logsumexp bytes the fused CUDA paths save: fp32 (b, h, seq), padded to a multiple of 32
    rows by memory-efficient attention."""
    rows = seq_q if backend == SDPA_FLASH else math.ceil(seq_q / 32) * 32
    return batch * heads * rows * 4
