"""Compute probe: a tiled matmul ``c = a @ b`` (float32, float16, bfloat16 where supported).

The classic Triton tiling: each program owns a BLOCK_M x BLOCK_N tile of ``c``, walks K in
BLOCK_K steps and accumulates in float32; programs are ordered in groups of GROUP_M rows so
neighbouring programs reuse the same ``b`` columns from L2. Any strides are accepted.

On CUDA the block shapes are autotuned (``triton.autotune``); on the interpreter they are fixed
and large, because autotuning there would only multiply the (slow) interpreted runs.

float32 inputs use exact IEEE products by default, matching ``torch.matmul`` with TF32 off (its
default); ``input_precision="tf32"`` uses tensor cores the way torch does with TF32 allowed.
"""

from __future__ import annotations

import functools
from typing import Any, Literal

import torch

from ..errors import DeviceUnavailableError
from ._triton import is_interpreted, jit, tl, triton, validate_launch

MATMUL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
InputPrecision = Literal["ieee", "tf32"]

# Interpreted tiles: every tile is one numpy matmul, so big tiles mean few Python-level steps.
_INTERPRETED_BLOCKS = {"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 64, "GROUP_M": 8}


@jit
def _matmul_kernel(a_ptr, b_ptr, c_ptr, M, N, K,
                   stride_am, stride_ak, stride_bk, stride_bn, stride_cm, stride_cn,
                   BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                   GROUP_M: tl.constexpr, INPUT_PRECISION: tl.constexpr,
                   UPCAST_INPUTS: tl.constexpr):
    # Per program: reads BLOCK_M x K of a and K x BLOCK_N of b, writes BLOCK_M x BLOCK_N of c;
    # 2 x BLOCK_M x BLOCK_N x K FLOPs. Grouped ordering: GROUP_M row-tiles share column tiles.
    pid = tl.program_id(0)
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    num_pid_in_group = GROUP_M * num_pid_n
    group_id = pid // num_pid_in_group
    first_pid_m = group_id * GROUP_M
    group_size_m = min(num_pid_m - first_pid_m, GROUP_M)
    pid_m = first_pid_m + ((pid % num_pid_in_group) % group_size_m)
    pid_n = (pid % num_pid_in_group) // group_size_m

    rows = (pid_m * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)
    cols = (pid_n * BLOCK_N + tl.arange(0, BLOCK_N)).to(tl.int64)
    ks = tl.arange(0, BLOCK_K)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k_start in range(0, tl.cdiv(K, BLOCK_K)):
        k = k_start * BLOCK_K + ks
        a = tl.load(a_ptr + rows[:, None] * stride_am + k[None, :] * stride_ak,
                    mask=(rows[:, None] < M) & (k[None, :] < K), other=0.0)
        b = tl.load(b_ptr + k[:, None] * stride_bk + cols[None, :] * stride_bn,
                    mask=(k[:, None] < K) & (cols[None, :] < N), other=0.0)
        if UPCAST_INPUTS:
            # The interpreter keeps bf16 as raw uint16 bits and its tl.dot would multiply the
            # bit patterns; upcasting first gives the products a GPU computes (exact in fp32).
            a = a.to(tl.float32)
            b = b.to(tl.float32)
        acc = tl.dot(a, b, acc, input_precision=INPUT_PRECISION)
    c = acc.to(c_ptr.dtype.element_ty)
    tl.store(c_ptr + rows[:, None] * stride_cm + cols[None, :] * stride_cn, c,
             mask=(rows[:, None] < M) & (cols[None, :] < N))


def _cuda_configs() -> list[Any]:
    # The Triton tutorial's GEMM search space: a few shapes that suit both fp16 tensor cores and
    # fp32; autotune keys on the problem size, so a ceiling run tunes once per shape.
    shapes = [
        (128, 256, 64, 3, 8), (64, 256, 32, 4, 4), (128, 128, 32, 4, 4), (128, 64, 32, 4, 4),
        (64, 128, 32, 4, 4), (128, 32, 32, 4, 4), (64, 32, 32, 5, 2), (32, 64, 32, 5, 2),
        (128, 256, 32, 3, 8), (256, 128, 32, 3, 8), (256, 64, 32, 4, 4), (128, 128, 64, 3, 8),
    ]
    return [triton.Config({"BLOCK_M": m, "BLOCK_N": n, "BLOCK_K": k, "GROUP_M": 8},
                          num_stages=stages, num_warps=warps)
            for m, n, k, stages, warps in shapes]


@functools.cache
def _autotuned_kernel() -> Any:
    # Built on first CUDA launch only: the interpreter path never sees triton.autotune.
    return triton.autotune(configs=_cuda_configs(), key=["M", "N", "K"])(_matmul_kernel)


def _check_bf16_supported(device: torch.device) -> None:
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        name = torch.cuda.get_device_name(device)
        raise DeviceUnavailableError(f"matmul: {name} has no bfloat16 support (needs compute "
                                     "capability >= 8.0); use float16 or float32")


def launch_matmul(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor, *,
                  input_precision: InputPrecision = "ieee") -> None:
    """Write ``a @ b`` into ``out``; ``a`` is (M, K), ``b`` is (K, N), ``out`` is (M, N).

    All three share a dtype (float32, float16 or bfloat16) and a device; any strides. Accumulates
    in float32 and rounds once to the output dtype.
    FLOPs: 2·M·N·K. Bytes: at least (M·K + K·N + M·N) elements (tiles re-read from cache beyond).
    Raises ValueError for bad shapes, dtypes, devices (meta included) or input_precision;
    DeviceUnavailableError for bfloat16 on a GPU without it.
    """
    tensors = {"a": a, "b": b, "out": out}
    device = validate_launch("matmul", tensors)
    if a.dim() != 2 or b.dim() != 2 or out.dim() != 2:
        raise ValueError(f"matmul: a, b and out must be 2-D, got a {tuple(a.shape)}, "
                         f"b {tuple(b.shape)}, out {tuple(out.shape)}")
    (M, K), (K_b, N) = a.shape, b.shape
    if K != K_b or tuple(out.shape) != (M, N):
        raise ValueError(f"matmul: shapes do not chain: a {tuple(a.shape)} @ b {tuple(b.shape)} "
                         f"needs b with {K} rows and out of shape {(M, N)}, got out "
                         f"{tuple(out.shape)}")
    if not (a.dtype == b.dtype == out.dtype) or a.dtype not in MATMUL_DTYPES:
        raise ValueError(f"matmul: a, b and out must share one dtype from "
                         f"{[str(d) for d in MATMUL_DTYPES]}, got {a.dtype}, {b.dtype}, {out.dtype}")
    if input_precision not in ("ieee", "tf32"):
        raise ValueError(f"matmul: input_precision must be 'ieee' or 'tf32', got {input_precision!r}")
    if a.dtype == torch.bfloat16:
        _check_bf16_supported(device)
    if M == 0 or N == 0:
        return
    if K == 0:
        out.zero_()  # an empty sum; the kernel would store zeros too, but skip the launch
        return
    args = (a, b, out, M, N, K, a.stride(0), a.stride(1), b.stride(0), b.stride(1),
            out.stride(0), out.stride(1))
    # input_precision only means something for fp32 operands; others get Triton's default.
    precision = input_precision if a.dtype == torch.float32 else None
    if is_interpreted():
        blocks = _INTERPRETED_BLOCKS
        grid = (triton.cdiv(M, blocks["BLOCK_M"]) * triton.cdiv(N, blocks["BLOCK_N"]),)
        _matmul_kernel[grid](*args, **blocks, INPUT_PRECISION=precision,
                             UPCAST_INPUTS=a.dtype == torch.bfloat16)
        return

    def grid(meta: dict[str, Any]) -> tuple[int]:
        return (triton.cdiv(M, meta["BLOCK_M"]) * triton.cdiv(N, meta["BLOCK_N"]),)

    _autotuned_kernel()[grid](*args, INPUT_PRECISION=precision, UPCAST_INPUTS=False)


def tiled_matmul(a: torch.Tensor, b: torch.Tensor, *,
                 input_precision: InputPrecision = "ieee") -> torch.Tensor:
    """A new (M, N) tensor ``a @ b`` computed by the tiled Triton kernel.

    FLOPs: 2·M·N·K. Bytes: at least (M·K + K·N + M·N) elements.
    """
    if a.dim() != 2 or b.dim() != 2:
        raise ValueError(f"matmul: a and b must be 2-D, got {tuple(a.shape)} and {tuple(b.shape)}")
    out = torch.empty((a.shape[0], b.shape[1]), dtype=a.dtype, device=a.device)
    launch_matmul(a, b, out, input_precision=input_precision)
    return out
