"""The public entry points that wire workloads, backends, probes and searches together."""

from __future__ import annotations

from .options import DEFAULT_CPU_MEMORY_LIMIT, make_spec
from .profiling import profile

__all__ = ["DEFAULT_CPU_MEMORY_LIMIT", "make_spec", "profile"]
