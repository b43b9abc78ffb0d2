"""The batch sizes timed for the knee."""

from __future__ import annotations


def throughput_ladder(min_batch: int, max_batch: int, multiple_of: int = 1) -> list[int]:
    """Sizes timed for the knee: ``min_batch``, ``multiple_of * 2**k`` in range, and the max."""
    sizes = {min_batch, max_batch}
    b = multiple_of
    while b <= max_batch:
        if b >= min_batch:
            sizes.add(b)
        b *= 2
    return sorted(sizes)
