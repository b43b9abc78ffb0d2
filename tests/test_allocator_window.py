"""``Backend.allocator_window``: the allocator's alloc/free events over a block, with marked
spans. The CPU backend's from real steps (its peak is what ``measure()`` reports), the fake's
from its script, and calibration reaching them through a backend object."""

from __future__ import annotations

import contextlib
import gc

import pytest
import torch

import batchprof
from batchprof.backends import (
    AllocatorEvent,
    AllocatorTimeline,
    Backend,
    CpuBackend,
    MarkedSpan,
    MemoryReading,
    unique_storage_bytes,
)
from batchprof.backends.fake import FakeBackend
from batchprof.errors import DeviceUnavailableError
from batchprof.prediction.calibrate import calibrate_cpu, record_cpu_step
from batchprof.prediction.trace import trace_step

from .helpers import independent_peak, tiny_workload


class WindowReadBackend(CpuBackend):
    """A CPU backend whose memory window reads its peak through ``allocator_window`` alone."""

    @contextlib.contextmanager
    def memory_window(self, resident):
        reading = MemoryReading(resident_bytes=unique_storage_bytes(resident))
        with self.allocator_window(pause_collector=True) as window:
            yield reading
        peak = reading.resident_bytes + window.timeline.peak_bytes
        reading.peak_allocated_bytes = reading.peak_reserved_bytes = peak


def _inside(timeline: AllocatorTimeline, span: MarkedSpan) -> list[int]:
    return [e.delta_bytes for e in timeline.events if span.start_ns <= e.time_ns <= span.end_ns]


# ---- the CPU backend: real events --------------------------------------------------------
@pytest.mark.parametrize("name", ["mlp", "lstm"])  # lstm: oneDNN buffers outside the dispatcher
def test_cpu_window_peak_over_a_step_is_what_measure_reports(name):
    workload = batchprof.load_workload(name)
    for batch_size in (3, 8):
        measured = batchprof.measure(workload, batch_size, backend=CpuBackend(), timed=False)
        windowed = batchprof.measure(workload, batch_size, backend=WindowReadBackend(),
                                     timed=False)
        assert windowed.feasible and measured.feasible
        assert windowed.resident_bytes == measured.resident_bytes
        assert windowed.peak_allocated_bytes == measured.peak_allocated_bytes, (name, batch_size)
        # and both against a reading that shares no code with the backend
        reference = independent_peak(workload, batch_size)
        assert windowed.peak_allocated_bytes == pytest.approx(reference, rel=0.01)


def test_cpu_window_records_each_allocation_inside_its_marked_span():
    backend = CpuBackend()
    small, large = torch.Size([1000]), torch.Size([3, 1000])
    with backend.allocator_window("t#") as window:
        assert window.timeline is None  # filled in when the window exits
        with window.mark("t#small"):
            a = torch.empty(small)
            del a
        with window.mark("other"):  # not under the prefix: no span
            b = torch.empty(small)
            del b
        with window.mark("t#large"):
            c, d = torch.empty(large), torch.empty(small)
            del c, d
    timeline = window.timeline
    assert isinstance(timeline, AllocatorTimeline)
    assert [s.name for s in timeline.spans] == ["t#small", "t#large"]
    nbytes = 4 * small.numel(), 4 * large.numel()
    assert _inside(timeline, timeline.spans[0]) == [nbytes[0], -nbytes[0]]
    assert sorted(_inside(timeline, timeline.spans[1])) == \
        sorted([nbytes[1], nbytes[0], -nbytes[1], -nbytes[0]])
    assert timeline.peak_bytes == nbytes[0] + nbytes[1]  # c and d held together
    times = [e.time_ns for e in timeline.events]
    assert times == sorted(times)
    assert all(isinstance(e, AllocatorEvent) for e in timeline.events)


def test_cpu_window_without_a_prefix_keeps_no_spans():
    with CpuBackend().allocator_window() as window:
        with window.mark("t#x"):
            x = torch.empty(256)
            del x
    assert window.timeline.spans == ()
    assert window.timeline.peak_bytes == 1024


def test_cpu_marks_pause_the_collector_and_pause_collector_pauses_the_window():
    assert gc.isenabled()
    with CpuBackend().allocator_window("t#") as window:
        assert gc.isenabled()  # only the marks pause it
        with window.mark("t#step"):
            assert not gc.isenabled()
        assert gc.isenabled()
    with CpuBackend().allocator_window("t#", pause_collector=True) as window:
        assert not gc.isenabled()
        with window.mark("t#step"):
            assert not gc.isenabled()
        assert not gc.isenabled()  # a mark inside a paused window leaves it paused
    assert gc.isenabled()


# ---- the timeline record -----------------------------------------------------------------
def test_timeline_held_and_peak_count_from_the_level_before_the_first_event():
    events = (AllocatorEvent(10, 100, 1100), AllocatorEvent(20, 50, 1150),
              AllocatorEvent(30, -100, 1050), AllocatorEvent(40, 300, 1350))
    timeline = AllocatorTimeline(events, ())
    assert timeline.held() == [(10, 100), (20, 150), (30, 50), (40, 350)]
    assert timeline.peak_bytes == 350
    empty = AllocatorTimeline((), ())
    assert empty.held() == [] and empty.peak_bytes == 0


# ---- the fake backend: scripted events ---------------------------------------------------
def test_fake_window_scripts_the_peak_inside_each_mark():
    backend = FakeBackend(lambda b: 1000 * b, capacity_bytes=None)
    assert isinstance(backend, Backend)
    backend.start_probe(7)
    with backend.allocator_window("m#") as window:
        with window.mark("m#a"):
            pass
        with window.mark("other"):
            pass
    timeline = window.timeline
    assert [s.name for s in timeline.spans] == ["m#a"]
    assert _inside(timeline, timeline.spans[0]) == [7000, -7000]
    assert len(timeline.events) == 4  # the unprefixed mark ran its scripted step too
    assert timeline.peak_bytes == 7000  # what the fake's memory_window reports at b = 7


def test_fake_window_without_marks_runs_the_script_once_and_follows_its_deltas():
    backend = FakeBackend(lambda b: 0, capacity_bytes=None,
                          allocator_deltas_fn=lambda b: (b, 2 * b, -b))
    backend.start_probe(10)
    with backend.allocator_window() as window:
        assert window.timeline is None
    assert [e.delta_bytes for e in window.timeline.events] == [10, 20, -10]
    assert [e.total_bytes for e in window.timeline.events] == [10, 30, 20]
    assert window.timeline.peak_bytes == 30 and window.timeline.spans == ()


def test_fake_without_allocator_events_says_so_with_none():
    backend = FakeBackend(lambda b: 0, capacity_bytes=None, records_allocator_events=False)
    assert backend.allocator_window("m#") is None


# ---- calibration through a backend object ------------------------------------------------
def test_calibration_reads_a_given_cpu_backend_like_its_own():
    workload = tiny_workload()
    given = record_cpu_step(workload, 4, backend=CpuBackend())
    own = record_cpu_step(workload, 4)
    assert given.measured_peak_bytes == own.measured_peak_bytes
    assert dict(given.window_bytes) == dict(own.window_bytes)
    assert given.window_bytes  # the per-operator spans were found
    # The same allocator events as measure()'s step, give or take the recorder's own step (a
    # few bytes of 0-d tensors differ: 8 of ~100 KB here, before and after the window moved).
    measured = batchprof.measure(workload, 4, timed=False)
    assert given.measured_peak_bytes == pytest.approx(measured.peak_allocated_bytes, rel=1e-3)


def test_calibration_on_a_backend_without_events_is_a_clear_error():
    workload = tiny_workload()
    backend = FakeBackend(lambda b: 0, capacity_bytes=None, records_allocator_events=False)
    with pytest.raises(DeviceUnavailableError, match="cannot record its allocator's events"):
        calibrate_cpu(workload, (1, 2), lambda b: trace_step(workload, b), backend=backend)
    assert backend.probes == []  # refused before any step ran
