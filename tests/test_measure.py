"""measure() on the real CPU backend: the numbers DESIGN.md defines, budgets, cleanup."""

from __future__ import annotations

import pytest
import torch

import batchprof
from batchprof.backends.fake import FakeBackend
from batchprof.errors import BudgetError, ConfigError, StepError
from batchprof.probe import TimingPolicy
from batchprof.workloads import BUILTINS

from .helpers import independent_peak, live_tensor_bytes, malloc_in_use_bytes, tiny_workload

ONE_STEP = TimingPolicy(timed_steps=1, max_timed_steps=1)


@pytest.mark.parametrize("name", sorted(BUILTINS))
def test_peak_matches_independent_allocator_reading(name):
    workload = batchprof.load_workload(name)
    for batch_size in (2, 5, 12):
        m = batchprof.measure(workload, batch_size, timing=ONE_STEP)
        reference = independent_peak(workload, batch_size)
        assert m.feasible
        assert m.peak_allocated_bytes == pytest.approx(reference, rel=0.01), (name, batch_size)
        assert m.peak_reserved_bytes == m.peak_allocated_bytes  # no caching on the CPU
        assert m.resident_bytes < m.peak_allocated_bytes


@pytest.mark.parametrize("name", sorted(BUILTINS))
def test_activation_bytes_grow_affinely(name):
    sizes = (2, 4, 6, 8)
    acts = [batchprof.measure(name, b, timing=ONE_STEP).activation_bytes for b in sizes]
    slope = (acts[-1] - acts[0]) / (sizes[-1] - sizes[0])
    assert slope > 0
    for b, a in zip(sizes, acts, strict=True):
        predicted = acts[0] + slope * (b - sizes[0])
        assert a == pytest.approx(predicted, rel=0.02), (name, sizes, acts)


def test_measurement_statistics_and_roundtrip():
    m = batchprof.measure(tiny_workload(), 8, timing=TimingPolicy(timed_steps=5))
    assert m.feasible and m.reason is None
    assert len(m.step_times_s) >= 5 and all(t > 0 for t in m.step_times_s)
    assert m.samples_per_s == pytest.approx(8 / m.step_time_median_s)
    assert m.step_time_iqr_s >= 0
    again = batchprof.Measurement.from_dict(m.to_dict())
    assert again == m
    row = m.to_row()
    assert row["peak_allocated_bytes"] == m.peak_allocated_bytes and "step_times_s" not in row


def test_over_budget_is_infeasible_not_an_error():
    workload = batchprof.load_workload("mlp")
    # Measured under a (generous) budget so the guard's own few bytes are counted alike.
    fits = batchprof.measure(workload, 16, memory_limit="1GiB", timing=ONE_STEP)
    limit = fits.peak_allocated_bytes - 1
    m = batchprof.measure(workload, 16, memory_limit=limit, timing=ONE_STEP)
    assert not m.feasible
    assert "out of memory" in m.reason
    assert m.step_times_s == ()
    exact = batchprof.measure(workload, 16, memory_limit=fits.peak_allocated_bytes,
                              timing=ONE_STEP)
    assert exact.feasible  # feasible means peak <= limit, no hidden headroom


def test_fifty_over_budget_probes_leak_nothing():
    workload = tiny_workload(width=256)
    own = 2 * (256 * 256 + 256) * 4  # enough for the parameters, not for training
    limit = own + 300_000
    batchprof.measure(workload, 512, memory_limit=limit, timing=ONE_STEP)  # warm caches
    tensors_before, malloc_before = live_tensor_bytes(), malloc_in_use_bytes()
    for _ in range(50):
        m = batchprof.measure(workload, 512, memory_limit=limit, timing=ONE_STEP)
        assert not m.feasible
    assert live_tensor_bytes() == tensors_before
    if malloc_before is not None:
        # A 512x256 fp32 batch is 512 KiB; a leak of one per probe would be 25 MiB.
        assert malloc_in_use_bytes() - malloc_before < 2 * 2**20


def test_budget_smaller_than_parameters_is_a_user_error():
    with pytest.raises(BudgetError, match="parameters and buffers alone take"):
        batchprof.measure("mlp", 4, memory_limit="1MiB")


@pytest.mark.parametrize("bad", [0, -3, 2.5, "8", True])
def test_bad_batch_size(bad):
    with pytest.raises(ConfigError, match="batch size must be a positive integer"):
        batchprof.measure(tiny_workload(), bad)


def test_non_oom_failure_names_the_batch_size():
    base = tiny_workload()

    def failing_loss(model, batch):
        raise ValueError("shape mismatch in user code")

    broken = batchprof.Workload("broken", base.model_fn, base.batch_fn, failing_loss)
    with pytest.raises(StepError, match="at batch size 7") as info:
        batchprof.measure(broken, 7)
    assert info.value.batch_size == 7
    assert isinstance(info.value.__cause__, ValueError)


def test_fake_backend_scripts_oom_through_the_same_path():
    backend = FakeBackend(lambda b: 10_000 * b, capacity_bytes=100_000)
    ok = batchprof.measure(tiny_workload(), 10, backend=backend, timing=ONE_STEP)
    over = batchprof.measure(tiny_workload(), 11, backend=backend, timing=ONE_STEP)
    assert ok.feasible and ok.peak_allocated_bytes == 100_000
    assert not over.feasible and backend.probes == [10, 11]


def test_real_allocator_failure_counts_as_oom():
    from batchprof.backends import CpuBackend

    backend = CpuBackend()
    err = RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate "
                       "memory: you tried to allocate 1 bytes")
    assert backend.is_oom(err) and backend.is_oom(torch.OutOfMemoryError("x"))
    assert not backend.is_oom(RuntimeError("shape mismatch"))


def test_memory_only_probe_reads_the_same_memory_and_times_nothing():
    """measure(timed=False), the max-batch search's probe: the same peak and activation bytes
    as a timed probe, no timed step, and no throughput (None, never a plausible 0)."""
    timed = batchprof.measure(tiny_workload(), 8, memory_limit="1GiB", timing=ONE_STEP)
    seen = []

    class Sampler:
        def begin_window(self, key):
            seen.append(key)

        def end_window(self, key):
            return []

    m = batchprof.measure(tiny_workload(), 8, memory_limit="1GiB", timing=ONE_STEP,
                          timed=False, sampler=Sampler())
    assert m.feasible and timed.timed and not m.timed
    assert m.peak_allocated_bytes == timed.peak_allocated_bytes
    assert m.activation_bytes == timed.activation_bytes
    assert m.step_times_s == () and m.samples_per_s is None and m.step_time_median_s is None
    assert seen == []  # no sampler window: nothing ran to sample
    assert batchprof.Measurement.from_dict(m.to_dict()) == m
    over = batchprof.measure(tiny_workload(), 8, memory_limit=m.peak_allocated_bytes - 1,
                             timed=False)
    assert not over.feasible and "out of memory" in over.reason


@pytest.mark.parametrize("name", sorted(BUILTINS))
def test_memory_only_probes_on_a_kept_model_read_what_fresh_ones_read(name):
    """KeptModel: after the first memory-only probe, the next ones run on its model (no
    rebuild, no warm-up) and read the same peak and activation bytes, to the byte, as a fresh
    probe at that size. An over-budget probe on the kept model puts it back in its steady
    state (the probe after it reads what a fresh one reads); one on a fresh model drops it."""
    from batchprof.backends import CpuBackend
    from batchprof.probe.step import KeptModel, measure

    workload = batchprof.load_workload(name)
    kept, backend = KeptModel(), CpuBackend(None)
    readings = [measure(workload, b, backend=backend, timed=False, kept=kept)
                for b in (8, 3, 12)]
    assert [m.extra.get("kept_model", False) for m in readings] == [False, True, True]
    for m in readings:
        fresh = measure(workload, m.batch_size, backend=backend, timed=False)
        assert not fresh.extra.get("kept_model")
        assert (m.peak_allocated_bytes, m.activation_bytes, m.resident_bytes) == \
            (fresh.peak_allocated_bytes, fresh.activation_bytes, fresh.resident_bytes)
    tight = CpuBackend(readings[0].peak_allocated_bytes - 1)
    over = measure(workload, 8, backend=tight, timed=False, kept=kept)
    assert over.feasible is False and over.extra.get("kept_model") and kept.step is not None
    after = measure(workload, 3, backend=backend, timed=False, kept=kept)
    assert after.extra.get("kept_model")
    assert (after.peak_allocated_bytes, after.activation_bytes) == \
        (readings[1].peak_allocated_bytes, readings[1].activation_bytes)
    first = KeptModel()
    assert measure(workload, 8, backend=tight, timed=False, kept=first).feasible is False
    assert first.step is None  # a fresh model's first step may have half-built its state
    # a timed probe never runs on it
    assert not measure(workload, 3, backend=backend, timing=ONE_STEP, kept=kept).extra.get(
        "kept_model")


def test_profile_memory_only_probes_share_one_model_and_say_so():
    r = batchprof.profile(tiny_workload(), memory_limit="16MiB", max_batch=64, timing=ONE_STEP,
                          use_prediction=False, knee=False)
    kept = [m for m in r.probes if m.extra.get("kept_model")]
    assert not r.probes[0].extra.get("kept_model") and kept
    assert any(f"{len(kept)} memory-only probe(s) ran on the model built by the first" in n
               for n in r.notes)
    fresh = {m.batch_size: m.peak_allocated_bytes for m in r.probes
             if m.feasible and not m.extra.get("kept_model")}
    for m in kept:  # the same size probed fresh and kept reads the same (the confirmation)
        if m.feasible and m.batch_size in fresh:
            assert m.peak_allocated_bytes == fresh[m.batch_size]
