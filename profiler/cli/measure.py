"""``batchprof measure``: one batch size, one table (or JSON)."""

from __future__ import annotations

import argparse
import json

from batchprof import defaults
from batchprof.cli.args import (
    add_device_arguments,
    add_json_argument,
    add_workload_argument,
    workload_ref,
)

from . import parallel

# A measured size that does not fit: the run worked, the answer is "no" (bad input is 2).
EXIT_INFEASIBLE = 3


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("measure", help="measure one batch size: fits?, peak memory, throughput",
                       description="Run the real training step at one batch size and report "
                                   "peak memory, activation bytes and throughput. Exit code: "
                                   "0 when it fits, 3 when it does not (out of memory or over "
                                   "--memory-limit), 2 for bad input.")
    add_workload_argument(p, positional=True, default=defaults.WORKLOAD)
    p.add_argument("--batch-size", "-b", type=int, required=True, help="batch size to measure")
    add_device_arguments(p)
    p.add_argument("--steps", type=int, default=5, help="timed steps after warm-up (default 5)")
    p.add_argument("--sampler", default="auto", choices=("auto", "nvml", "psutil", "none"),
                   help="sample the device during the timed steps: NVML on a GPU, psutil on "
                        "the CPU (default: auto)")
    add_json_argument(p)
    parallel.add_arguments(p, "measure")  # issue 15
    p.set_defaults(handler=run)


def run(args: argparse.Namespace, console) -> int:
    if parallel.requested(args):  # issue 15: --parallel / --nproc-per-node / --world-size
        return parallel.handle("measure", args, console)
    from batchprof.backends import resolve_device
    from batchprof.probe.step import TimingPolicy, measure
    from batchprof.render.tables import measurement_table
    from batchprof.sampling.factory import device_sampler

    device = resolve_device(args.device)
    with device_sampler(args.sampler, device) as sampler:
        m = measure(workload_ref(args), args.batch_size, device=device,
                    memory_limit=args.memory_limit, sampler=sampler,
                    timing=TimingPolicy(timed_steps=args.steps,
                                        max_timed_steps=max(args.steps, 5)))
    if args.json:
        console.print_json(json.dumps(m.to_dict()))
    else:
        console.print(measurement_table(m))
    return 0 if m.feasible else EXIT_INFEASIBLE
