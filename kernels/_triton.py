"""The one place that imports Triton, so that everything else can ask what kernels can do here.

Importing this module decides, once per process, how the kernels in this package run:

- ``"compiled"``: Triton is installed, ``TRITON_INTERPRET`` is off and CUDA is present; kernels are
  JIT-compiled for the GPU and launch on CUDA tensors.
- ``"interpreted"``: ``TRITON_INTERPRET=1``; kernels run in Triton's numpy interpreter on CPU
  tensors (slow, exact enough for tests, never a performance figure). When there is no CUDA and
  the user has not set ``TRITON_INTERPRET`` at all, we set it to ``1`` *before* importing Triton,
  because ``triton.jit`` reads it when each kernel is defined.
- ``"unavailable"``: Triton is not installed, or the interpreter was switched off on a machine
  without CUDA. Kernel modules still import (their kernels become placeholders); calling a kernel
  raises DeviceUnavailableError saying what to install or set.

Only kernels/*.py import this module, and only ``batchprof.kernels``' lazy attributes import
those, so ``import batchprof.kernels`` never imports Triton.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, Literal

import torch

from ..errors import DeviceUnavailableError
from ._env import INTERPRET_ENV as _INTERPRET_ENV
from ._env import prepare_environment

KernelMode = Literal["compiled", "interpreted", "unavailable"]

_TRUTHY = {"1", "true", "on", "yes"}  # the spellings triton.knobs' env_bool accepts


def _interpret_requested() -> bool:
    return os.environ.get(_INTERPRET_ENV, "").strip().lower() in _TRUTHY


# Already done by the package's __init__; repeated for direct imports of this module.
prepare_environment()

try:
    import triton
    import triton.language as tl
except Exception as exc:  # noqa: BLE001 - missing (ImportError) or broken: report at call time
    triton = None  # type: ignore[assignment]
    tl = None  # type: ignore[assignment]
    _IMPORT_ERROR: Exception | None = exc
else:
    _IMPORT_ERROR = None


def _decide_mode() -> KernelMode:
    if triton is None:
        return "unavailable"
    if _interpret_requested():
        return "interpreted"
    return "compiled" if torch.cuda.is_available() else "unavailable"


KERNEL_MODE: KernelMode = _decide_mode()


def kernel_mode() -> KernelMode:
    """How this process runs the Triton kernels: "compiled", "interpreted" or "unavailable"."""
    return KERNEL_MODE


def is_interpreted() -> bool:
    """True when kernels run in Triton's CPU interpreter (``TRITON_INTERPRET=1``)."""
    return KERNEL_MODE == "interpreted"


def unavailable_reason() -> str | None:
    """Why kernels cannot run here, as advice a user can act on; None when they can."""
    if KERNEL_MODE != "unavailable":
        return None
    if triton is None:
        return (f"Triton could not be imported ({type(_IMPORT_ERROR).__name__}: {_IMPORT_ERROR}); "
                "install it with `pip install triton` (Linux only) to run batchprof's kernels")
    return (f"{_INTERPRET_ENV}={os.environ.get(_INTERPRET_ENV)!r} switches Triton's CPU interpreter "
            "off and this machine has no CUDA device; unset it or set it to 1 before importing "
            "batchprof.kernels to run the kernels on the CPU")


def require_kernels(op_name: str) -> None:
    """Raise DeviceUnavailableError naming ``op_name`` when no kernel can run in this process."""
    reason = unavailable_reason()
    if reason is not None:
        raise DeviceUnavailableError(f"batchprof kernel {op_name!r} cannot run: {reason}")


class _MissingKernel:
    """Stands in for a ``@triton.jit`` kernel when Triton is absent; launching it raises."""

    def __init__(self, fn: Callable[..., Any]):
        self.fn = fn
        self.__name__ = getattr(fn, "__name__", "kernel")

    def __getitem__(self, grid: Any) -> Callable[..., Any]:
        raise DeviceUnavailableError(
            f"Triton kernel {self.__name__!r} cannot run: {unavailable_reason()}")


def jit(fn: Callable[..., Any]) -> Any:
    """``triton.jit`` when Triton imported, else a placeholder that raises when launched."""
    if triton is None:
        return _MissingKernel(fn)
    return triton.jit(fn)


def validate_launch(op_name: str, tensors: dict[str, torch.Tensor]) -> torch.device:
    """Check that the named tensors can be handed to a Triton kernel here; return their device.

    Raises ValueError for a non-tensor, a meta tensor (no memory to launch on: trace through
    ``torch.ops.batchprof.<op>`` instead, which has a fake implementation), mixed devices, or
    a device this mode cannot launch on; DeviceUnavailableError when no kernel can run at all.
    """
    require_kernels(op_name)
    devices = set()
    for name, tensor in tensors.items():
        if not isinstance(tensor, torch.Tensor):
            raise ValueError(f"{op_name}: {name} must be a torch.Tensor, got {type(tensor).__name__}")
        if tensor.device.type == "meta":
            raise ValueError(
                f"{op_name}: {name} is a meta tensor; a raw Triton launch needs real memory. "
                f"To trace on the meta device call torch.ops.batchprof.{op_name}, which has a "
                "fake (meta) implementation")
        devices.add(tensor.device)
    if len(devices) > 1:
        found = ", ".join(f"{n}={t.device}" for n, t in tensors.items())
        raise ValueError(f"{op_name}: all tensors must be on one device, got {found}")
    (device,) = devices
    allowed = {"cpu", "cuda"} if KERNEL_MODE == "interpreted" else {"cuda"}
    if device.type not in allowed:
        hint = ("compiled Triton kernels launch on CUDA tensors; set TRITON_INTERPRET=1 before "
                "importing batchprof.kernels to run them on the CPU"
                if device.type == "cpu" else "Triton kernels launch on CUDA (or CPU when interpreted)")
        raise ValueError(f"{op_name}: tensors are on {device}, which this {KERNEL_MODE} mode "
                         f"cannot launch on; {hint}")
    return device


def validate_block_size(op_name: str, block_size: int) -> None:
    """``tl.arange`` needs a power-of-two extent; say so before Triton fails more obscurely."""
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1 \
            or block_size & (block_size - 1):
        raise ValueError(f"{op_name}: block_size must be a positive power of two, got {block_size!r}")
