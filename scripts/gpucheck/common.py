"""Helpers every part shares: the device under test, figures with units, fresh-process probes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

GOAL_ALLOCATED_PCT = 3.0  # issue 17: predicted vs measured allocated peak within 3%
GOAL_RESERVED_PCT = 5.0   # ... and reserved peak within 5%
GIB = 1024**3


def device(dry_run: bool) -> str:
    return "cpu" if dry_run else "cuda"


def quick_timing() -> Any:
    """One timed step: these parts check memory, not throughput."""
    import batchprof

    return batchprof.TimingPolicy(timed_steps=1, max_timed_steps=1, budget_s=0.0)


def pct_error(predicted: int | None, measured: int | None) -> float | None:
    """(predicted - measured) / measured in %, signed; None when either is missing."""
    if predicted is None or not measured:
        return None
    return round(100.0 * (predicted - measured) / measured, 3)


def within(error_pct: float | None, goal_pct: float) -> bool | None:
    return None if error_pct is None else abs(error_pct) <= goal_pct


def gpu_identity() -> dict[str, Any]:
    """Name, memory and datasheet entry of cuda:0 (call only where CUDA is present)."""
    import torch

    from . import lib

    props = torch.cuda.get_device_properties(0)
    spec = lib.datasheet(props.name, int(props.total_memory))
    return {"name": props.name, "total_bytes": int(props.total_memory),
            "compute_capability": [props.major, props.minor],
            "table_entry": spec.name if spec is not None else None,
            "datasheet_bandwidth_gbps": spec.bandwidth_gbps if spec is not None else None,
            "datasheet_bf16_flops": spec.flops("bf16") if spec is not None else None,
            "datasheet_tf32_flops": spec.flops("tf32") if spec is not None else None}


def measurement_figures(m: Any) -> dict[str, Any]:
    return {"batch_size": m.batch_size, "feasible": m.feasible, "reason": m.reason,
            "peak_allocated_bytes": m.peak_allocated_bytes,
            "peak_reserved_bytes": m.peak_reserved_bytes,
            "resident_bytes": m.resident_bytes, "activation_bytes": m.activation_bytes,
            "num_alloc_retries": m.num_alloc_retries, "wall_time_s": m.wall_time_s}


def measure_in_fresh_process(spec: dict[str, Any], batch_size: int, device_name: str,
                             memory_limit: str | None, timeout_s: float) -> dict[str, Any]:
    """batchprof.measure in a new Python process (its own CUDA context and allocator), so a
    verdict does not depend on what earlier probes left in this one."""
    args = [sys.executable, "-m", "gpucheck.part", "measure-one", json.dumps(spec),
            str(batch_size), device_name, memory_limit or ""]
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=max(1.0, timeout_s),
                              env=os.environ.copy())
    except subprocess.TimeoutExpired:
        return {"batch_size": batch_size, "error": f"timed out after {timeout_s:.0f} s"}
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        return {"batch_size": batch_size, "error": f"exit {done.returncode}: " + " | ".join(tail)}
    return json.loads(lines[-1])


def measure_one_main(argv: list[str]) -> int:
    """``python -m gpucheck.part measure-one SPEC B DEVICE LIMIT``: one probe, JSON on stdout."""
    import batchprof

    from .workloads import build

    spec, batch_size, device_name, limit = json.loads(argv[0]), int(argv[1]), argv[2], argv[3]
    m = batchprof.measure(build(spec), batch_size, device=device_name,
                          memory_limit=limit or None, timing=quick_timing())
    print(json.dumps(measurement_figures(m)))
    return 0
