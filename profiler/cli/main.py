"""The ``batchprof`` command: parse arguments, call the library, hand results to a renderer.

Each subcommand lives in ``batchprof.cli.<name>`` with ``add_parser(subparsers)`` and
``run(args, console) -> int``. Any BatchprofError becomes a one-line message and exit code 2;
Ctrl-C exits 130 (commands that gather results write what they have before re-raising).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from batchprof import __version__
from batchprof.errors import BatchprofError

COMMANDS = ("run", "measure", "predict", "plan", "ceilings", "doctor", "noise")


EXIT_USAGE = 2


def _available_commands() -> list[str]:
    names = []
    for name in COMMANDS:
        try:
            importlib.import_module(f"{__package__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__package__}.{name}":
                raise
            continue
        names.append(name)
    return names


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="batchprof",
        description="Find the largest batch that fits and the batch where throughput stops "
                    "improving, for a PyTorch training step, on a GPU or on the CPU.",
    )
    parser.add_argument("--version", action="version", version=f"batchprof {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _available_commands():
        importlib.import_module(f"{__package__}.{name}").add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from rich.console import Console

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    console = Console()
    err = Console(stderr=True)
    try:
        return int(args.handler(args, console) or 0)
    except BatchprofError as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        return EXIT_USAGE
    except KeyboardInterrupt:
        err.print("interrupted", highlight=False)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
