"""``batchprof doctor``: what batchprof sees on this machine and what it will do by default."""

from __future__ import annotations

import argparse
import json

from batchprof.cli.args import add_json_argument


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("doctor", help="versions, GPUs, and what batchprof will do on this machine",
                       description="Show torch/CUDA/driver/Triton/NVML versions, the GPUs and "
                                   "their memory, how the Triton kernels run, and what "
                                   "`--device auto` and the sampler resolve to here.")
    add_json_argument(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace, console) -> int:
    from batchprof.environment import environment
    from batchprof.render.doctor import doctor_renderables

    env = environment()
    if args.json:
        console.print_json(json.dumps(env))
    else:
        for renderable in doctor_renderables(env):
            console.print(renderable)
    return 0
