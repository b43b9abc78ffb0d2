"""``batchprof plan``: which GPU fits which batch, from a machine without those GPUs.

For each GPU: the predicted max batch (peak reserved bytes within the usable memory: total
minus an estimated CUDA context), the predicted peak at that batch, and the GPU's memory,
bandwidth and dense FLOP/s per dtype (batchprof.gpus, vendor datasheets).
"""

from __future__ import annotations

import argparse
import json

from batchprof import defaults
from batchprof.cli.args import add_json_argument, add_workload_argument, workload_ref
from batchprof.cli.predict import add_what_if_argument
from batchprof.errors import ConfigError

from . import parallel

DEFAULT_WORKLOAD = defaults.WORKLOAD
DEFAULT_GPUS = defaults.PLAN_GPUS


def parse_gpu_names(text: str) -> list[str]:
    names = [n.strip() for n in str(text).split(",") if n.strip()]
    if not names:
        raise ConfigError(f"--gpus must name at least one GPU, e.g. {DEFAULT_GPUS}; got {text!r}")
    return names


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "plan", help="predicted max batch per GPU, without those GPUs",
        description="Predict, from a meta-device trace and PyTorch's CUDA caching-allocator "
                    "model, the largest batch of a training step that fits each GPU, next to "
                    "the GPUs' memory, bandwidth and dense FLOP/s per dtype. Nothing runs on a "
                    "GPU; kernel-internal CUDA buffers (cuDNN workspaces) are not included.")
    add_workload_argument(p, positional=True, default=DEFAULT_WORKLOAD)
    p.add_argument("--gpus", default=DEFAULT_GPUS, metavar="LIST",
                   help=f"comma-separated GPU names (default {DEFAULT_GPUS})")
    add_what_if_argument(p)
    add_json_argument(p)
    parallel.add_arguments(p, "plan")  # issue 15
    p.set_defaults(handler=run)


def plan(workload_ref_: str, gpu_names: list[str], what_if: str | None = None) -> list[dict]:
    """One row per GPU (and per what-if scenario), as JSON-ready dicts (batchprof.plan)."""
    from batchprof.prediction.planning import plan as plan_rows

    return [row.to_dict() for row in plan_rows(workload_ref_, gpu_names, what_if=what_if)]


def run(args: argparse.Namespace, console) -> int:
    if parallel.requested(args):  # issue 15: --parallel / --nproc-per-node / --world-size
        return parallel.handle("plan", args, console)
    rows = plan(workload_ref(args), parse_gpu_names(args.gpus), args.what_if)
    if args.json:
        console.print_json(json.dumps({"workload": workload_ref(args), "gpus": rows}))
        return 0
    from batchprof.render.prediction import plan_tables

    for scenario in dict.fromkeys(tuple(r["what_if"]) for r in rows):
        title = workload_ref(args) + (f" (what-if {'+'.join(scenario)})" if scenario else "")
        for renderable in plan_tables(title, [r for r in rows
                                              if tuple(r["what_if"]) == scenario]):
            console.print(renderable)
    return 0
