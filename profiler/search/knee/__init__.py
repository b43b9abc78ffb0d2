"""The throughput knee: points pooled per size, fitted, read with the alpha rule."""

from __future__ import annotations

from .find import find_knee

__all__ = ["find_knee"]
