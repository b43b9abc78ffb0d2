"""Allocator models on hand-made event sequences; every expected figure is derived by hand.

Notation: MiB = 1,048,576 B. CUDA rules (c10/cuda/CUDACachingAllocator.cpp, defaults):
round up to 512 B; <= 1 MiB -> small pool, 2 MiB segments; (1 MiB, 10 MiB) -> 20 MiB segments;
>= 10 MiB -> segment = size rounded up to 2 MiB; best fit by (size, address); split if the
remainder is >= 512 B (small pool) or > 1 MiB (large pool); frees coalesce; segments stay.
"""

from __future__ import annotations

import random

import pytest

from batchprof.errors import ConfigError
from batchprof.gpus import get_gpu
from batchprof.prediction.allocators import (
    AllocatorModel,
    CpuAllocatorModel,
    CudaCachingAllocatorModel,
    replay,
    round_size,
    segment_size,
)
from batchprof.prediction.events import ACTIVATION, PARAMETER, TEMPORARY, MemEvent
from batchprof.prediction.overheads import (
    DEFAULT_CUBLAS_WORKSPACE_BYTES,
    CudaOverheads,
    cublas_workspace_bytes,
    unmodelled_alloc_conf,
)

KiB = 1024
MiB = 1024 * 1024


def cuda() -> CudaCachingAllocatorModel:
    return CudaCachingAllocatorModel()


def state(m: CudaCachingAllocatorModel) -> tuple[int, int]:
    return m.allocated_bytes, m.reserved_bytes


# --- rounding, pools, segment sizes ---------------------------------------------------------

def test_rounding_and_segment_size_helpers():
    assert round_size(1) == 512
    assert round_size(512) == 512
    assert round_size(513) == 1024
    assert segment_size(MiB) == 2 * MiB  # exactly 1 MiB is still small
    assert segment_size(MiB + 512) == 20 * MiB
    assert segment_size(10 * MiB - 512) == 20 * MiB
    assert segment_size(10 * MiB) == 10 * MiB
    assert segment_size(11 * MiB + 512) == 12 * MiB


def test_one_byte_rounds_to_512_in_a_2mib_small_segment():
    m = cuda()
    m.malloc(1, 1)
    # 1 B -> 512 B block carved from a fresh 2 MiB small segment.
    assert state(m) == (512, 2 * MiB)
    assert m.segment_bytes == (2 * MiB,)


def test_exactly_1mib_is_small_pool_and_two_fit_one_segment():
    m = cuda()
    m.malloc(1, MiB)
    # small pool: 2 MiB segment, remainder 1 MiB >= 512 -> split.
    assert state(m) == (MiB, 2 * MiB)
    m.malloc(2, MiB)
    # best fit: the 1 MiB remainder, exactly -> no new segment.
    assert state(m) == (2 * MiB, 2 * MiB)
    m.malloc(3, MiB)
    # nothing cached -> second 2 MiB segment.
    assert state(m) == (3 * MiB, 4 * MiB)


def test_1mib_plus_1_goes_large_into_a_20mib_segment_not_shared_with_small():
    m = cuda()
    m.malloc(1, MiB + 1)
    # rounds to 1 MiB + 512 -> large pool -> 20 MiB segment; remainder 19 MiB - 512 > 1 MiB
    # -> split, so only the 1 MiB + 512 block is allocated.
    assert state(m) == (MiB + 512, 20 * MiB)
    m.malloc(2, 4 * KiB)
    # a small request never uses the large pool's free remainder: new 2 MiB small segment.
    assert state(m) == (MiB + 512 + 4 * KiB, 22 * MiB)


def test_10mib_gets_its_own_10mib_segment():
    m = cuda()
    m.malloc(1, 10 * MiB)
    # >= 10 MiB: segment = 10 MiB rounded up to 2 MiB = 10 MiB; remainder 0.
    assert state(m) == (10 * MiB, 10 * MiB)
    m.malloc(2, 10 * MiB - 512)
    # just under 10 MiB: a 20 MiB segment, remainder 10 MiB + 512 > 1 MiB -> split.
    assert state(m) == (20 * MiB - 512, 30 * MiB)


def test_11mib_plus_1_rounds_to_12mib_segment_and_keeps_the_unsplit_remainder():
    m = cuda()
    m.malloc(1, 11 * MiB + 1)
    # rounds to 11 MiB + 512; segment rounds up to 12 MiB; remainder 1 MiB - 512 is not
    # > 1 MiB -> no split, so the whole 12 MiB block is handed out and counted as allocated.
    assert state(m) == (12 * MiB, 12 * MiB)


# --- split rules -----------------------------------------------------------------------------

def test_small_pool_splits_a_remainder_of_exactly_512():
    m = cuda()
    m.malloc(1, MiB)  # segment 2 MiB: [1 MiB used][1 MiB free]
    m.malloc(2, MiB - 512)  # into the 1 MiB free block: remainder exactly 512 -> split
    assert state(m) == (2 * MiB - 512, 2 * MiB)
    m.malloc(3, 1)  # 512 B: fits the 512 B remainder exactly, no new segment
    assert state(m) == (2 * MiB, 2 * MiB)
    assert m.segment_bytes == (2 * MiB,)


def test_large_pool_does_not_split_a_remainder_of_exactly_1mib():
    m = cuda()
    m.malloc(1, 19 * MiB)
    # >= 10 MiB: segment 20 MiB; remainder exactly 1 MiB is not > 1 MiB -> no split:
    # allocated counts the whole 20 MiB block.
    assert state(m) == (20 * MiB, 20 * MiB)
    m.malloc(2, MiB + 512)
    # nothing cached -> new 20 MiB segment (split, remainder 19 MiB - 512).
    assert state(m) == (21 * MiB + 512, 40 * MiB)


def test_large_pool_splits_a_remainder_over_1mib():
    m = cuda()
    m.malloc(1, 19 * MiB - 512)
    # segment 20 MiB; remainder 1 MiB + 512 > 1 MiB -> split.
    assert state(m) == (19 * MiB - 512, 20 * MiB)
    m.malloc(2, MiB + 512)
    # large request that fits the cached 1 MiB + 512 remainder exactly.
    assert state(m) == (20 * MiB, 20 * MiB)


# --- reuse, best fit, coalescing ------------------------------------------------------------

def test_freed_block_is_reused_and_reserved_does_not_grow():
    m = cuda()
    m.malloc(1, 4 * MiB)  # 20 MiB segment: [4 used][16 free]
    m.free(1)  # coalesces back into one 20 MiB free block
    assert state(m) == (0, 20 * MiB)
    m.malloc(2, 4 * MiB)
    assert state(m) == (4 * MiB, 20 * MiB)
    assert m.peak_allocated_bytes == 4 * MiB
    assert m.peak_reserved_bytes == 20 * MiB


def test_reused_large_block_hands_out_unsplit_remainder():
    m = cuda()
    m.malloc(1, 12 * MiB)  # own 12 MiB segment
    m.free(1)
    m.malloc(2, 11 * MiB)
    # cached 12 MiB block fits; remainder 1 MiB is not > 1 MiB -> whole block: 12 MiB.
    assert state(m) == (12 * MiB, 12 * MiB)


def test_best_fit_takes_the_smallest_cached_block_that_fits():
    m = cuda()
    m.malloc(1, 12 * MiB)  # segment A: 12 MiB
    m.malloc(2, 16 * MiB)  # segment B: 16 MiB
    m.free(1)
    m.free(2)  # cached: 12 MiB and 16 MiB (separate segments, no merging)
    m.malloc(3, 10 * MiB)
    # best fit is the 12 MiB block (remainder 2 MiB > 1 MiB -> split), not the 16 MiB one.
    assert state(m) == (10 * MiB, 28 * MiB)
    m.malloc(4, 16 * MiB)
    # so the 16 MiB block is still there for this request; had the 10 MiB request taken it,
    # this one would have needed a third segment (reserved 44 MiB).
    assert state(m) == (26 * MiB, 28 * MiB)


def test_free_coalesces_with_both_neighbours():
    m = cuda()
    for sid in (1, 2, 3):
        m.malloc(sid, 2 * MiB)  # one 20 MiB segment: [a 2][b 2][c 2][14 free]
    assert state(m) == (6 * MiB, 20 * MiB)
    m.free(1)  # [2 free][b][c][14 free]
    m.free(3)  # [2 free][b][16 free]   (c merged with the tail)
    m.malloc(4, 17 * MiB)
    # largest cached block is 16 MiB: 17 MiB needs a new segment (18 MiB: 17 rounded to 2 MiB;
    # remainder 1 MiB not split -> 18 MiB allocated).
    assert state(m) == (2 * MiB + 18 * MiB, 38 * MiB)
    m.free(4)
    m.free(2)  # b merges with both neighbours -> one free 20 MiB block
    m.malloc(5, 19 * MiB)
    # fits the coalesced 20 MiB block (remainder 1 MiB, no split); no third segment.
    # (the 18 MiB segment's free block is smaller than 19 MiB)
    assert state(m) == (20 * MiB, 38 * MiB)


def test_many_small_allocations_span_several_2mib_segments():
    m = cuda()
    # 500 KiB = 512,000 B, a multiple of 512. A 2 MiB segment (2,097,152 B) holds 4 of them
    # (2,048,000 B) with 49,152 B left, too small for a 5th. 10 allocations -> 4 + 4 + 2
    # -> 3 segments.
    for sid in range(10):
        m.malloc(sid, 500 * KiB)
    assert state(m) == (5_120_000, 6 * MiB)
    assert m.segment_bytes == (2 * MiB,) * 3
    for sid in range(10):
        m.free(sid)
    # segments are never released during a step.
    assert state(m) == (0, 6 * MiB)
    assert m.peak_allocated_bytes == 5_120_000


def test_zero_byte_requests_count_nothing():
    m = cuda()
    m.malloc(1, 0)
    assert state(m) == (0, 0)
    assert m.segment_bytes == ()
    m.free(1)
    c = CpuAllocatorModel()
    c.malloc(1, 0)
    c.free(1)
    assert c.peak_allocated_bytes == 0


def test_peaks_are_high_water_marks_and_reset():
    m = cuda()
    m.malloc(1, 4 * MiB)
    m.free(1)
    m.malloc(2, MiB)
    assert m.peak_allocated_bytes == 4 * MiB
    m.reset_peak()
    assert m.peak_allocated_bytes == MiB
    assert m.peak_reserved_bytes == 22 * MiB  # 20 MiB large + 2 MiB small segment


def test_coalescing_invariant_on_a_random_sequence():
    # After every storage is freed, each segment must be exactly one cached block again, and
    # allocated never exceeds reserved along the way.
    rng = random.Random(1234)
    m = cuda()
    live: list[int] = []
    sizes = [1, 700, 64 * KiB, MiB, MiB + 1, 3 * MiB, 10 * MiB, 11 * MiB + 1, 40 * MiB]
    for sid in range(2000):
        if live and rng.random() < 0.45:
            m.free(live.pop(rng.randrange(len(live))))
        else:
            m.malloc(sid, rng.choice(sizes) + rng.randrange(0, 4096))
            live.append(sid)
        assert m.allocated_bytes <= m.reserved_bytes
    for sid in live:
        m.free(sid)
    assert m.allocated_bytes == 0
    assert m.reserved_bytes == sum(m.segment_bytes)
    cached = m._free_small + m._free_large
    assert sorted(size for size, _, _ in cached) == sorted(m.segment_bytes)


def test_model_errors():
    m = cuda()
    m.malloc(1, 10)
    with pytest.raises(ValueError, match="allocated twice"):
        m.malloc(1, 10)
    with pytest.raises(ValueError, match="not allocated"):
        m.free(99)
    with pytest.raises(ValueError, match=">= 0"):
        m.malloc(2, -1)
    with pytest.raises(ConfigError, match="expandable_segments"):
        CudaCachingAllocatorModel(expandable_segments=True)


# --- CPU model --------------------------------------------------------------------------------

def test_cpu_model_is_exact():
    c = CpuAllocatorModel()
    c.malloc(1, 100)
    c.malloc(2, 7)
    c.free(1)
    c.malloc(3, 50)
    # running sums: 100, 107, 7, 57 -> peak 107, now 57; no rounding, no caching.
    assert (c.allocated_bytes, c.reserved_bytes) == (57, 57)
    assert (c.peak_allocated_bytes, c.peak_reserved_bytes) == (107, 107)
    with pytest.raises(ValueError):
        c.free(1)


def test_both_models_satisfy_the_protocol():
    assert isinstance(CpuAllocatorModel(), AllocatorModel)
    assert isinstance(CudaCachingAllocatorModel(), AllocatorModel)


# --- replay -----------------------------------------------------------------------------------

def _events() -> list[MemEvent]:
    a = lambda sid, n, cat: MemEvent("alloc", sid, n, cat)  # noqa: E731
    f = lambda sid, n, cat: MemEvent("free", sid, n, cat)  # noqa: E731
    return [
        a(1, 3 * MiB, PARAMETER),  # resident before the measured step
        f(1, 3 * MiB, PARAMETER),  # (a warm-up temporary that shaped the cache)
        a(2, 2 * MiB, PARAMETER),
        # measured step starts here (index 3)
        a(3, 1000, ACTIVATION),
        a(4, 5 * MiB, TEMPORARY),
        f(4, 5 * MiB, TEMPORARY),
        f(3, 1000, ACTIVATION),
    ]


def test_replay_cpu_reports_peak_and_breakdown():
    r = replay(_events(), CpuAllocatorModel(), reset_peak_at=3)
    # resident 2 MiB; + 1000 + 5 MiB -> peak 7 MiB + 1000 at event 4.
    assert r.peak_allocated_bytes == 7 * MiB + 1000
    assert r.peak_reserved_bytes == 7 * MiB + 1000
    assert r.peak_event_index == 4
    assert dict(r.live_bytes_by_category_at_peak) == {
        PARAMETER: 2 * MiB, ACTIVATION: 1000, TEMPORARY: 5 * MiB}
    assert r.final_allocated_bytes == 2 * MiB


def test_replay_cuda_counts_rounded_blocks_and_keeps_warmup_segments():
    r = replay(_events(), CudaCachingAllocatorModel(), reset_peak_at=3)
    # warm-up: 3 MiB -> 20 MiB segment, freed (coalesced). 2 MiB reuses it (split, 18 free).
    # step: 1000 B -> 1024 B in a new 2 MiB small segment; 5 MiB -> cached 18 MiB block
    # (split). Peak allocated 2 MiB + 1024 + 5 MiB; reserved 22 MiB, all from before/at reset
    # except the small segment.
    assert r.peak_allocated_bytes == 7 * MiB + 1024
    assert r.peak_reserved_bytes == 22 * MiB
    assert dict(r.live_bytes_by_category_at_peak)[ACTIVATION] == 1024
    assert r.final_reserved_bytes == 22 * MiB


def test_replay_without_reset_counts_from_the_start_and_validates():
    r = replay(_events(), CpuAllocatorModel())
    assert r.peak_allocated_bytes == 7 * MiB + 1000  # 3 MiB warm-up was lower
    with pytest.raises(ValueError, match="reset_peak_at"):
        replay(_events(), CpuAllocatorModel(), reset_peak_at=99)
    with pytest.raises(ValueError, match="kind"):
        replay([MemEvent("realloc", 1, 1, TEMPORARY)], CpuAllocatorModel())  # type: ignore[arg-type]
    end = replay(_events(), CpuAllocatorModel(), reset_peak_at=len(_events()))
    assert end.peak_allocated_bytes == 2 * MiB and end.peak_event_index is None
    assert end.to_dict()["live_bytes_by_category_at_peak"] == {PARAMETER: 2 * MiB}


# --- CUDA overheads ---------------------------------------------------------------------------

def test_cublas_workspace_default_hopper_and_env():
    assert DEFAULT_CUBLAS_WORKSPACE_BYTES == 8_519_680  # 2 x 4 MiB + 8 x 16 KiB
    assert cublas_workspace_bytes((8, 0), env={}) == 8_519_680
    assert cublas_workspace_bytes((9, 0), env={}) == 32 * MiB
    assert cublas_workspace_bytes((8, 0), env={"CUBLAS_WORKSPACE_CONFIG": ":4096:8"}) == 32 * MiB
    assert cublas_workspace_bytes((9, 0), env={"CUBLAS_WORKSPACE_CONFIG": ":16:8"}) == 128 * KiB
    assert cublas_workspace_bytes((7, 5), env={"CUBLAS_WORKSPACE_CONFIG": ":4096:2:16:8"}) \
        == 8_519_680
    # unparseable: PyTorch warns and uses the default
    assert cublas_workspace_bytes((8, 0), env={"CUBLAS_WORKSPACE_CONFIG": "big"}) == 8_519_680


def test_cuda_overheads_for_gpu_and_workspaces_in_the_model():
    h100 = CudaOverheads.for_gpu(get_gpu("h100"), env={})
    assert h100.cublas_workspace_bytes == 32 * MiB
    assert h100.context_bytes == get_gpu("h100").context_overhead_bytes_estimate
    a100 = CudaOverheads.for_gpu(get_gpu("A100-40GB"), env={}, context_bytes=123)
    assert a100.workspace_allocations() == (8_519_680, 8_519_680)
    assert a100.usable_capacity_bytes(1000) == 877
    m = cuda()
    for sid, n in enumerate(a100.workspace_allocations()):
        m.malloc(sid, n)
    # 8,519,680 is a multiple of 512, in (1 MiB, 10 MiB): one 20 MiB segment, split
    # (remainder 12,451,840 > 1 MiB); the second fits that remainder (left 3,932,160, split).
    assert state(m) == (17_039_360, 20 * MiB)
    assert CudaOverheads(cublas_workspace_bytes=0).workspace_allocations() == ()
    with pytest.raises(ConfigError):
        CudaOverheads(context_bytes=-1)


def test_unmodelled_alloc_conf():
    assert unmodelled_alloc_conf({}) == []
    assert unmodelled_alloc_conf({"PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:False"}) == []
    found = unmodelled_alloc_conf(
        {"PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True,max_split_size_mb:128",
         "PYTORCH_ALLOC_CONF": "backend:cudaMallocAsync"})
    assert found == ["expandable_segments:True", "max_split_size_mb:128",
                     "backend:cudaMallocAsync"]
