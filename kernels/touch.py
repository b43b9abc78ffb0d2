"""Memory touch: fill a buffer with a known pattern, read it back, count what came back wrong.

Memory a device reports as free is not proven usable until something has written and re-read
it: a search should not trust a capacity that a touch cannot fill. The pattern (element i holds
the low 32 bits of ``i XOR seed``, see ``reference.pattern_reference``) is unique per element,
so misplaced writes, aliased pages and stale data from an earlier touch all count as mismatches.

Two kernels, so that verification really re-reads memory rather than registers: ``fill`` writes
the pattern; ``count`` reads it back and writes one mismatch count per program, summed on the host
(deterministic, no atomics). Offsets are int64: buffers past 8 GiB are addressed correctly.
"""

from __future__ import annotations

import torch

from ._triton import is_interpreted, jit, tl, triton, validate_block_size, validate_launch
from .reference import MAX_SEED, PATTERN_DTYPE

_COMPILED_BLOCK_SIZE = 4096
_COMPILED_NUM_WARPS = 8
_INTERPRETED_BLOCK_SIZE = 1 << 16


@jit
def _fill_pattern_kernel(buf_ptr, n_elements, seed, BLOCK_SIZE: tl.constexpr):
    # Writes BLOCK_SIZE int32 elements; reads nothing.
    pid = tl.program_id(0).to(tl.int64)
    offsets = pid * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
    mask = offsets < n_elements
    tl.store(buf_ptr + offsets, (offsets ^ seed).to(tl.int32), mask=mask)


@jit
def _count_mismatches_kernel(buf_ptr, partial_ptr, n_elements, seed, BLOCK_SIZE: tl.constexpr):
    # Reads BLOCK_SIZE int32 elements; writes one int32 count for this program.
    pid = tl.program_id(0).to(tl.int64)
    offsets = pid * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
    mask = offsets < n_elements
    expected = (offsets ^ seed).to(tl.int32)
    found = tl.load(buf_ptr + offsets, mask=mask, other=0)
    wrong = ((found != expected) & mask).to(tl.int32)
    tl.store(partial_ptr + pid, tl.sum(wrong, axis=0))


def _validate(op_name: str, buf: torch.Tensor, seed: int, block_size: int | None) -> int:
    validate_launch(op_name, {"buf": buf})
    if buf.dtype != PATTERN_DTYPE:
        raise ValueError(f"{op_name}: buf must be {PATTERN_DTYPE}, got {buf.dtype}; "
                         "touch_buffer() views other dtypes as int32 for you")
    if not buf.is_contiguous():
        raise ValueError(f"{op_name}: buf must be contiguous (the pattern is over flat memory)")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise ValueError(f"{op_name}: seed must be an int in [0, {MAX_SEED}], got {seed!r}")
    block = (_INTERPRETED_BLOCK_SIZE if is_interpreted() else _COMPILED_BLOCK_SIZE) \
        if block_size is None else block_size
    validate_block_size(op_name, block)
    return block


def _launch_options() -> dict[str, int]:
    return {} if is_interpreted() else {"num_warps": _COMPILED_NUM_WARPS}


def launch_fill_pattern(buf: torch.Tensor, seed: int, *, block_size: int | None = None) -> None:
    """Write the touch pattern for ``seed`` into the contiguous int32 tensor ``buf``.

    Bytes: writes ``buf.nbytes``, reads nothing. FLOPs: 0 (one integer XOR per element).
    Raises ValueError for a non-int32, non-contiguous, meta or wrong-device ``buf`` or a bad seed.
    """
    block = _validate("fill_pattern", buf, seed, block_size)
    n = buf.numel()
    if n == 0:
        return
    _fill_pattern_kernel[(triton.cdiv(n, block),)](buf, n, seed, BLOCK_SIZE=block,
                                                    **_launch_options())


def launch_count_pattern_mismatches(buf: torch.Tensor, seed: int, *,
                                    block_size: int | None = None) -> torch.Tensor:
    """Count elements of ``buf`` that differ from the pattern; a 0-dim int64 tensor on buf's device.

    Bytes: reads ``buf.nbytes``, writes 4 bytes per ``block_size`` elements. FLOPs: 0.
    Raises ValueError as ``launch_fill_pattern`` does.
    """
    block = _validate("count_pattern_mismatches", buf, seed, block_size)
    n = buf.numel()
    if n == 0:
        return torch.zeros((), dtype=torch.int64, device=buf.device)
    programs = triton.cdiv(n, block)
    partial = torch.empty(programs, dtype=torch.int32, device=buf.device)
    _count_mismatches_kernel[(programs,)](buf, partial, n, seed, BLOCK_SIZE=block,
                                          **_launch_options())
    return partial.sum(dtype=torch.int64)


def _as_pattern_buffer(buf: torch.Tensor) -> torch.Tensor:
    if buf.dtype == PATTERN_DTYPE:
        return buf
    if not buf.is_contiguous() or buf.nbytes % 4:
        raise ValueError(f"touch: a {buf.dtype} buffer can be touched only when contiguous and "
                         f"a whole number of 4-byte words, got {buf.nbytes} bytes")
    return buf.view(-1).view(PATTERN_DTYPE)


def touch_buffer(buf: torch.Tensor, seed: int = 0x5EED, *, block_size: int | None = None) -> int:
    """Fill ``buf`` (any dtype, viewed as int32 words) with the pattern, re-read it, and return
    the number of 4-byte words that came back wrong (0 means the memory is usable).

    Bytes: writes ``buf.nbytes`` then reads ``buf.nbytes``. FLOPs: 0. Overwrites ``buf``.
    """
    words = _as_pattern_buffer(buf)
    launch_fill_pattern(words, seed, block_size=block_size)
    return int(launch_count_pattern_mismatches(words, seed, block_size=block_size).item())


def touch_memory(nbytes: int, device: torch.device | str = "cuda", seed: int = 0x5EED) -> int:
    """Allocate ``nbytes`` (rounded up to 4-byte words) on ``device``, touch them, free them.

    Returns the mismatch count. An allocation that does not fit raises ``torch.OutOfMemoryError``
    (data for the caller, not an error of ours); nothing stays allocated afterwards.
    """
    if isinstance(nbytes, bool) or not isinstance(nbytes, int) or nbytes < 0:
        raise ValueError(f"touch_memory: nbytes must be a non-negative int, got {nbytes!r}")
    return touch_buffer(torch.empty((nbytes + 3) // 4, dtype=PATTERN_DTYPE, device=device), seed)
