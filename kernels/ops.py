"""The kernels as PyTorch custom ops, ``torch.ops.batchprof.*``, each with a fake implementation.

A model that calls ``torch.ops.batchprof.triad(b, c, 2.0)`` (rather than launching a Triton
kernel itself) can be traced on the meta device and under FakeTensorMode: the fake functions
below give the output's shape, dtype and device without touching memory or computing anything.
On real tensors each op runs its Triton launcher (interpreted on the CPU, compiled on CUDA).

``custom_op`` rather than ``triton_op``: the real path must also work where Triton only runs
interpreted, and the meta path must not depend on Triton at all. So this module imports neither
Triton nor the kernel modules until an op actually runs (``import batchprof.kernels`` stays
light), and then by module path: the ops are named like the kernel modules, so
``from . import copy`` would be ambiguous.

Ops: copy(src) -> Tensor; triad(b, c, scalar) -> Tensor; matmul(a, b) -> Tensor (these three
are differentiable); fill_pattern(buf!, seed) -> None; count_pattern_mismatches(buf, seed) ->
0-dim int64 Tensor. ``register_flop_formulas()`` makes ``torch.utils.flop_counter`` count the
matmul (``batchprof.roofline.costs.step_costs`` calls it; not on import, see there).
"""

from __future__ import annotations

import importlib
from typing import Any

import torch
from torch.library import custom_op

NAMESPACE = "batchprof"


@custom_op(f"{NAMESPACE}::copy", mutates_args=())
def copy(src: torch.Tensor) -> torch.Tensor:
    """A contiguous copy of ``src``. Bytes: reads and writes ``src.nbytes``. FLOPs: 0."""
    kernels = importlib.import_module(f"{__package__}.copy")
    return kernels.stream_copy(src)


@copy.register_fake
def _copy_fake(src: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(src, memory_format=torch.contiguous_format)


def _copy_backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
    return grad


copy.register_autograd(_copy_backward)


@custom_op(f"{NAMESPACE}::triad", mutates_args=())
def triad(b: torch.Tensor, c: torch.Tensor, scalar: float) -> torch.Tensor:
    """STREAM triad ``b + scalar * c``. Bytes: reads 2, writes 1 ``b.nbytes``. FLOPs: 2/element."""
    kernels = importlib.import_module(f"{__package__}.copy")
    return kernels.stream_triad(b, c, scalar)


@triad.register_fake
def _triad_fake(b: torch.Tensor, c: torch.Tensor, scalar: float) -> torch.Tensor:
    if b.shape != c.shape or b.dtype != c.dtype:
        raise ValueError(f"triad: b and c must share shape and dtype, got {tuple(b.shape)} "
                         f"{b.dtype} and {tuple(c.shape)} {c.dtype}")
    return torch.empty_like(b, memory_format=torch.contiguous_format)


def _triad_setup(ctx: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
    ctx.scalar = inputs[2]


def _triad_backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:
    return grad, grad * ctx.scalar, None


triad.register_autograd(_triad_backward, setup_context=_triad_setup)


@custom_op(f"{NAMESPACE}::matmul", mutates_args=())
def matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` for 2-D float32/float16/bfloat16. FLOPs: 2·M·N·K; bytes >= (MK + KN + MN) elems."""
    kernels = importlib.import_module(f"{__package__}.matmul")
    return kernels.tiled_matmul(a, b)


@matmul.register_fake
def _matmul_fake(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    if a.dim() != 2 or b.dim() != 2 or a.shape[1] != b.shape[0] or a.dtype != b.dtype:
        raise ValueError(f"matmul: expected (M, K) @ (K, N) of one dtype, got {tuple(a.shape)} "
                         f"{a.dtype} @ {tuple(b.shape)} {b.dtype}")
    return a.new_empty((a.shape[0], b.shape[1]))


def _matmul_setup(ctx: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
    ctx.save_for_backward(*inputs)


def _matmul_backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
    # Backward runs the same kernel, so it traces on meta and counts on the device too.
    a, b = ctx.saved_tensors
    grad_a = matmul(grad, b.t()) if ctx.needs_input_grad[0] else None
    grad_b = matmul(a.t(), grad) if ctx.needs_input_grad[1] else None
    return grad_a, grad_b


matmul.register_autograd(_matmul_backward, setup_context=_matmul_setup)


@custom_op(f"{NAMESPACE}::fill_pattern", mutates_args=("buf",))
def fill_pattern(buf: torch.Tensor, seed: int) -> None:
    """Write the memory-touch pattern into int32 ``buf``. Bytes: writes ``buf.nbytes``."""
    kernels = importlib.import_module(f"{__package__}.touch")
    kernels.launch_fill_pattern(buf, seed)


@fill_pattern.register_fake
def _fill_pattern_fake(buf: torch.Tensor, seed: int) -> None:
    return None


@custom_op(f"{NAMESPACE}::count_pattern_mismatches", mutates_args=())
def count_pattern_mismatches(buf: torch.Tensor, seed: int) -> torch.Tensor:
    """0-dim int64 count of ``buf``'s elements that differ from the pattern. Reads ``buf.nbytes``."""
    kernels = importlib.import_module(f"{__package__}.touch")
    return kernels.launch_count_pattern_mismatches(buf, seed)


@count_pattern_mismatches.register_fake
def _count_pattern_mismatches_fake(buf: torch.Tensor, seed: int) -> torch.Tensor:
    return buf.new_empty((), dtype=torch.int64)


def register_flop_formulas() -> None:
    """Teach ``torch.utils.flop_counter`` that ``batchprof::matmul`` costs 2·M·N·K FLOPs.

    Without this, FlopCounterMode counts a model's custom matmul as 0 FLOPs. Not done on import
    because ``torch.utils.flop_counter`` imports Triton, and ``import batchprof.kernels`` must
    not; ``batchprof.roofline.costs.step_costs`` (the roofline's FLOP count) calls it first.
    Idempotent. Only the matmul is registered: flop_counter counts matmul-like ops only, so an
    elementwise triad stays out too.
    """
    from torch.utils.flop_counter import flop_registry, register_flop_formula

    target = torch.ops.batchprof.matmul
    if target in flop_registry:
        return

    @register_flop_formula(target)
    def _matmul_flops(a_shape: Any, b_shape: Any, *args: Any, out_shape: Any = None,
                      **kwargs: Any) -> int:
        (m, k), (_, n) = a_shape, b_shape
        return 2 * m * n * k
