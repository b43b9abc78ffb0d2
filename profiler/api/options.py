"""make_spec: profile()'s arguments -> one validated RunSpec, the only place they are parsed.

The CPU default budget is applied here and nowhere else; the CLI and the pytest plugin call
this (or pass the same arguments to ``profile``) and read what it decided from the spec.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from batchprof import defaults
from batchprof.errors import ConfigError
from batchprof.spec import RunSpec
from batchprof.units import parse_bytes, parse_duration

DEFAULT_CPU_MEMORY_LIMIT = defaults.CPU_MEMORY_LIMIT  # see batchprof.defaults


# RunSpec fields make_spec takes as they are; the other three it parses or decides.
_PASSED_THROUGH = frozenset(f.name for f in dataclasses.fields(RunSpec)) - {
    "device", "memory_limit_bytes", "time_budget_s"}


def make_spec(device: str = defaults.DEVICE, memory_limit: int | str | None = None, *,
              resolve: Callable[[str], str] | None = None,
              time_budget_s: float | str | None = defaults.TIME_BUDGET_S,
              **fields: Any) -> tuple[RunSpec, list[str]]:
    """The spec of a run, and notes on what was decided for the caller (the CPU default budget).

    ``memory_limit``: bytes or a string such as "2GiB". ``resolve(device)`` names the device a
    request means ("auto" -> "cpu" or "cuda"; None: the caller brings its own backend):
    without a limit on the CPU the default budget applies. ``time_budget_s`` (seconds, or
    "60s" / "2m"; None: unbounded) bounds the whole run. ``fields``: the other RunSpec fields
    by name (min_batch, max_batch, multiple_of, dataset_size, alpha, hint, use_prediction,
    knee, roofline, timing; None for timing means the default policy).
    Raises ConfigError naming the parameter for a bad or unknown value.
    """
    unknown = sorted(set(fields) - _PASSED_THROUGH)
    if unknown:
        raise ConfigError(f"unknown run option{'s' if len(unknown) > 1 else ''} "
                          f"{', '.join(unknown)}; expected some of "
                          f"{', '.join(sorted(_PASSED_THROUGH))}")
    if "timing" in fields and fields["timing"] is None:
        del fields["timing"]  # the default policy
    notes: list[str] = []
    limit = parse_bytes(memory_limit) if memory_limit is not None else None
    spec = RunSpec(device=device, memory_limit_bytes=limit,
                   time_budget_s=None if time_budget_s is None else parse_duration(time_budget_s),
                   **fields)
    if limit is None and resolve is not None and resolve(device) == "cpu":
        spec = dataclasses.replace(spec, memory_limit_bytes=parse_bytes(DEFAULT_CPU_MEMORY_LIMIT))
        notes.append(f"no memory limit given on the CPU: using the default budget "
                     f"{DEFAULT_CPU_MEMORY_LIMIT}")
    return spec, notes
