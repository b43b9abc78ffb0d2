"""CUDA terms outside a traced event list: the cuBLAS workspaces (inside PyTorch's allocator,
replayed as resident allocations), the CUDA context (outside it: it lowers the usable capacity),
and the ``PYTORCH_CUDA_ALLOC_CONF`` options the caching-allocator model (allocators.py) does not
follow. See ``CudaOverheads``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

from ..errors import ConfigError
from ..gpus import GpuSpec
from .allocators import KiB

# PyTorch's default CUBLAS_WORKSPACE_CONFIG ":4096:2:16:8": 2 x 4096 KiB + 8 x 16 KiB.
DEFAULT_CUBLAS_WORKSPACE_BYTES = 4096 * KiB * 2 + 16 * KiB * 8  # 8,519,680
HOPPER_CUBLAS_WORKSPACE_BYTES = 4096 * KiB * 8  # 32 MiB (":4096:8")
_WORKSPACE_PAIR = re.compile(r":([0-9]+):([0-9]+)")


def cublas_workspace_bytes(
    compute_capability: tuple[int, int], env: Mapping[str, str] | None = None
) -> int:
    """Bytes of one cuBLAS workspace as PyTorch sizes it (aten/src/ATen/cuda/CublasHandlePool.cpp).

    ``CUBLAS_WORKSPACE_CONFIG`` (from ``env``, default ``os.environ``) is a list of
    ``:SIZE_KiB:COUNT`` pairs summed as SIZE * 1024 * COUNT; when it is unset, or has no such
    pair (PyTorch warns and falls back), the default is 8,519,680 bytes, or 32 MiB on Hopper
    (compute capability 9.x). Some recent PyTorch versions also use 32 MiB on Blackwell (10.x,
    12.x) and others reverted that; pass the env var to pin it. ``torch.backends.cuda.
    cublas_workspace_size(n)`` set in the program overrides both and is not visible here.
    """
    env = os.environ if env is None else env
    config = env.get("CUBLAS_WORKSPACE_CONFIG")
    if config:
        pairs = _WORKSPACE_PAIR.findall(config)
        if pairs:
            return sum(int(size) * KiB * int(count) for size, count in pairs)
    if compute_capability[0] == 9:
        return HOPPER_CUBLAS_WORKSPACE_BYTES
    return DEFAULT_CUBLAS_WORKSPACE_BYTES


@dataclass(frozen=True)
class CudaOverheads:
    """Bytes a CUDA training step needs that no meta-device trace sees.

    Two different kinds, kept apart on purpose:

    - **cuBLAS workspaces are inside PyTorch's allocator.** Since PyTorch 2.0 each workspace is
      a ``CUDACachingAllocator`` allocation (``getNewWorkspace``), made lazily at the first
      cuBLAS call of a thread on a stream and kept for the process's life; so they count in
      ``max_memory_allocated()``/``max_memory_reserved()`` and belong in the replay as
      resident allocations (``workspace_allocations()``, category ``workspace``). cuBLASLt
      shares the cuBLAS workspace by default in open-source builds
      (TORCH_CUBLASLT_UNIFIED_WORKSPACE unset), so it adds nothing. Workspaces are per thread
      (per handle): the forward runs on the Python thread, the backward on the autograd
      engine's CUDA device thread, so a training step holds ``cublas_workspace_count = 2``
      (an inference-only or forward-only workload holds 1).
    - **The CUDA context is outside it.** Driver context, loaded kernel modules, cuDNN/cuBLAS
      handles: memory that ``nvidia-smi`` shows but ``max_memory_allocated()`` never counts.
      It does not raise the predicted peak; it lowers the capacity the peak must fit in
      (``usable_capacity_bytes``). ``context_bytes`` is an *estimate* (it varies with driver,
      CUDA version, lazy module loading and which libraries the step touches); override it
      with a measured value (``torch.cuda.mem_get_info`` vs ``memory_reserved``) when known.
    """

    cublas_workspace_bytes: int = DEFAULT_CUBLAS_WORKSPACE_BYTES
    cublas_workspace_count: int = 2
    context_bytes: int = 0

    def __post_init__(self) -> None:
        for name in ("cublas_workspace_bytes", "cublas_workspace_count", "context_bytes"):
            if getattr(self, name) < 0:
                raise ConfigError(f"CudaOverheads.{name} must be >= 0, got {getattr(self, name)}")

    @classmethod
    def for_gpu(
        cls,
        gpu: GpuSpec,
        *,
        env: Mapping[str, str] | None = None,
        cublas_workspace_count: int = 2,
        context_bytes: int | None = None,
    ) -> CudaOverheads:
        """Defaults for ``gpu``: its cuBLAS workspace size and its context estimate."""
        return cls(
            cublas_workspace_bytes=cublas_workspace_bytes(gpu.compute_capability, env),
            cublas_workspace_count=cublas_workspace_count,
            context_bytes=gpu.context_overhead_bytes_estimate if context_bytes is None
            else context_bytes,
        )

    def workspace_allocations(self) -> tuple[int, ...]:
        """Request sizes to allocate through the allocator model before the traced events."""
        if self.cublas_workspace_bytes == 0:
            return ()
        return (self.cublas_workspace_bytes,) * self.cublas_workspace_count

    def usable_capacity_bytes(self, total_memory_bytes: int) -> int:
        """What the caching allocator can reserve on a device of ``total_memory_bytes``."""
        return max(0, total_memory_bytes - self.context_bytes)


_ALLOC_CONF_DEFAULTS = {
    "expandable_segments": "false",
    "max_split_size_mb": None,
    "roundup_power2_divisions": None,
    "garbage_collection_threshold": None,
}


def unmodelled_alloc_conf(env: Mapping[str, str] | None = None) -> list[str]:
    """Options in PYTORCH_CUDA_ALLOC_CONF / PYTORCH_ALLOC_CONF this model ignores (non-default).

    A caller can warn that the CUDA prediction assumes defaults when this is not empty.
    ``backend:cudaMallocAsync`` is reported too: that is a different allocator altogether.
    """
    env = os.environ if env is None else env
    found: list[str] = []
    for var in ("PYTORCH_CUDA_ALLOC_CONF", "PYTORCH_ALLOC_CONF"):
        for item in filter(None, (s.strip() for s in env.get(var, "").split(","))):
            key, _, value = item.partition(":")
            key, value = key.strip(), value.strip().lower()
            if key == "backend" and value != "native":
                found.append(item)
            elif key in _ALLOC_CONF_DEFAULTS and value != _ALLOC_CONF_DEFAULTS[key]:
                found.append(item)
    return found
