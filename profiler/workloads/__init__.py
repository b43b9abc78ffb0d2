"""Workloads: what to profile (:class:`Workload`), the built-ins, and lookup by name.

Each built-in module exposes ``workload() -> Workload``. Sizes are chosen so one training step at
batch 32 takes well under a second on 2 CPU cores; tags record the shapes so reports can show them.
"""

from __future__ import annotations

from .base import Workload
from .registry import BUILTINS, DEFAULT_WORKLOAD, builtin_names, load_workload

__all__ = ["BUILTINS", "DEFAULT_WORKLOAD", "Workload", "builtin_names", "load_workload"]
