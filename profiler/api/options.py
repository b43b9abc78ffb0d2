"""make_spec: profile()'s arguments -> one validated RunSpec, the only place they are parsed.

The CPU default budget is applied here and nowhere else; the CLI and the pytest plugin call
this (or pass the same arguments to ``profile``) and read what it decided from the spec.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from batchprof import defaults
from batchprof.spec import RunSpec, TimingPolicy
from batchprof.units import parse_bytes, parse_duration

DEFAULT_CPU_MEMORY_LIMIT = defaults.CPU_MEMORY_LIMIT  # see batchprof.defaults


def make_spec(device: str = defaults.DEVICE, memory_limit: int | str | None = None, *,
              min_batch: int = 1, max_batch: int | None = None, multiple_of: int = 1,
              dataset_size: int | None = None, alpha: float = defaults.ALPHA,
              hint: int | None = None, use_prediction: bool = True, knee: bool = True,
              roofline: bool = defaults.ROOFLINE, timing: TimingPolicy | None = None,
              resolve: Callable[[str], str] | None = None,
              time_budget_s: float | str | None = defaults.TIME_BUDGET_S,
              ) -> tuple[RunSpec, list[str]]:
    """The spec of a run, and notes on what was decided for the caller (the CPU default budget).

    ``resolve(device)`` names the device a request means ("auto" -> "cpu" or "cuda"; None: the
    caller brings its own backend): without a limit on the CPU the default budget applies.
    ``time_budget_s`` (seconds, or "60s" / "2m"; None: unbounded) bounds the whole run.
    Raises ConfigError naming the parameter for a bad value.
    """
    notes: list[str] = []
    limit = parse_bytes(memory_limit) if memory_limit is not None else None
    spec = RunSpec(device=device, memory_limit_bytes=limit, min_batch=min_batch,
                   max_batch=max_batch, multiple_of=multiple_of, dataset_size=dataset_size,
                   alpha=alpha, hint=hint, use_prediction=use_prediction, knee=knee,
                   roofline=roofline, timing=timing or TimingPolicy(),
                   time_budget_s=None if time_budget_s is None else parse_duration(time_budget_s))
    if limit is None and resolve is not None and resolve(device) == "cpu":
        spec = dataclasses.replace(spec, memory_limit_bytes=parse_bytes(DEFAULT_CPU_MEMORY_LIMIT))
        notes.append(f"no memory limit given on the CPU: using the default budget "
                     f"{DEFAULT_CPU_MEMORY_LIMIT}")
    return spec, notes
