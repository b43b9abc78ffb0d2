"""The kit's only door into batchprof beyond its public API, one function per need.

Everything here goes through ``import batchprof`` public names, except the few marked
NOT PUBLIC below: those are the lines to fix if batchprof's package layout changes.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]  # the working tree (scripts/gpucheck/ is two down)


def pyproject_text() -> str:
    return (ROOT / "pyproject.toml").read_text()


def _entry(section: str, name: str) -> str:
    """``name = "module:attr"`` from a [section] of pyproject.toml (tomllib where present)."""
    try:
        import tomllib  # Python 3.11+

        data: Any = tomllib.loads(pyproject_text())
        for key in section.split("."):
            data = data[key]
        return str(data[name])
    except ModuleNotFoundError:  # Python 3.10: the one line is enough
        block = pyproject_text().split(f"[{section}]", 1)[1].split("\n[", 1)[0]
        match = re.search(rf'^{re.escape(name)}\s*=\s*"([^"]+)"', block, re.M)
        if match is None:
            raise KeyError(f"{name} not found in [{section}] of pyproject.toml") from None
        return match.group(1)


def cli_command(python: str) -> list[str]:
    """argv prefix running the ``batchprof`` console script exactly as pip would install it
    (the entry point named in pyproject.toml), without needing the script on PATH."""
    module, _, attr = _entry("project.scripts", "batchprof").partition(":")
    return [python, "-c", f"import sys, importlib; sys.exit(importlib.import_module("
                          f"{module!r}).{attr}())"]


def pytest_plugin_module() -> str:
    """The pytest plugin module pyproject registers (needed with -p when pip did not install)."""
    return _entry("project.entry-points.pytest11", "batchprof")


def make_sampler(kind: str, interval_s: float) -> Any:
    # NOT PUBLIC: batchprof.sampling.make_sampler (no top-level name for samplers yet).
    from batchprof.sampling import make_sampler as factory

    return factory(kind, interval_s=interval_s)


def datasheet(device_name: str, total_bytes: int) -> Any:
    """The GPU table's entry for this card (bandwidth_gbps, dense_flops) or None."""
    # NOT PUBLIC: batchprof.gpus.match_gpu (the GPU table has no top-level name yet).
    from batchprof.gpus import match_gpu

    return match_gpu(device_name, total_bytes)
