"""What this machine is, as plain data: versions, devices, and what batchprof will do here.

:func:`environment` returns a JSON-able dict that the report writer stores in results.json and
``batchprof doctor`` shows. Nothing here prints. A figure that cannot be had is None, and each
unavailable part carries a one-line ``reason`` a person can act on.

Side effects, both the ones batchprof itself has when it runs: NVML is initialised and shut
down again; with ``kernels=True``, ``batchprof.kernels._triton`` is imported, which imports
Triton and, on a machine without CUDA where the user has not set ``TRITON_INTERPRET``, sets it
to 1 for this process (the kernels then run in Triton's interpreter).
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import os
import platform
import warnings
from typing import Any

import torch

from . import __version__
from .backends import device_notice, resolve_device

# Variables that change what batchprof measures or how; recorded as the user set them.
ENV_VARS = ("CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER", "PYTORCH_CUDA_ALLOC_CONF",
            "PYTORCH_ALLOC_CONF", "PYTORCH_NO_CUDA_MEMORY_CACHING", "CUBLAS_WORKSPACE_CONFIG",
            "TRITON_INTERPRET")
_DISTRIBUTIONS = ("torch", "triton", "nvidia-ml-py", "psutil", "numpy")


def _dist_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cuda_unavailable_reason(caught: list[warnings.WarningMessage]) -> str:
    if torch.version.cuda is None and torch.version.hip is None:
        return (f"this torch build ({torch.__version__}) has no CUDA support; install a CUDA "
                "build of torch to profile on a GPU")
    if caught:  # torch says why (e.g. "The NVIDIA driver on your system is too old")
        return str(caught[0].message).strip().splitlines()[0]
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1", "none", "NoDevFiles"):
        return f"CUDA_VISIBLE_DEVICES={visible!r} hides every GPU from this process"
    return "torch found no CUDA device (no NVIDIA GPU, or its driver is not loaded)"


def cuda_info() -> dict[str, Any]:
    """torch's view of CUDA: availability (with the reason when absent) and each device."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        available = torch.cuda.is_available()
    devices = []
    if available:
        for index in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(index)
            devices.append({
                "index": index,
                "name": props.name,
                "total_memory_bytes": int(props.total_memory),
                "compute_capability": [props.major, props.minor],
                "multiprocessor_count": props.multi_processor_count,
            })
    return {
        "available": available,
        "reason": None if available else _cuda_unavailable_reason(list(caught)),
        "torch_cuda_build": torch.version.cuda,
        "cudnn_version": torch.backends.cudnn.version() if available else None,
        "allocator_backend": torch.cuda.get_allocator_backend() if available else None,
        "devices": devices,
    }


def nvml_info(nvml_module: Any = None) -> dict[str, Any]:
    """The driver as NVML reports it; ``available`` False with the reason when it cannot."""
    from .sampling import libnvml
    from .sampling.base import SamplerUnavailable

    try:
        info = libnvml.query_system(nvml_module)
    except SamplerUnavailable as err:
        return {"available": False, "reason": err.reason, "driver_version": None,
                "nvml_version": None, "gpus": []}
    return {"available": True, "reason": None, "driver_version": info.driver_version,
            "nvml_version": info.nvml_version,
            "gpus": [dataclasses.asdict(gpu) for gpu in info.gpus]}


def kernels_info(load: bool = True) -> dict[str, Any]:
    """How batchprof's Triton kernels run here: "compiled", "interpreted" or "unavailable"."""
    if not load:
        return {"mode": None, "reason": "not checked (kernels=False)"}
    try:
        from .kernels import _triton
    except Exception as err:  # noqa: BLE001 - a broken Triton install must not break doctor
        return {"mode": "unavailable", "reason": f"importing Triton failed: {err!r}"}
    return {"mode": _triton.kernel_mode(), "reason": _triton.unavailable_reason()}


def default_plan(cuda: dict[str, Any], nvml_module: Any = None) -> dict[str, Any]:
    """What ``--device auto`` and ``--sampler auto`` resolve to on this machine, and why."""
    from .sampling.factory import auto_kind

    device = resolve_device("auto")
    if device == "cuda" and cuda["devices"]:
        device = f"cuda:{torch.cuda.current_device()}"
    # What make_sampler("auto") picks: NVML for CUDA ordinal 0, else psutil.
    sampler, reason = auto_kind(0, nvml_module=nvml_module)
    return {
        "device": device,
        "device_notice": device_notice("auto", resolve_device("auto")),
        "sampler": sampler,
        "sampler_reason": reason,  # the GPU NVML samples, or why it cannot
    }


def environment(*, nvml_module: Any = None, kernels: bool = True) -> dict[str, Any]:
    """Versions, devices and defaults as plain data (see the module docstring for the keys'
    side effects). ``nvml_module`` replaces ``pynvml`` (tests pass a fake)."""
    env = {name: os.environ.get(name) for name in ENV_VARS}  # before Triton may set one
    cuda = cuda_info()
    versions = {"batchprof": __version__, "python": platform.python_version()}
    versions.update({name: _dist_version(name) for name in _DISTRIBUTIONS})
    versions["torch"] = torch.__version__  # the running one, with its +cuXYZ/+cpu tag
    return {
        "versions": versions,
        "platform": platform.platform(),
        "cuda": cuda,
        "nvml": nvml_info(nvml_module),
        "kernels": kernels_info(kernels),
        "defaults": default_plan(cuda, nvml_module),
        "env": env,
    }
