"""One part of the check, run in its own process by the driver (``python -m gpucheck.part``).

``python -m gpucheck.part NAME RESULT_JSON --budget-s S [--dry-run]`` runs part NAME and keeps
RESULT_JSON up to date as it goes; ``python -m gpucheck.part measure-one ...`` is one probe in a
fresh process (common.measure_in_fresh_process). Exit code 0 unless the part crashed.
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable
from pathlib import Path

from . import common, device_parts, memory_parts
from .record import Recorder

# name -> the part; the order and time boxes are plan.PART_BUDGETS_S (tests check they agree).
PARTS: dict[str, Callable[[Recorder], None]] = {
    "pytest-gpu": device_parts.pytest_gpu,
    "predict-builtins": functools.partial(memory_parts.predictions, which="builtins"),
    "predict-gpt2": functools.partial(memory_parts.predictions, which="gpt2"),
    "predict-timm": functools.partial(memory_parts.predictions, which="timm"),
    "run-exhaustive": memory_parts.run_exhaustive,
    "oom-recovery": memory_parts.oom_recovery,
    "nvml": device_parts.nvml,
    "triton": device_parts.triton,
    "gpt2-max-batch": memory_parts.gpt2_max_batch,
    "triton-fp32": functools.partial(device_parts.triton, dtypes=("float32",), bandwidth=False),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "measure-one":
        return common.measure_one_main(argv[1:])
    parser = argparse.ArgumentParser(prog="gpucheck.part")
    parser.add_argument("name", choices=sorted(PARTS))
    parser.add_argument("result", type=Path)
    parser.add_argument("--budget-s", type=float, required=True)
    parser.add_argument("--dry-run", action="store_true")
    args = parser.parse_args(argv)
    rec = Recorder(args.name, args.result, args.budget_s, args.dry_run)
    try:
        PARTS[args.name](rec)
    except Exception as exc:  # noqa: BLE001 - reported with its message, never lost
        rec.crash(exc)
        return 1
    rec.finish()
    return 0


if __name__ == "__main__":
    sys.exit(main())
