"""--memory-snapshot: the CPU memory timeline for real, the CUDA recording through a fake of
torch.cuda.memory's two recording functions (the hardware seam), and for real on a GPU."""

from __future__ import annotations

import gzip
import json
import pickle

import matplotlib.pyplot as plt
import pytest
import torch

import batchprof
from batchprof.errors import ConfigError, DeviceUnavailableError, TraceError
from batchprof.probe import snapshot as snapshot_module
from batchprof.probe.snapshot import (
    DEFAULT_MAX_ENTRIES,
    memory_snapshot,
    snapshot_filename,
    snapshot_probe,
)

from .helpers import tiny_workload

no_cuda_here = pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is present")


def profiler_running() -> bool:
    return torch._C._autograd._profiler_enabled()


def test_snapshot_probe_on_cpu_writes_the_timeline(tmp_path):
    path = tmp_path / "report" / "memory_timeline.json"  # the folder is created
    snap, m = snapshot_probe(tiny_workload(width=128), 32, path)
    assert snap.written and snap.kind == "torch-profiler-memory-timeline"
    assert m.feasible and m.peak_allocated_bytes is None  # see snapshot_probe's docstring
    times, sizes = json.loads(path.read_text())
    assert len(times) == len(sizes) > 0
    # 32 x 128 fp32 activations exist at some point: the timeline saw real bytes.
    assert max(sum(row) for row in sizes) >= 32 * 128 * 4
    assert not profiler_running()


def test_snapshot_probe_respects_the_budget(tmp_path):
    snap, m = snapshot_probe(tiny_workload(width=256), 4096, tmp_path / "t.json",
                             memory_limit=2 * (256 * 256 + 256) * 4 + 100_000)
    assert not m.feasible and "out of memory" in m.reason
    assert snap.written  # an OOM probe still leaves its timeline


@pytest.mark.parametrize("name", ["t.json.gz", "t.raw.json.gz"])
def test_compressed_formats(tmp_path, name):
    x = torch.ones(1000)
    with memory_snapshot("cpu", tmp_path / name) as snap:
        y = (x * 2).sum()
    assert y.item() == 2000
    with gzip.open(snap.path, "rt") as fh:
        assert json.load(fh)


def test_html_closes_the_figure_torch_leaves_open(tmp_path):
    figures = plt.get_fignums()
    with memory_snapshot("cpu", tmp_path / "t.html") as snap:
        torch.ones(1000).mul(2)
    assert snap.written and snap.path.read_text().startswith("<html>")
    assert plt.get_fignums() == figures


def test_unknown_cpu_suffix_starts_nothing(tmp_path):
    with pytest.raises(ConfigError, match=r"\.json"):
        with memory_snapshot("cpu", tmp_path / "t.pickle"):
            pass
    assert not profiler_running()


def test_a_nested_profiler_is_reported_not_silently_empty(tmp_path):
    path = tmp_path / "t.json"
    with pytest.raises(TraceError, match="snapshot_probe"):
        with memory_snapshot("cpu", path):
            batchprof.measure(tiny_workload(), 4)  # the CPU backend profiles its window
    assert not path.exists() and not profiler_running()


def test_an_outer_profiler_is_refused(tmp_path):
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]):
        with pytest.raises(TraceError, match="already running"):
            with memory_snapshot("cpu", tmp_path / "t.json"):
                pass


def test_a_failing_body_writes_nothing_and_stops_recording(tmp_path):
    path = tmp_path / "t.json"
    with pytest.raises(KeyError):
        with memory_snapshot("cpu", path):
            raise KeyError("boom")
    assert not path.exists() and not profiler_running()


@pytest.mark.parametrize("bad", [0, -1, 2.5, True])
def test_bad_max_entries(tmp_path, bad):
    with pytest.raises(ConfigError, match="max_entries"):
        with memory_snapshot("cpu", tmp_path / "t.json", max_entries=bad):
            pass


@no_cuda_here
def test_default_names_and_no_cuda():
    assert snapshot_filename("cpu") == "memory_timeline.json"
    assert snapshot_filename("auto") == "memory_timeline.json"
    assert snapshot_filename("cuda:1") == "memory_snapshot.pickle"


@no_cuda_here
def test_cuda_snapshot_without_cuda(tmp_path):
    with pytest.raises(DeviceUnavailableError, match="device='cpu'"):
        with memory_snapshot("cuda", tmp_path / "s.pickle"):
            pass


class FakeHistory:
    """torch.cuda.memory._record_memory_history / _dump_snapshot, recorded."""

    def __init__(self):
        self.calls: list = []

    def record(self, enabled="all", **kwargs):
        self.calls.append(("record", enabled, kwargs))

    def dump(self, filename):
        self.calls.append(("dump", filename))
        with open(filename, "wb") as fh:
            pickle.dump({"segments": [], "device_traces": [[]]}, fh)


@pytest.fixture
def fake_history(monkeypatch):
    fake = FakeHistory()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda.memory, "_record_memory_history", fake.record)
    monkeypatch.setattr(torch.cuda.memory, "_dump_snapshot", fake.dump)
    return fake


def test_cuda_records_python_stacks_dumps_then_stops(fake_history, tmp_path):
    path = tmp_path / "out" / "s.pickle"
    with memory_snapshot("cuda", path, max_entries=500) as snap:
        assert fake_history.calls == [("record", "all", {"context": "all", "stacks": "python",
                                                          "max_entries": 500})]
    assert [c[0] for c in fake_history.calls] == ["record", "dump", "record"]
    assert fake_history.calls[-1][1] is None  # recording switched off
    assert snap.written and "memory_viz" in snap.viewer
    assert snap.to_dict()["kind"] == "cuda-allocator-history"


def test_cuda_recording_stops_even_when_the_body_fails(fake_history, tmp_path):
    with pytest.raises(RuntimeError, match="boom"):
        with memory_snapshot("cuda", tmp_path / "s.pickle"):
            raise RuntimeError("boom")
    assert [c[0] for c in fake_history.calls] == ["record", "record"]  # no dump
    assert fake_history.calls[0][2]["max_entries"] == DEFAULT_MAX_ENTRIES


def test_old_torch_without_history_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.delattr(torch.cuda.memory, "_record_memory_history")
    with pytest.raises(DeviceUnavailableError, match="upgrade torch"):
        with memory_snapshot("cuda", tmp_path / "s.pickle"):
            pass


def test_module_documents_the_viewer():
    assert "pytorch.org/memory_viz" in snapshot_module.__doc__


@pytest.mark.gpu
def test_gpu_snapshot_probe_writes_a_memory_viz_pickle(tmp_path):
    snap, m = snapshot_probe("mlp", 16, tmp_path / "memory_snapshot.pickle", device="cuda")
    assert m.feasible and m.peak_allocated_bytes > 0  # a full measurement on CUDA
    with open(snap.path, "rb") as fh:
        data = pickle.load(fh)
    assert data["segments"] and any(data["device_traces"])
    actions = {e["action"] for trace in data["device_traces"] for e in trace}
    assert {"alloc", "free_completed"} <= actions
