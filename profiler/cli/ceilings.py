"""``batchprof ceilings``: measure this device's memory bandwidth and matmul FLOP/s per dtype."""

from __future__ import annotations

import argparse
import json
from typing import Any

from batchprof.cli.args import add_json_argument


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ceilings", help="measure peak memory bandwidth and matmul FLOP/s (the roofline)",
        description="Measure the device's real ceilings: copy and STREAM-triad bandwidth, and "
                    "matmul FLOP/s per dtype. CUDA uses batchprof's Triton kernels timed with "
                    "CUDA events; the CPU times plain torch ops.")
    p.add_argument("--device", default="auto",
                   help="auto (cuda when present, else cpu), cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--stream-size", default=None, metavar="SIZE",
                   help="bytes per bandwidth array, e.g. 256MiB (default: several times the "
                        "last-level cache)")
    p.add_argument("--matmul-n", type=int, default=None, metavar="N",
                   help="side of the square matmuls (CPU: the largest tried; default 1024 on "
                        "the CPU, 8192 on CUDA)")
    p.add_argument("--repeats", type=int, default=None, help="timed runs per probe")
    add_json_argument(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace, console: Any) -> int:
    from batchprof.backends import resolve_device
    from batchprof.roofline.ceilings import ceilings
    from batchprof.units import parse_bytes

    stream_bytes = None if args.stream_size is None else parse_bytes(args.stream_size)
    result = ceilings(resolve_device(args.device), stream_bytes=stream_bytes,
                      matmul_n=args.matmul_n, repeats=args.repeats)
    if args.json:
        console.print_json(json.dumps(result.to_dict()))
    else:
        from batchprof.render.tables import ceilings_table

        console.print(ceilings_table(result))
    return 0
