"""What tests/test_distributed_cli.py runs under torchrun: the distributed handler of a
``run``/``measure``-shaped parser (the same arguments the real subcommands add)."""

from __future__ import annotations

import argparse
import sys

from rich.console import Console

from batchprof.cli import parallel
from batchprof.cli.args import add_device_arguments, add_workload_argument
from batchprof.errors import BatchprofError


def main(argv: list[str]) -> int:
    command, rest = argv[0], argv[1:]
    p = argparse.ArgumentParser()
    add_workload_argument(p, positional=True, default="mlp")
    add_device_arguments(p)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--min-batch", type=int, default=1)
    p.add_argument("--max-batch", type=int, default=None)
    p.add_argument("--multiple-of", type=int, default=1)
    p.add_argument("--alpha", type=float, default=0.9)
    p.add_argument("--out", default="reports")
    parallel.add_arguments(p, command)
    args = p.parse_args(rest)
    try:
        return parallel.handle(command, args, Console(), [command, *rest])
    except BatchprofError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
