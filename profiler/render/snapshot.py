"""Writing a CPU memory timeline to disk (``torch.profiler``'s export)."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch


def export_cpu_timeline(prof: torch.profiler.profile, path: Path, suffix: str) -> None:
    figures_before: set[int] = set()
    if suffix == ".html":
        import matplotlib.pyplot as plt

        figures_before = set(plt.get_fignums())
    with warnings.catch_warnings():
        # Deprecated in favour of the CUDA allocator history, which has no CPU counterpart.
        warnings.simplefilter("ignore", FutureWarning)
        prof.export_memory_timeline(str(path), device="cpu")
    if suffix == ".html":
        for number in set(plt.get_fignums()) - figures_before:  # torch leaves its figure open
            plt.close(number)
