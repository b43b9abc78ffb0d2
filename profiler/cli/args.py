"""Arguments several subcommands share, parsed the same way everywhere."""

from __future__ import annotations

import argparse


def add_workload_argument(parser: argparse.ArgumentParser, *, positional: bool = True,
                          default: str | None = None) -> None:
    help_text = ("a built-in workload (mlp, cnn, transformer, lstm) or 'package.module:attr' "
                 "naming a batchprof.Workload or a zero-argument callable returning one")
    if positional:
        parser.add_argument("workload", nargs="?" if default else None, default=default,
                            help=help_text + (f" (default: {default})" if default else ""))
    parser.add_argument("--workload", dest="workload_opt", default=None, metavar="WORKLOAD",
                        help="same as the positional argument")


def workload_ref(args: argparse.Namespace) -> str:
    return args.workload_opt or args.workload


def add_device_arguments(parser: argparse.ArgumentParser, *, default_device: str = "cpu") -> None:
    parser.add_argument("--device", default=default_device,
                        help=f"auto, cpu, cuda or cuda:N (default: {default_device})")
    parser.add_argument("--memory-limit", default=None, metavar="SIZE",
                        help="memory budget for a step, e.g. 512MiB, 2GiB, 1.5GB; on CUDA it "
                             "emulates a smaller GPU")


def add_json_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
