"""Plain-torch references for every kernel in this package.

Two jobs: the oracle the kernel tests compare against, and the CPU path that
``batchprof.ceilings(device="cpu")`` times (so CPU ceilings are real CPU numbers, not the Triton
interpreter's). Each function states the bytes it moves and the FLOPs it does, counted the way the
matching kernel counts them. No Triton here, ever.
"""

from __future__ import annotations

import torch

# The memory-touch pattern: element i of a buffer holds the low 32 bits of (i XOR seed), as int32.
# Unique per index, so a write that lands in the wrong place, an aliased page or stale data from a
# touch with another seed all show up as mismatches.
PATTERN_DTYPE = torch.int32
MAX_SEED = 2**31 - 1
_PATTERN_CHUNK_ELEMENTS = 1 << 24  # 64 MiB of int64 indices at a time: bounded extra memory


def copy_reference(src: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """``out = src``. Reads ``src.nbytes``, writes as many; 0 FLOPs."""
    if out is None:
        return src.clone(memory_format=torch.contiguous_format)
    return out.copy_(src)


def triad_reference(b: torch.Tensor, c: torch.Tensor, scalar: float,
                    out: torch.Tensor | None = None) -> torch.Tensor:
    """STREAM triad ``a = b + scalar * c``, one fused torch op.

    Reads ``b.nbytes + c.nbytes``, writes ``b.nbytes``; 2 FLOPs per element. Half-precision inputs
    are computed in float32 and rounded once, like the kernel.
    """
    if b.dtype in (torch.float16, torch.bfloat16):
        result = torch.add(b.float(), c.float(), alpha=scalar).to(b.dtype)
        return result if out is None else out.copy_(result)
    if out is None:
        return torch.add(b, c, alpha=scalar)
    return torch.add(b, c, alpha=scalar, out=out)


def matmul_reference(a: torch.Tensor, b: torch.Tensor,
                     out: torch.Tensor | None = None) -> torch.Tensor:
    """``a @ b`` with torch's own GEMM (fp32 accumulation on every backend we time).

    For ``a`` of shape (M, K) and ``b`` of (K, N): 2·M·N·K FLOPs; reads (M·K + K·N) elements and
    writes M·N at minimum (what a perfectly tiled kernel would move).
    """
    if out is None:
        return torch.matmul(a, b)
    return torch.matmul(a, b, out=out)


def pattern_reference(numel: int, seed: int, *, start: int = 0,
                      device: torch.device | str = "cpu") -> torch.Tensor:
    """The int32 pattern expected at elements ``start .. start+numel-1`` for ``seed``."""
    index = torch.arange(start, start + numel, dtype=torch.int64, device=device)
    # int64 -> int32 keeps the low 32 bits (two's complement), exactly what the kernel stores.
    return torch.bitwise_xor(index, seed).to(PATTERN_DTYPE)


def fill_pattern_reference(buf: torch.Tensor, seed: int) -> torch.Tensor:
    """Write the touch pattern into the int32 tensor ``buf`` (in place, flat order) and return it.

    Writes ``buf.nbytes``; reads nothing. Works in chunks so its scratch memory stays bounded.
    """
    flat = buf.view(-1)
    for start in range(0, flat.numel(), _PATTERN_CHUNK_ELEMENTS):
        chunk = flat[start:start + _PATTERN_CHUNK_ELEMENTS]
        chunk.copy_(pattern_reference(chunk.numel(), seed, start=start, device=buf.device))
    return buf


def count_pattern_mismatches_reference(buf: torch.Tensor, seed: int) -> int:
    """How many int32 elements of ``buf`` differ from the touch pattern for ``seed``.

    Reads ``buf.nbytes``; writes nothing of size.
    """
    flat = buf.view(-1)
    mismatches = 0
    for start in range(0, flat.numel(), _PATTERN_CHUNK_ELEMENTS):
        chunk = flat[start:start + _PATTERN_CHUNK_ELEMENTS]
        expected = pattern_reference(chunk.numel(), seed, start=start, device=buf.device)
        mismatches += int((chunk != expected).sum().item())
    return mismatches


def touch_reference(buf: torch.Tensor, seed: int) -> int:
    """Fill ``buf`` with the pattern, read it back, return the number of mismatching elements."""
    fill_pattern_reference(buf, seed)
    return count_pattern_mismatches_reference(buf, seed)
