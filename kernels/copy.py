"""Memory-bandwidth probes: a plain copy and the STREAM triad ``a = b + s·c``.

Both are one pass over flat, contiguous buffers, each program handling ``BLOCK_SIZE`` elements,
so the time they take is the time the memory system needs to move the bytes: that is what makes
them bandwidth ceilings. Offsets are int64 so buffers past 2**31 elements (tens of GB on a large
GPU) are addressed correctly.

Per op: private ``@triton.jit`` kernel -> ``launch_*`` (validates with ValueError, writes into
``out``) -> functional ``stream_copy`` / ``stream_triad`` (allocates the output).
"""

from __future__ import annotations

import torch

from ._triton import is_interpreted, jit, tl, triton, validate_block_size, validate_launch

# Compiled: 4096 elements over 8 warps is 16 per thread, i.e. 128-bit vector loads for fp32.
# Interpreted: each program is one numpy call, so fewer, larger blocks keep tests fast.
_COMPILED_BLOCK_SIZE = 4096
_COMPILED_NUM_WARPS = 8
_INTERPRETED_BLOCK_SIZE = 1 << 16

TRIAD_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


@jit
def _copy_kernel(src_ptr, dst_ptr, n_elements, BLOCK_SIZE: tl.constexpr):
    # Reads BLOCK_SIZE elements, writes BLOCK_SIZE elements (masked at the tail).
    pid = tl.program_id(0).to(tl.int64)
    offsets = pid * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
    mask = offsets < n_elements
    values = tl.load(src_ptr + offsets, mask=mask)
    tl.store(dst_ptr + offsets, values, mask=mask)


@jit
def _triad_kernel(out_ptr, b_ptr, c_ptr, scalar, n_elements, BLOCK_SIZE: tl.constexpr):
    # Reads 2 x BLOCK_SIZE elements, writes BLOCK_SIZE; 2 FLOPs per element. Computed in fp32
    # (the interpreter cannot do bf16 arithmetic, and on the GPU the cast is free next to memory).
    pid = tl.program_id(0).to(tl.int64)
    offsets = pid * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
    mask = offsets < n_elements
    b = tl.load(b_ptr + offsets, mask=mask).to(tl.float32)
    c = tl.load(c_ptr + offsets, mask=mask).to(tl.float32)
    a = b + scalar * c
    tl.store(out_ptr + offsets, a.to(out_ptr.dtype.element_ty), mask=mask)


def _default_block_size() -> int:
    return _INTERPRETED_BLOCK_SIZE if is_interpreted() else _COMPILED_BLOCK_SIZE


def _require_contiguous(op_name: str, tensors: dict[str, torch.Tensor]) -> None:
    for name, tensor in tensors.items():
        if not tensor.is_contiguous():
            raise ValueError(f"{op_name}: {name} must be contiguous (the kernel walks flat memory); "
                             f"call .contiguous() first (shape {tuple(tensor.shape)}, "
                             f"strides {tensor.stride()})")


def launch_copy(src: torch.Tensor, out: torch.Tensor, *, block_size: int | None = None) -> None:
    """Copy ``src`` into ``out`` (same shape and dtype, contiguous, one device).

    Bytes: reads ``src.nbytes``, writes ``out.nbytes``. FLOPs: 0.
    Raises ValueError for mismatched or unsupported tensors (including meta tensors).
    """
    tensors = {"src": src, "out": out}
    validate_launch("copy", tensors)
    if src.shape != out.shape or src.dtype != out.dtype:
        raise ValueError(f"copy: out must match src, got src {tuple(src.shape)} {src.dtype} and "
                         f"out {tuple(out.shape)} {out.dtype}")
    _require_contiguous("copy", tensors)
    block = _default_block_size() if block_size is None else block_size
    validate_block_size("copy", block)
    n = src.numel()
    if n == 0:
        return
    grid = (triton.cdiv(n, block),)
    if is_interpreted():
        _copy_kernel[grid](src, out, n, BLOCK_SIZE=block)
    else:
        _copy_kernel[grid](src, out, n, BLOCK_SIZE=block, num_warps=_COMPILED_NUM_WARPS)


def launch_triad(out: torch.Tensor, b: torch.Tensor, c: torch.Tensor, scalar: float, *,
                 block_size: int | None = None) -> None:
    """STREAM triad ``out = b + scalar * c`` for float32/float16/bfloat16 tensors of one shape.

    Bytes: reads ``b.nbytes + c.nbytes``, writes ``out.nbytes``. FLOPs: 2 per element.
    Raises ValueError for mismatched or unsupported tensors (including meta tensors).
    """
    tensors = {"out": out, "b": b, "c": c}
    validate_launch("triad", tensors)
    if not (b.shape == c.shape == out.shape) or not (b.dtype == c.dtype == out.dtype):
        raise ValueError("triad: out, b and c must share shape and dtype, got "
                         + ", ".join(f"{n} {tuple(t.shape)} {t.dtype}" for n, t in tensors.items()))
    if b.dtype not in TRIAD_DTYPES:
        raise ValueError(f"triad: dtype {b.dtype} is not supported; expected one of "
                         f"{[str(d) for d in TRIAD_DTYPES]}")
    if isinstance(scalar, bool) or not isinstance(scalar, (int, float)):
        raise ValueError(f"triad: scalar must be a Python number, got {scalar!r}")
    _require_contiguous("triad", tensors)
    block = _default_block_size() if block_size is None else block_size
    validate_block_size("triad", block)
    n = b.numel()
    if n == 0:
        return
    grid = (triton.cdiv(n, block),)
    if is_interpreted():
        _triad_kernel[grid](out, b, c, float(scalar), n, BLOCK_SIZE=block)
    else:
        _triad_kernel[grid](out, b, c, float(scalar), n, BLOCK_SIZE=block,
                            num_warps=_COMPILED_NUM_WARPS)


def stream_copy(src: torch.Tensor, *, block_size: int | None = None) -> torch.Tensor:
    """A new contiguous tensor equal to ``src``, written by the copy kernel.

    Bytes: reads ``src.nbytes``, writes ``src.nbytes``. FLOPs: 0.
    """
    out = torch.empty_like(src, memory_format=torch.contiguous_format)
    launch_copy(src, out, block_size=block_size)
    return out


def stream_triad(b: torch.Tensor, c: torch.Tensor, scalar: float, *,
                 block_size: int | None = None) -> torch.Tensor:
    """A new tensor ``b + scalar * c``, written by the triad kernel.

    Bytes: reads ``b.nbytes + c.nbytes``, writes ``b.nbytes``. FLOPs: 2 per element.
    """
    out = torch.empty_like(b, memory_format=torch.contiguous_format)
    launch_triad(out, b, c, scalar, block_size=block_size)
    return out
