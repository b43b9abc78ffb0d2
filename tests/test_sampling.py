"""Samplers: window semantics and cadence on a fake clock, NVML through a fake pynvml (the
hardware seam), psutil for real on this machine."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import threading
import time

import pytest

from batchprof.errors import BatchprofError, DeviceUnavailableError
from batchprof.sampling import (
    THREAD_NAME_PREFIX,
    BackgroundSampler,
    Metric,
    NullSampler,
    PsutilSampler,
    Sampler,
    SamplerUnavailable,
    libnvml,
    make_sampler,
    nvml,
)

from .fake_pynvml import (
    NVML_ERROR_ARGUMENT_VERSION_MISMATCH,
    NVML_ERROR_DRIVER_NOT_LOADED,
    NVML_ERROR_FUNCTION_NOT_FOUND,
    NVML_ERROR_GPU_IS_LOST,
    NVML_ERROR_LIBRARY_NOT_FOUND,
    NVML_ERROR_NOT_SUPPORTED,
    NVML_FI_DEV_POWER_INSTANT,
    FakeGpu,
    FakePynvml,
    api_names,
)

NVML_SERIES = ("kernel_busy_pct", "memory_busy_pct", "memory_used_bytes",
               "memory_driver_reserved_bytes", "power_w", "sm_clock_mhz", "temperature_c",
               "energy_j")


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t

    def advance(self, dt: float) -> None:
        self.t += dt


class ScriptedWait:
    """The thread's wait: blocks until ``gate`` opens, then advances the fake clock by the
    requested timeout for ``ticks`` calls (one sample each); after that, waits for stop."""

    def __init__(self, clock: FakeClock, ticks: int):
        self.clock, self.ticks = clock, ticks
        self.timeouts: list[float] = []
        self.gate, self.done = threading.Event(), threading.Event()

    def __call__(self, stop: threading.Event, timeout_s: float) -> bool:
        if not self.gate.wait(10):
            return True
        if len(self.timeouts) < self.ticks:
            self.timeouts.append(timeout_s)
            self.clock.advance(timeout_s)
            return False
        self.done.set()
        return stop.wait()


def by_name(series) -> dict:
    return {s.name: s for s in series}


def nvml_sampler(fake: FakePynvml, clock: FakeClock | None = None, **kwargs) -> nvml.NvmlSampler:
    kwargs.setdefault("threaded", False)
    kwargs.setdefault("env", {})
    return nvml.NvmlSampler(clock=clock or FakeClock(), nvml_module=fake, **kwargs)


def sampler_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(THREAD_NAME_PREFIX)]


# ---- the fake is faithful to nvidia-ml-py ---------------------------------------------------
@pytest.mark.skipif(importlib.util.find_spec("pynvml") is None, reason="nvidia-ml-py not installed")
def test_fake_pynvml_uses_only_real_names_and_codes():
    import pynvml

    fake = FakePynvml()
    missing = sorted(n for n in api_names(fake) if not hasattr(pynvml, n))
    assert missing == []
    for name in api_names(fake):
        if name.startswith("NVML_") or name == "nvmlMemory_v2":
            assert getattr(fake, name) == getattr(pynvml, name), name
    assert pynvml.NVMLError(NVML_ERROR_NOT_SUPPORTED).value == NVML_ERROR_NOT_SUPPORTED
    # batchprof's private copies of the codes agree with the library's
    assert libnvml._ERR_NOT_SUPPORTED == pynvml.NVML_ERROR_NOT_SUPPORTED
    assert libnvml._ERR_LIBRARY_NOT_FOUND == pynvml.NVML_ERROR_LIBRARY_NOT_FOUND
    assert libnvml._ERR_FUNCTION_NOT_FOUND == pynvml.NVML_ERROR_FUNCTION_NOT_FOUND
    assert libnvml._ERR_ARGUMENT_VERSION_MISMATCH == pynvml.NVML_ERROR_ARGUMENT_VERSION_MISMATCH


def test_only_the_nvml_module_imports_pynvml():
    import ast
    from pathlib import Path

    import batchprof

    package = Path(batchprof.__file__).parent
    importers = []
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(n.split(".")[0] == "pynvml" for n in names):
                importers.append(path.relative_to(package).as_posix())
    assert sorted(set(importers)) == ["sampling/libnvml.py"]


def test_import_does_not_load_pynvml():
    code = "import sys, batchprof.sampling, batchprof.sampling.nvml; assert 'pynvml' not in sys.modules"
    subprocess.run([sys.executable, "-W", "error", "-c", code], check=True)


# ---- NVML unavailable -----------------------------------------------------------------------
def test_library_not_found_makes_nvml_unavailable_with_reason():
    fake = FakePynvml(init_error=NVML_ERROR_LIBRARY_NOT_FOUND)
    ok, reason = libnvml.availability(0, nvml_module=fake)
    assert not ok
    assert "libnvidia-ml.so.1" in reason and "driver" in reason

    sampler = nvml_sampler(fake, threaded=True)
    with pytest.raises(SamplerUnavailable, match="libnvidia-ml") as info:
        sampler.start()
    assert isinstance(info.value, DeviceUnavailableError) and isinstance(info.value, BatchprofError)
    assert not sampler.running and sampler_threads() == []

    with pytest.raises(SamplerUnavailable, match="not found"):
        make_sampler("nvml", nvml_module=fake)


def test_auto_falls_back_to_psutil_and_records_why(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", FakePynvml(init_error=NVML_ERROR_LIBRARY_NOT_FOUND))
    sampler = make_sampler("auto")
    assert isinstance(sampler, PsutilSampler)
    assert "NVML sampler unavailable" in sampler.fallback_reason
    assert "libnvidia-ml.so.1" in sampler.fallback_reason


def test_auto_picks_nvml_when_it_answers():
    sampler = make_sampler("auto", nvml_module=FakePynvml())
    assert isinstance(sampler, nvml.NvmlSampler) and sampler.fallback_reason is None


def test_device_sampler_is_the_one_auto_policy_for_a_run_on_a_device(monkeypatch):
    from batchprof.sampling.factory import cuda_ordinal, device_sampler

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert [cuda_ordinal(d) for d in ("cpu", "cuda", "cuda:0", "cuda:3")] == [0, 0, 0, 3]
    fake = FakePynvml([FakeGpu(), FakeGpu(uuid="GPU-2")])
    # a CPU run samples the CPU even where NVML answers for a GPU
    assert type(device_sampler("auto", "cpu", nvml_module=fake)) is PsutilSampler
    on_second = device_sampler("auto", "cuda:1", nvml_module=fake)
    assert isinstance(on_second, nvml.NvmlSampler) and on_second.device_index == 1
    assert device_sampler("psutil", "cuda:1", nvml_module=fake).kind == "psutil"
    with pytest.raises(SamplerUnavailable):
        device_sampler("nvml", "cuda:5", nvml_module=fake)


def test_driver_not_loaded_and_missing_package_reasons(monkeypatch):
    ok, reason = libnvml.availability(0, nvml_module=FakePynvml(init_error=NVML_ERROR_DRIVER_NOT_LOADED))
    assert not ok and "driver is not loaded" in reason
    monkeypatch.setitem(sys.modules, "pynvml", None)  # makes `import pynvml` raise ImportError
    ok, reason = libnvml.availability(0)
    assert not ok and "nvidia-ml-py" in reason


def test_failed_device_lookup_shuts_nvml_down_again():
    fake = FakePynvml()
    ok, reason = libnvml.availability(3, nvml_module=fake, env={})
    assert not ok and "3" in reason
    assert fake.initialized == 0


# ---- NVML sampling --------------------------------------------------------------------------
def test_nvml_sampler_reads_every_metric_in_batchprof_units():
    clock = FakeClock()
    gpu = FakeGpu(utilization_gpu=[40, 60], energy_mj=lambda: 1_000_000 + clock.t * 300_000)
    fake = FakePynvml([gpu])
    with nvml_sampler(fake, clock) as sampler:
        assert isinstance(sampler, Sampler)
        sampler.begin_window("w")
        clock.advance(0.1)
        sampler.sample_once()
        clock.advance(0.1)
        series = by_name(sampler.end_window("w"))
    assert tuple(series) == NVML_SERIES
    assert series["kernel_busy_pct"].values == (40.0, 60.0)
    assert series["kernel_busy_pct"].unit == "%"
    assert series["memory_busy_pct"].values == (20.0, 20.0)
    assert series["memory_used_bytes"].values == (10 * 2**30,) * 2
    assert series["memory_driver_reserved_bytes"].values == (512 * 2**20,) * 2
    assert series["power_w"].values == (300.0, 300.0)  # the instant field, mW -> W
    assert series["sm_clock_mhz"].values == (1980.0, 1980.0)
    assert series["temperature_c"].values == (60.0, 60.0)
    energy = series["energy_j"]
    assert energy.unit == "J" and energy.times_s == pytest.approx((0.2,))
    assert energy.values[0] == pytest.approx(60.0)  # 300 W for 0.2 s
    assert fake.initialized == 0  # nvmlShutdown on stop


def test_not_supported_field_is_none_for_the_run_and_not_retried():
    fake = FakePynvml([FakeGpu(errors={"nvmlDeviceGetUtilizationRates": NVML_ERROR_NOT_SUPPORTED})])
    with nvml_sampler(fake) as sampler:
        sampler.begin_window("w")
        for _ in range(4):
            sampler.sample_once()
        series = by_name(sampler.end_window("w"))
        assert "utilization" in sampler.unsupported
    assert series["kernel_busy_pct"].values == (None,) * 5
    assert series["memory_busy_pct"].values == (None,) * 5
    assert series["kernel_busy_pct"].mean is None
    assert series["power_w"].values == (300.0,) * 5
    assert series["temperature_c"].values == (60.0,) * 5
    assert fake.calls["nvmlDeviceGetUtilizationRates"] == 1
    assert fake.calls["nvmlDeviceGetTemperatureV"] == 5


def test_transient_error_blanks_one_sample_and_is_retried():
    gpu = FakeGpu()
    fake = FakePynvml([gpu])
    with nvml_sampler(fake) as sampler:
        sampler.begin_window("w")
        gpu.errors["nvmlDeviceGetClockInfo"] = NVML_ERROR_GPU_IS_LOST
        sampler.sample_once()
        del gpu.errors["nvmlDeviceGetClockInfo"]
        series = by_name(sampler.end_window("w"))
    assert series["sm_clock_mhz"].values == (None, 1980.0)


def test_older_driver_fallbacks():
    gpu = FakeGpu(
        errors={"nvmlDeviceGetMemoryInfo_v2": NVML_ERROR_FUNCTION_NOT_FOUND,
                "nvmlDeviceGetTemperatureV": NVML_ERROR_FUNCTION_NOT_FOUND,
                "nvmlDeviceGetTotalEnergyConsumption": NVML_ERROR_NOT_SUPPORTED},
        field_returns={NVML_FI_DEV_POWER_INSTANT: NVML_ERROR_NOT_SUPPORTED})
    fake = FakePynvml([gpu])
    with nvml_sampler(fake) as sampler:
        sampler.begin_window("w")
        sampler.sample_once()
        series = by_name(sampler.end_window("w"))
    used_v1 = 10 * 2**30 + 512 * 2**20  # v1's used includes the driver's reserve
    assert series["memory_used_bytes"].values == (used_v1, used_v1)
    assert series["memory_driver_reserved_bytes"].values == (None, None)
    assert series["power_w"].values == (250.0, 250.0)  # nvmlDeviceGetPowerUsage
    assert series["temperature_c"].values == (60.0, 60.0)  # the deprecated call
    assert series["energy_j"].values == (None,)
    # each newer API was tried once, then the fallback used for the rest of the run
    assert fake.calls["nvmlDeviceGetFieldValues"] == 1
    assert fake.calls["nvmlDeviceGetTemperatureV"] == 1
    assert fake.calls["nvmlDeviceGetTotalEnergyConsumption"] == 1


def test_version_mismatch_on_v2_memory_falls_back_too():
    gpu = FakeGpu(errors={"nvmlDeviceGetMemoryInfo_v2": NVML_ERROR_ARGUMENT_VERSION_MISMATCH})
    with nvml_sampler(FakePynvml([gpu])) as sampler:
        sampler.begin_window("w")
        series = by_name(sampler.end_window("w"))
    assert series["memory_driver_reserved_bytes"].values == (None,)
    assert series["memory_used_bytes"].values[0] is not None


def test_energy_counter_reset_mid_window_is_none_not_negative():
    gpu = FakeGpu(energy_mj=[5_000_000, 1_000])
    with nvml_sampler(FakePynvml([gpu])) as sampler:
        sampler.begin_window("w")
        series = by_name(sampler.end_window("w"))
    assert series["energy_j"].values == (None,)


# ---- CUDA_VISIBLE_DEVICES -------------------------------------------------------------------
@pytest.mark.parametrize(("visible", "cuda_index", "expected"), [
    (None, 2, 2),
    ("3,1", 0, 3),
    ("3,1", 1, 1),
    (" 2 , 0 ", 1, 0),
    ("GPU-abc,1", 0, "GPU-abc"),
    ("MIG-1234", 0, "MIG-1234"),
    ("1,bogus,2", 0, 1),  # CUDA stops parsing at the first invalid entry
])
def test_nvml_target_maps_cuda_visible_devices(visible, cuda_index, expected):
    assert libnvml.nvml_target(cuda_index, visible) == expected


@pytest.mark.parametrize(("visible", "cuda_index"), [("", 0), ("1,bogus,2", 1), ("0,-1,1", 1)])
def test_nvml_target_rejects_invisible_ordinals(visible, cuda_index):
    with pytest.raises(SamplerUnavailable, match="not visible"):
        libnvml.nvml_target(cuda_index, visible)


def test_nvml_target_rejects_negative_index():
    with pytest.raises(ValueError, match=">= 0"):
        libnvml.nvml_target(-1, None)


def _uuid_gpus() -> tuple[FakePynvml, list[FakeGpu], FakeGpu]:
    gpus = [FakeGpu(uuid=f"GPU-{i}aaa-0000", sm_clock_mhz=1000 + i) for i in range(3)]
    mig = FakeGpu(uuid="MIG-9999-8888", sm_clock_mhz=7)
    return FakePynvml(gpus, extra_uuid_devices=[mig]), gpus, mig


@pytest.mark.parametrize(("visible", "cuda_index", "expected_clock"), [
    ("2,0", 0, 1002),          # integer entries are NVML indices
    ("GPU-1aaa-0000", 0, 1001),  # full UUID
    ("0,GPU-2a", 1, 1002),     # unique UUID prefix, as CUDA accepts
    ("MIG-9999-8888", 0, 7),   # a MIG instance by its UUID
])
def test_sampler_samples_the_gpu_cuda_visible_devices_names(visible, cuda_index, expected_clock):
    fake, _, _ = _uuid_gpus()
    sampler = nvml_sampler(fake, device_index=cuda_index, env={"CUDA_VISIBLE_DEVICES": visible})
    with sampler:
        sampler.begin_window("w")
        series = by_name(sampler.end_window("w"))
    assert series["sm_clock_mhz"].values == (float(expected_clock),)


def test_explicit_device_uuid_wins_and_accepts_torch_form():
    fake, _, _ = _uuid_gpus()
    # torch's device properties give the UUID without the "GPU-" prefix
    sampler = nvml_sampler(fake, device_uuid="1aaa-0000", env={"CUDA_VISIBLE_DEVICES": "0"})
    with sampler:
        sampler.begin_window("w")
        assert by_name(sampler.end_window("w"))["sm_clock_mhz"].values == (1001.0,)


@pytest.mark.parametrize(("visible", "match"), [
    ("MIG-GPU-1aaa-0000/1/0", "MIG-GPU-<uuid>/<gi>/<ci>"),
    ("GPU-", "matches 3 GPUs"),
    ("GPU-7", "matches 0 GPUs"),
])
def test_unsupported_or_ambiguous_entries_are_unavailable(visible, match):
    fake, _, _ = _uuid_gpus()
    with pytest.raises(SamplerUnavailable, match=match):
        nvml_sampler(fake, env={"CUDA_VISIBLE_DEVICES": visible}).start()
    assert fake.initialized == 0


# ---- windows and cadence on a fake clock ------------------------------------------------------
class CountingSampler(BackgroundSampler):
    """Reads a counter: each sample's value is its sequence number."""

    kind = "counting"
    metrics = (Metric("n", "1"),)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.reads = 0
        self.opened = self.closed = 0
        self.on_read = None

    def _open(self):
        self.opened += 1

    def _close(self):
        self.closed += 1

    def _read(self):
        self.reads += 1
        if self.on_read:
            self.on_read(self.reads)
        return (float(self.reads),)


def test_windows_hold_the_samples_inside_their_bounds_and_may_overlap():
    clock = FakeClock()
    with CountingSampler(clock=clock, threaded=False) as s:
        s.begin_window("outer")           # t=0.00
        clock.t = 0.10
        s.sample_once()                   # n=1 @0.10: outer
        clock.t = 0.15
        s.begin_window("inner")           # t=0.15
        clock.t = 0.20
        s.sample_once()                   # n=2 @0.20: outer, inner
        clock.t = 0.25
        (inner,) = s.end_window("inner")  # n=3 @0.25 (end sample): outer, inner
        clock.t = 0.30
        s.sample_once()                   # n=4 @0.30: outer
        clock.t = 0.40
        (outer,) = s.end_window("outer")  # n=5 @0.40
    assert inner.values == (2.0, 3.0)
    assert inner.times_s == pytest.approx((0.05, 0.10))  # seconds since begin_window
    assert outer.values == (1.0, 2.0, 3.0, 4.0, 5.0)
    assert outer.times_s == pytest.approx((0.10, 0.20, 0.25, 0.30, 0.40))


def test_samples_outside_any_window_are_not_kept():
    clock = FakeClock()
    with CountingSampler(clock=clock, threaded=False) as s:
        s.sample_once()  # no window open: not even read
        s.begin_window("a")
        clock.t = 1.0
        s.end_window("a")                 # n=1
        clock.t = 2.0
        s.begin_window("b")
        (b,) = s.end_window("b")          # n=2
    assert b.values == (2.0,) and b.times_s == (0.0,)
    assert s.reads == 2


def test_thread_samples_on_the_interval_grid():
    clock = FakeClock()
    wait = ScriptedWait(clock, ticks=5)
    with CountingSampler(0.1, clock=clock, wait=wait) as s:
        s.begin_window("w")
        wait.gate.set()
        assert wait.done.wait(10)
        (series,) = s.end_window("w")
    assert series.times_s == pytest.approx((0.1, 0.2, 0.3, 0.4, 0.5, 0.5))  # 5 ticks + end
    assert wait.timeouts == pytest.approx([0.1] * 5)


def test_ticks_missed_during_a_slow_read_are_skipped_not_burst():
    clock = FakeClock()
    wait = ScriptedWait(clock, ticks=4)
    with CountingSampler(0.1, clock=clock, wait=wait) as s:
        s.on_read = lambda n: clock.advance(0.25) if n == 2 else None  # read 2 stalls 0.25 s
        s.begin_window("w")
        wait.gate.set()
        assert wait.done.wait(10)
        (series,) = s.end_window("w")
    # stamped at the read's start; after the stall (until 0.45) the grid resumes at 0.5
    assert series.times_s[:4] == pytest.approx((0.1, 0.2, 0.5, 0.6))


def test_thread_is_named_and_gone_after_stop():
    s = CountingSampler(0.01)
    s.start()
    names = [t.name for t in sampler_threads()]
    assert len(names) == 1 and names[0].startswith("batchprof-sampler-counting-")
    s.stop()
    assert sampler_threads() == []


def test_start_and_stop_are_idempotent_and_restartable():
    s = CountingSampler(0.01)
    s.start()
    s.start()
    assert len(sampler_threads()) == 1 and s.opened == 1
    s.stop()
    s.stop()
    assert s.closed == 1 and not s.running
    with s:  # restart after stop
        assert s.running and s.opened == 2 and len(sampler_threads()) == 1
    assert s.closed == 2


def test_nvml_start_stop_balances_init_and_shutdown():
    fake = FakePynvml()
    s = nvml_sampler(fake, threaded=True)
    s.start()
    s.start()
    assert fake.calls["nvmlInit"] == 1
    s.stop()
    s.stop()
    assert fake.calls["nvmlShutdown"] == 1 and fake.initialized == 0


def test_window_key_errors_say_what_is_open():
    with CountingSampler(threaded=False) as s:
        s.begin_window("a")
        with pytest.raises(ValueError, match=r"no open sampling window 'b' \(open windows: 'a'\)"):
            s.end_window("b")
        with pytest.raises(ValueError, match="already open"):
            s.begin_window("a")
        s.end_window("a")
        with pytest.raises(ValueError, match="open windows: none"):
            s.end_window("a")


def test_stop_discards_open_windows_and_windows_need_a_started_sampler():
    s = CountingSampler(threaded=False)
    with pytest.raises(RuntimeError, match="not started"):
        s.begin_window("a")
    with s:
        s.begin_window("a")
    with pytest.raises(ValueError, match="discarded when the sampler stops"):
        s.end_window("a")


def test_thread_failure_surfaces_at_end_window():
    s = CountingSampler(0.001)

    def explode(n):
        raise OSError("sensor fell off")

    s.on_read = explode
    with s:
        s.begin_window("w")
        s._thread.join(10)  # the thread dies on its first read
        with pytest.raises(RuntimeError, match="sampler thread failed") as info:
            s.end_window("w")
        assert isinstance(info.value.__cause__, OSError)


@pytest.mark.parametrize("interval", [0, -1, float("nan"), float("inf"), "0.1"])
def test_interval_must_be_a_positive_number(interval):
    with pytest.raises(ValueError, match="interval_s"):
        CountingSampler(interval)


def test_make_sampler_kinds():
    assert isinstance(make_sampler("none"), NullSampler)
    assert isinstance(make_sampler("psutil", interval_s=0.5), PsutilSampler)
    with pytest.raises(ValueError, match="auto, nvml, psutil, none"):
        make_sampler("nvidia-smi")


def test_null_sampler_has_windows_but_no_series():
    with NullSampler() as s:
        s.begin_window(1)
        assert s.end_window(1) == ()
        with pytest.raises(ValueError):
            s.end_window(1)
    assert sampler_threads() == []


# ---- psutil, for real ---------------------------------------------------------------------------
@pytest.mark.timing
def test_psutil_sampler_samples_this_process_for_real():
    with PsutilSampler(0.05) as s:
        s.begin_window("busy")
        deadline = time.perf_counter() + 0.3  # ~0.3 s of real CPU work for it to observe
        while time.perf_counter() < deadline:
            sum(i * i for i in range(10_000))
        series = by_name(s.end_window("busy"))
    assert tuple(series) == ("cpu_pct", "rss_bytes", "system_available_bytes")
    assert len(series["rss_bytes"].values) >= 2
    assert all(v is not None and v > 0 for v in series["rss_bytes"].values)
    assert all(v is not None and v > 0 for v in series["system_available_bytes"].values)
    assert series["cpu_pct"].max > 0
    assert list(series["cpu_pct"].times_s) == sorted(series["cpu_pct"].times_s)


# ---- doctor's view -------------------------------------------------------------------------------
def test_query_system_lists_gpus_and_versions():
    fake = FakePynvml([FakeGpu(), FakeGpu(uuid="GPU-2", errors={"nvmlDeviceGetName": NVML_ERROR_NOT_SUPPORTED})])
    info = libnvml.query_system(nvml_module=fake)
    assert info.driver_version == "570.00"
    assert [g.uuid for g in info.gpus] == ["GPU-11111111-2222-3333-4444-555555555555", "GPU-2"]
    assert info.gpus[0].memory_total_bytes == 80 * 2**30 and info.gpus[1].name is None
    assert fake.initialized == 0
    with pytest.raises(SamplerUnavailable, match="NVML unavailable"):
        libnvml.query_system(nvml_module=FakePynvml(init_error=NVML_ERROR_LIBRARY_NOT_FOUND))
