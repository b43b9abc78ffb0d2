"""batchprof's Triton kernels: device-ceiling probes and a memory touch.

- ``stream_copy`` / ``stream_triad``: memory bandwidth (copy, STREAM triad ``a = b + s·c``)
- ``tiled_matmul``: matmul FLOP/s (float32, float16, bfloat16 where supported)
- ``touch_buffer`` / ``touch_memory``: fill memory with a pattern and count what reads back wrong
- ``torch.ops.batchprof.{copy, triad, matmul, fill_pattern, count_pattern_mismatches}``: the
  same kernels as custom ops with fake implementations, traceable on the meta device
- ``reference``: plain-torch versions, the test oracle and the CPU path of ``batchprof.ceilings``

Importing this package registers the custom ops but does not import Triton: the kernel functions
are loaded on first use (PEP 562), and ``kernel_mode()`` says whether they run compiled on CUDA,
interpreted on the CPU (``TRITON_INTERPRET=1``, set for you when there is no CUDA), or not at all.
"""

from __future__ import annotations

import importlib
from typing import Any

from ._env import prepare_environment

prepare_environment()  # before ops: calling an op may import Triton (see _env)

from . import ops  # noqa: E402 - registers torch.ops.batchprof.*; imports torch only

# public name -> submodule defining it; resolved on first attribute access.
_LAZY = {
    "stream_copy": "copy", "stream_triad": "copy", "launch_copy": "copy", "launch_triad": "copy",
    "tiled_matmul": "matmul", "launch_matmul": "matmul",
    "touch_buffer": "touch", "touch_memory": "touch", "launch_fill_pattern": "touch",
    "launch_count_pattern_mismatches": "touch",
    "kernel_mode": "_triton", "is_interpreted": "_triton", "unavailable_reason": "_triton",
}

__all__ = ["ops", *_LAZY]


def __getattr__(name: str) -> Any:
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module_name}"), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
