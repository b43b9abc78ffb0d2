"""The ``batchprof`` command: one module per subcommand, each a thin layer over the public API."""

from __future__ import annotations

from .main import main

__all__ = ["main"]
