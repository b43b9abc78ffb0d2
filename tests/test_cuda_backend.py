"""The CUDA backend. Without a GPU: every branch through a fake ``torch.cuda`` (the hardware
seam, passed as ``cuda=``), and measure() end to end over it with the step on the CPU. With a
GPU (``gpu`` marker): the figures against torch.cuda's own, and recovery after an OOM."""

from __future__ import annotations

import contextlib
import gc
import subprocess
import sys
import weakref
from types import SimpleNamespace

import pytest
import torch

import batchprof
from batchprof.backends import Backend, BudgetExceeded, DeviceInfo, device_notice, make_backend
from batchprof.backends import cuda as cuda_module
from batchprof.backends.cuda import CudaBackend
from batchprof.errors import ConfigError, DeviceUnavailableError
from batchprof.probe import TimingPolicy

from .helpers import tiny_workload

GiB = 2**30
ONE_STEP = TimingPolicy(timed_steps=1, max_timed_steps=1)
no_cuda_here = pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is present")


class FakeEvent:
    def __init__(self, log: list, enable_timing: bool = False):
        self.log, self.enable_timing, self.recorded_on = log, enable_timing, None
        self.elapsed_ms = 12.5

    def record(self, stream=None):
        self.recorded_on = stream
        self.log.append("event.record")

    def synchronize(self):
        self.log.append("event.synchronize")

    def elapsed_time(self, end: FakeEvent) -> float:
        assert self.enable_timing and end.enable_timing, "timing events need enable_timing"
        return self.elapsed_ms


class FakeCuda:
    """The torch.cuda functions CudaBackend calls, scripted; ``log`` records call order."""

    def __init__(self, *, total=80 * GiB, free=70 * GiB, reserved=2 * GiB, allocated=GiB,
                 peak_allocated=5 * GiB, peak_reserved=6 * GiB, retries=(3, 7),
                 allocator="native", fraction=1.0, devices=1):
        self.total, self.free, self.reserved, self.allocated = total, free, reserved, allocated
        self.peak_allocated, self.peak_reserved = peak_allocated, peak_reserved
        self.retries = list(retries)
        self.allocator, self.fraction, self.devices = allocator, fraction, devices
        self.log: list = []
        self.fractions_set: list[float] = []
        self.on_empty_cache = lambda: None

    def is_available(self):
        return True

    def device_count(self):
        return self.devices

    def current_device(self):
        return 0

    def get_device_properties(self, index):
        return SimpleNamespace(total_memory=self.total, name="Fake H100")

    def get_allocator_backend(self):
        return self.allocator

    @contextlib.contextmanager
    def device(self, index):
        self.log.append(("device", index))
        yield

    def synchronize(self, index=None):
        self.log.append("synchronize")

    def mem_get_info(self, index=None):
        return self.free, self.total

    def memory_reserved(self, index=None):
        return self.reserved

    def memory_allocated(self, index=None):
        self.log.append("memory_allocated")
        return self.allocated

    def reset_peak_memory_stats(self, index=None):
        self.log.append("reset_peak_memory_stats")

    def max_memory_allocated(self, index=None):
        return self.peak_allocated

    def max_memory_reserved(self, index=None):
        return self.peak_reserved

    def memory_stats(self, index=None):
        return {"num_alloc_retries": self.retries.pop(0)}

    def get_per_process_memory_fraction(self, index=None):
        return self.fraction

    def set_per_process_memory_fraction(self, fraction, index=None):
        assert isinstance(fraction, float)  # torch raises TypeError otherwise
        self.fraction = fraction
        self.fractions_set.append(fraction)
        self.log.append(("set_fraction", fraction))

    def empty_cache(self):
        self.log.append("empty_cache")
        self.on_empty_cache()

    def current_stream(self, index=None):
        return "stream-0"

    def Event(self, enable_timing=False):  # noqa: N802 - torch.cuda's name
        return FakeEvent(self.log, enable_timing)


@pytest.fixture
def no_warmup(monkeypatch):
    calls = []
    monkeypatch.setattr(cuda_module, "warm_up_libraries", calls.append)
    monkeypatch.delenv("PYTORCH_NO_CUDA_MEMORY_CACHING", raising=False)
    return calls


def make(fake: FakeCuda, limit: int | None = None, device: str = "cuda") -> CudaBackend:
    return CudaBackend(device, limit, cuda=fake)


# ---- without CUDA: the factory and the notice --------------------------------------------
@no_cuda_here
@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_cuda_without_cuda_is_a_clear_error(device):
    with pytest.raises(DeviceUnavailableError, match="CUDA is not available") as info:
        make_backend(device)
    assert "--device cpu" in str(info.value) and "--device auto" in str(info.value)
    with pytest.raises(DeviceUnavailableError, match="--device auto"):
        CudaBackend(device)


@no_cuda_here
def test_auto_falls_back_to_cpu_with_a_notice():
    assert make_backend("auto").name == "cpu"
    assert device_notice("auto", "cpu") == "no CUDA device found; running on the CPU"
    assert device_notice(" AUTO ", "cpu") is not None


@pytest.mark.parametrize("requested, resolved", [("cpu", "cpu"), ("auto", "cuda"),
                                                 ("cuda", "cuda")])
def test_no_notice_when_nothing_fell_back(requested, resolved):
    assert device_notice(requested, resolved) is None


@pytest.mark.parametrize("modules", [
    "batchprof",
    "batchprof.backends.cuda, batchprof.environment, batchprof.probe.snapshot, "
    "batchprof.cli.doctor",
])
def test_import_is_warning_free(modules):
    done = subprocess.run([sys.executable, "-W", "error", "-c", f"import {modules}"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


# ---- construction ------------------------------------------------------------------------
def test_backend_follows_the_protocol(no_warmup):
    backend = make(FakeCuda())
    assert isinstance(backend, Backend)
    assert backend.name == "cuda:0" and backend.device == torch.device("cuda", 0)


def test_device_index_out_of_range(no_warmup):
    with pytest.raises(DeviceUnavailableError, match="sees 2 device"):
        make(FakeCuda(devices=2), device="cuda:2")


@pytest.mark.parametrize("device", ["cuda:x", "cpu"])
def test_not_a_cuda_device_name(no_warmup, device):
    with pytest.raises(ConfigError, match="cuda:"):
        make(FakeCuda(), device=device)


def test_uncached_allocator_is_refused(no_warmup, monkeypatch):
    monkeypatch.setenv("PYTORCH_NO_CUDA_MEMORY_CACHING", "")  # set at all means on
    with pytest.raises(DeviceUnavailableError, match="PYTORCH_NO_CUDA_MEMORY_CACHING"):
        make(FakeCuda())


@pytest.mark.parametrize("limit, match", [(81 * GiB, "more than cuda:0 has"),
                                          (0, "positive"), (-5, "positive")])
def test_bad_memory_limit(no_warmup, limit, match):
    with pytest.raises(ConfigError, match=match):
        make(FakeCuda(total=80 * GiB), limit)


# ---- prepare and capacity ----------------------------------------------------------------
def test_prepare_warms_once_and_capacity_is_free_plus_reserved(no_warmup):
    fake = FakeCuda(free=70 * GiB, reserved=2 * GiB)
    backend = make(fake)
    backend.start_probe(8)
    backend.start_probe(16)
    assert no_warmup == [torch.device("cuda", 0)]  # warmed once, before the first probe
    assert backend.capacity_bytes() == 72 * GiB
    fake.free = 0  # read once after the warm-up, not per call
    assert backend.capacity_bytes() == 72 * GiB


@pytest.mark.parametrize("limit, expected", [(20 * GiB, 20 * GiB), (79 * GiB, 72 * GiB)])
def test_capacity_with_a_limit_is_the_smaller(no_warmup, limit, expected):
    backend = make(FakeCuda(free=70 * GiB, reserved=2 * GiB, total=80 * GiB), limit)
    assert backend.capacity_bytes() == expected


# ---- the memory fraction -----------------------------------------------------------------
def test_limit_sets_the_fraction_once_then_empties_the_cache(no_warmup):
    fake = FakeCuda(total=80 * GiB, fraction=0.9)
    backend = make(fake, 20 * GiB)
    assert fake.fractions_set == []  # nothing global happens until a probe starts
    backend.start_probe(8)
    backend.start_probe(16)
    assert fake.fractions_set == [0.25]
    i = fake.log.index(("set_fraction", 0.25))
    assert "empty_cache" in fake.log[i:]
    backend.close()
    backend.close()
    assert fake.fractions_set == [0.25, 0.9]  # the previous fraction, restored once


def test_fraction_restored_when_the_backend_is_dropped(no_warmup):
    fake = FakeCuda(fraction=1.0)
    backend = make(fake, 8 * GiB)
    backend.start_probe(1)
    del backend
    gc.collect()
    assert fake.fractions_set == [0.1, 1.0]


def test_context_manager_restores(no_warmup):
    fake = FakeCuda(total=64 * GiB)
    with make(fake, 16 * GiB) as backend:
        backend.start_probe(1)
        assert fake.fraction == 0.25
    assert fake.fraction == 1.0


def test_device_info_names_the_device_without_warming_it_up(no_warmup):
    info = make(FakeCuda(total=80 * GiB)).device_info()
    assert info == DeviceInfo("cuda:0", "Fake H100", 80 * GiB)
    assert no_warmup == []  # read from the device properties: nothing ran on the device
    cpu = make_backend("cpu").device_info()
    assert cpu.device == "cpu" and cpu.name and cpu.total_memory_bytes > 0


def test_allocator_window_is_not_supported_and_touches_nothing(no_warmup):
    fake = FakeCuda()
    backend = make(fake)
    assert backend.allocator_window("batchprof#") is None
    assert backend.allocator_window(pause_collector=True) is None
    assert fake.log == [] and no_warmup == []


def test_cpu_calibration_refuses_a_cuda_backend(no_warmup):
    from batchprof.prediction.calibrate import calibrate_cpu

    workload = tiny_workload()
    with pytest.raises(ConfigError, match="CPU calibration runs the real step on the CPU"):
        calibrate_cpu(workload, (1, 2), lambda b: None, backend=make(FakeCuda()))


def test_measure_closes_the_backend_it_builds(no_warmup, monkeypatch):
    fake, built = FakeCuda(total=80 * GiB, fraction=1.0, retries=(0,) * 4), []

    def build(device, limit):
        built.append(cpu_stepping(fake, limit))  # kept alive: only close() can restore
        return built[-1]

    monkeypatch.setattr("batchprof.probe.step.make_backend", build)
    m = batchprof.measure(tiny_workload(), 4, device="cuda", memory_limit=8 * GiB,
                          timing=ONE_STEP)
    assert m.feasible and len(built) == 1
    assert fake.fractions_set == [0.1, 1.0]  # set by the probe, restored by measure()
    given = cpu_stepping(fake, 8 * GiB)
    batchprof.measure(tiny_workload(), 4, backend=given, timing=ONE_STEP)
    assert fake.fraction == 0.1  # a caller's backend is the caller's to close
    given.close()


def test_no_limit_never_touches_the_fraction(no_warmup):
    fake = FakeCuda()
    backend = make(fake)
    backend.start_probe(1)
    backend.close()
    assert fake.fractions_set == []


# ---- the memory window -------------------------------------------------------------------
def test_memory_window_reads_the_allocator(no_warmup):
    fake = FakeCuda(allocated=GiB, peak_allocated=5 * GiB, peak_reserved=6 * GiB, retries=(3, 7))
    backend = make(fake)
    with backend.memory_window([]) as reading:
        assert fake.log[-2:] == ["memory_allocated", "reset_peak_memory_stats"]
        assert reading.peak_allocated_bytes is None  # filled in when the window closes
    assert reading.resident_bytes == GiB
    assert reading.peak_allocated_bytes == 5 * GiB
    assert reading.peak_reserved_bytes == 6 * GiB
    assert reading.num_alloc_retries == 4


def test_async_allocator_reports_no_retries(no_warmup):
    backend = make(FakeCuda(allocator="cudaMallocAsync", retries=()))
    with backend.memory_window([]) as reading:
        pass
    assert reading.num_alloc_retries is None  # not a plausible 0


def test_reserved_past_the_limit_is_an_oom(no_warmup):
    backend = make(FakeCuda(peak_reserved=9 * GiB), 8 * GiB)
    with pytest.raises(BudgetExceeded, match="above the"):
        with backend.memory_window([]):
            pass


# ---- timing, cleanup, OOM classification -------------------------------------------------
def test_time_step_uses_events_after_a_synchronize(no_warmup):
    fake = FakeCuda()
    backend = make(fake)
    seconds = backend.time_step(lambda: fake.log.append("step"))
    assert seconds == pytest.approx(0.0125)
    tail = fake.log[fake.log.index(("device", 0)):]
    assert tail == [("device", 0), "synchronize", "event.record", "step", "event.record",
                    "event.synchronize"]


def test_cleanup_collects_before_emptying_the_cache(no_warmup):
    fake = FakeCuda()
    backend = make(fake)

    class Cycle:  # only gc.collect frees it
        pass

    cycle = Cycle()
    cycle.self = cycle
    alive = weakref.ref(cycle)
    del cycle
    fake.on_empty_cache = lambda: fake.log.append(("cycle alive", alive() is not None))
    backend.cleanup()
    assert ("cycle alive", False) in fake.log


def test_is_oom_by_type_and_code(no_warmup):
    backend = make(FakeCuda())
    assert backend.is_oom(torch.OutOfMemoryError("CUDA out of memory"))
    raw = torch.AcceleratorError("CUDA error: out of memory")
    raw.error_code = 2  # cudaErrorMemoryAllocation, as torch sets it
    assert backend.is_oom(raw)
    illegal = torch.AcceleratorError("CUDA error: an illegal memory access was encountered")
    illegal.error_code = 700
    assert not backend.is_oom(illegal)
    assert backend.is_oom(RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling "
                                       "`cublasCreate(handle)`"))
    assert not backend.is_oom(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    assert not backend.is_oom(ValueError("out of memory"))


# ---- measure() over the fake allocator (the step itself runs on the CPU) -----------------
def cpu_stepping(fake: FakeCuda, limit: int | None = None) -> CudaBackend:
    backend = make(fake, limit)
    backend.device = torch.device("cpu")  # tensors on the CPU; every reading from the fake
    return backend


def test_measure_reports_the_allocator_figures(no_warmup):
    fake = FakeCuda(retries=(10, 12), peak_allocated=3 * GiB, peak_reserved=4 * GiB,
                    allocated=GiB, free=30 * GiB, reserved=2 * GiB)
    m = batchprof.measure(tiny_workload(), 8, backend=cpu_stepping(fake),
                          timing=TimingPolicy(timed_steps=3, max_timed_steps=3))
    assert m.feasible and m.device == "cuda:0"
    assert (m.resident_bytes, m.peak_allocated_bytes, m.peak_reserved_bytes) == (
        GiB, 3 * GiB, 4 * GiB)
    assert m.num_alloc_retries == 2
    assert m.capacity_bytes == 32 * GiB
    assert m.step_times_s == (0.0125,) * 3
    assert m.activation_bytes > 0


def test_oom_is_data_and_cleanup_runs_after_the_step_is_released(no_warmup):
    base = tiny_workload()
    params: list[weakref.ref] = []

    def model_fn():
        model = base.model_fn()
        params.extend(weakref.ref(p) for p in model.parameters())
        return model

    def loss_fn(model, batch):
        loss = base.loss_fn(model, batch)
        if batch[0].shape[0] > 8:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return loss

    fake = FakeCuda(total=16 * GiB)
    seen = []
    fake.on_empty_cache = lambda: seen.append(sum(r() is not None for r in params))
    workload = batchprof.Workload("ooms", model_fn, base.batch_fn, loss_fn)
    m = batchprof.measure(workload, 9, backend=cpu_stepping(fake, 4 * GiB), timing=ONE_STEP)
    assert not m.feasible and m.reason.startswith("out of memory: CUDA out of memory")
    assert m.peak_allocated_bytes is None and m.step_times_s == ()
    # The last empty_cache is the probe's cleanup: by then no parameter is alive, so the
    # traceback no longer pinned the step when the cache was emptied.
    assert seen and seen[-1] == 0
    assert fake.fractions_set == [0.25, 1.0]  # restored when measure() dropped the backend


# ---- on a real GPU -----------------------------------------------------------------------
def _independent_cuda_peak(workload, batch_size: int) -> int:
    device = torch.device("cuda", torch.cuda.current_device())
    with torch.device(device):
        model = workload.model_fn()
    opt = workload.optimizer_fn(model.parameters())
    batch = workload.batch_fn(batch_size, device)

    def step():
        workload.loss_fn(model, batch).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    step()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated()


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["mlp", "transformer"])
def test_gpu_peak_matches_max_memory_allocated(name):
    workload = batchprof.load_workload(name)
    m = batchprof.measure(workload, 16, device="cuda", timing=ONE_STEP)
    assert m.feasible
    assert (m.num_alloc_retries is not None) == (torch.cuda.get_allocator_backend() == "native")
    reference = _independent_cuda_peak(workload, 16)
    assert m.peak_allocated_bytes == pytest.approx(reference, rel=0.01)
    assert m.resident_bytes < m.peak_allocated_bytes <= m.peak_reserved_bytes
    assert m.peak_reserved_bytes <= m.capacity_bytes
    assert all(t > 0 for t in m.step_times_s)


@pytest.mark.gpu
def test_gpu_oom_under_a_fraction_recovers_all_memory():
    fraction_before = torch.cuda.get_per_process_memory_fraction()
    warm = CudaBackend("cuda")
    warm.prepare()  # cuBLAS workspaces are process-lifetime: count them in the baseline
    gc.collect()
    torch.cuda.empty_cache()
    allocated_before = torch.cuda.memory_allocated()
    reserved_before = torch.cuda.memory_reserved()
    workload = tiny_workload(width=1024)
    with CudaBackend("cuda", 512 * 2**20) as backend:
        # 65536 x 1024 fp32 is 256 MiB per activation: forward cannot fit in 512 MiB.
        m = batchprof.measure(workload, 65536, backend=backend, timing=ONE_STEP)
        assert not m.feasible and m.reason.startswith("out of memory")
        assert torch.cuda.memory_allocated() == allocated_before
        assert torch.cuda.memory_reserved() <= reserved_before
        ok = batchprof.measure(workload, 64, backend=backend, timing=ONE_STEP)
        assert ok.feasible and ok.peak_reserved_bytes <= 512 * 2**20
    assert torch.cuda.get_per_process_memory_fraction() == fraction_before
    assert torch.cuda.memory_allocated() == allocated_before
