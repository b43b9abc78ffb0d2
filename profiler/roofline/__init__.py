"""The roofline: device ceilings (ceilings), a step's FLOPs and bytes (costs), and where each
measured batch lands (efficiency)."""

from __future__ import annotations
