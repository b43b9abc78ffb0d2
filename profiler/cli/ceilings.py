"""``batchprof ceilings``: measure this device's memory bandwidth and matmul FLOP/s per dtype."""

from __future__ import annotations

import argparse
import json
import statistics
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
        console.print(ceilings_table(result))
    return 0


def ceilings_table(result: Any) -> Any:
    """One row per probe: peak rate (from the best time), size run, and the repeats' spread."""
    from rich.table import Table

    from batchprof.units import format_bytes

    n_threads = result.num_threads
    threads = f", {n_threads} thread{'s' if n_threads != 1 else ''}" if n_threads else ""
    table = Table(title=f"ceilings of {result.device} ({result.device_name}{threads}) "
                        f"via {result.method}")
    table.add_column("probe", style="bold")
    table.add_column("peak", justify="right")
    table.add_column("size", justify="right")
    table.add_column("best time", justify="right")
    table.add_column("median time", justify="right")
    table.add_column("spread (IQR / median)", justify="right")

    def spread(key: str) -> tuple[str, str, str]:
        # The peak comes from the best time; a large spread says the machine was busy.
        times = result.raw_times_s[key]
        best, median = min(times), statistics.median(times)
        if len(times) < 2:
            return f"{best * 1e3:.2f} ms", f"{median * 1e3:.2f} ms", "n/a"
        q1, _, q3 = statistics.quantiles(times, n=4, method="inclusive")
        return f"{best * 1e3:.2f} ms", f"{median * 1e3:.2f} ms", f"{(q3 - q1) / median:.0%}"

    array = format_bytes(result.sizes["stream_bytes_per_array"])
    for probe, gbps in result.bandwidth_gbps.items():
        arrays = 2 if probe == "copy" else 3
        table.add_row(f"{probe} bandwidth", f"{gbps:.1f} GB/s", f"{arrays} x {array}",
                      *spread(probe))
    for dtype, flops in result.flops_per_s.items():
        n = result.sizes[f"matmul_n_{dtype}"]
        table.add_row(f"matmul {dtype}", f"{flops / 1e9:.1f} GFLOP/s", f"{n}^3",
                      *spread(f"matmul_{dtype}"))
    return table
