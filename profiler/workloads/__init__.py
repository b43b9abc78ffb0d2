"""Built-in workloads: small enough for a 2-core CPU, shaped like the real thing.

Each module exposes ``workload() -> Workload``. Sizes are chosen so one training step at batch 32
takes well under a second on 2 CPU cores; tags record the shapes so reports can show them.
"""

from __future__ import annotations

from collections.abc import Callable

from ..workload import Workload
from . import cnn, lstm, mlp, transformer

BUILTINS: dict[str, Callable[[], Workload]] = {
    "mlp": mlp.workload,
    "cnn": cnn.workload,
    "transformer": transformer.workload,
    "lstm": lstm.workload,
}
DEFAULT_WORKLOAD = "transformer"
