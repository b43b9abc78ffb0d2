"""`batchprof doctor` and environment(): for real on this machine (no CUDA, no NVML), and with
a fake pynvml / fake torch.cuda answers (the hardware seams) for machines we do not have."""

from __future__ import annotations

import io
import json
import warnings
from types import SimpleNamespace

import pytest
import torch
from rich.console import Console

from batchprof import environment as environment_module
from batchprof.cli.main import main
from batchprof.environment import cuda_info, environment, kernels_info
from batchprof.render.doctor import doctor_renderables

from .fake_pynvml import NVML_ERROR_LIBRARY_NOT_FOUND, FakeGpu, FakePynvml

no_cuda_here = pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is present")
GiB = 2**30


def render(env: dict) -> str:
    out = io.StringIO()
    console = Console(file=out, width=200, color_system=None)
    for renderable in doctor_renderables(env):
        console.print(renderable)
    return out.getvalue()


@no_cuda_here
def test_doctor_json_reports_the_cpu_fallback(capsys):
    assert main(["doctor", "--json"]) == 0
    env = json.loads(capsys.readouterr().out)
    assert env["defaults"]["device"] == "cpu"
    assert env["defaults"]["device_notice"] == "no CUDA device found; running on the CPU"
    assert env["cuda"]["available"] is False and env["cuda"]["reason"]
    assert env["cuda"]["devices"] == [] and env["cuda"]["cudnn_version"] is None
    assert env["versions"]["torch"] == torch.__version__
    assert env["kernels"]["mode"] in ("compiled", "interpreted", "unavailable")
    if not env["nvml"]["available"]:  # this machine: no NVIDIA driver
        assert env["nvml"]["reason"] and env["nvml"]["driver_version"] is None
        assert env["defaults"]["sampler"] == "psutil"


@no_cuda_here
def test_doctor_text(capsys):
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert "batchprof doctor" in out and torch.__version__ in out
    assert "no CUDA device found; running on the CPU" in out
    assert "Triton kernels" in out


def test_gpus_seen_by_nvml_only(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    fake = FakePynvml([FakeGpu(), FakeGpu(uuid="GPU-2", name="NVIDIA Fake A100",
                                          memory_total=40 * GiB)], driver_version="570.86")
    env = environment(nvml_module=fake, kernels=False)
    assert env["nvml"]["available"] and env["nvml"]["driver_version"] == "570.86"
    assert [g["memory_total_bytes"] for g in env["nvml"]["gpus"]] == [80 * GiB, 40 * GiB]
    assert env["defaults"]["sampler"] == "nvml"
    assert fake.initialized == 0  # NVML shut down again
    text = render(env)
    assert "NVIDIA Fake A100" in text and "40.00 GiB" in text and "NVML only" in text
    assert "570.86" in text


def test_nvml_library_missing_is_a_reason_not_a_crash(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    fake = FakePynvml(init_error=NVML_ERROR_LIBRARY_NOT_FOUND)
    env = environment(nvml_module=fake, kernels=False)
    assert not env["nvml"]["available"] and "libnvidia-ml.so.1" in env["nvml"]["reason"]
    assert env["defaults"]["sampler"] == "psutil"
    assert "libnvidia-ml.so.1" in env["defaults"]["sampler_reason"]
    assert "NVML unavailable, see NVIDIA driver above" in render(env)


def fake_cuda_torch(monkeypatch, warns: str | None = None, available: bool = True):
    def is_available():
        if warns:
            warnings.warn(warns, UserWarning, stacklevel=1)
        return available

    monkeypatch.setattr(torch.cuda, "is_available", is_available)
    monkeypatch.setattr(torch.version, "cuda", "12.8")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_allocator_backend", lambda: "native")
    monkeypatch.setattr(torch.backends.cudnn, "version", lambda: 91002)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: SimpleNamespace(
        name="NVIDIA H100 80GB HBM3", total_memory=85_045_870_592, major=9, minor=0,
        multi_processor_count=132))


def test_a_cuda_machine(monkeypatch):
    fake_cuda_torch(monkeypatch)
    env = environment(nvml_module=FakePynvml(), kernels=False)
    assert env["defaults"]["device"] == "cuda:0" and env["defaults"]["device_notice"] is None
    (device,) = env["cuda"]["devices"]
    assert device["compute_capability"] == [9, 0] and device["total_memory_bytes"] == 85_045_870_592
    assert env["cuda"]["allocator_backend"] == "native"
    text = render(env)
    assert "cuda:0" in text and "NVIDIA H100 80GB HBM3" in text and "9.0" in text
    assert "79.21 GiB" in text and "91002" in text


def test_cuda_build_without_a_usable_driver_says_why(monkeypatch):
    fake_cuda_torch(monkeypatch, available=False,
                    warns="CUDA initialization: The NVIDIA driver on your system is too old")
    info = cuda_info()
    assert not info["available"] and "driver on your system is too old" in info["reason"]


def test_hidden_gpus_say_so(monkeypatch):
    fake_cuda_torch(monkeypatch, available=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert "hides every GPU" in cuda_info()["reason"]


def test_env_is_recorded_as_the_user_set_it(monkeypatch):
    monkeypatch.setenv("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    env = environment(nvml_module=FakePynvml(init_error=NVML_ERROR_LIBRARY_NOT_FOUND),
                      kernels=False)
    assert env["env"]["PYTORCH_CUDA_ALLOC_CONF"] == "expandable_segments:True"
    assert set(env["env"]) == set(environment_module.ENV_VARS)
    json.dumps(env)  # plain data all the way down


def test_kernels_not_checked_is_none_not_a_guess():
    assert kernels_info(load=False)["mode"] is None


def test_a_broken_triton_install_is_reported(monkeypatch):
    import sys

    import batchprof.kernels

    monkeypatch.setitem(sys.modules, "batchprof.kernels._triton", None)  # import fails
    monkeypatch.delattr(batchprof.kernels, "_triton", raising=False)
    info = kernels_info()
    assert info["mode"] == "unavailable" and "importing Triton failed" in info["reason"]
