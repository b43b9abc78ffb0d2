"""Choose Triton's interpreter before anything can import Triton.

``triton.jit`` reads ``TRITON_INTERPRET`` when each function is decorated, including Triton's
own ``triton.language`` helpers (``tl.cdiv``...). Calling a custom op imports torch._dynamo,
which may import Triton, before our kernel modules load; so the variable must be set when
``batchprof.kernels`` is imported, not when a kernel first runs. Imports torch only.
"""

from __future__ import annotations

import os

import torch

INTERPRET_ENV = "TRITON_INTERPRET"


def prepare_environment() -> None:
    """Set TRITON_INTERPRET=1 when there is no CUDA and the user set nothing (even "0" is
    respected)."""
    if INTERPRET_ENV not in os.environ and not torch.cuda.is_available():
        os.environ[INTERPRET_ENV] = "1"
