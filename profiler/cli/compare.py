"""``batchprof compare OLD NEW``: two runs side by side; exit 1 when a threshold is crossed.

OLD and NEW are report directories, their results.json, or pytest-benchmark JSONs carrying
batchprof's figures in ``extra_info`` (see :mod:`batchprof.compare`). Thresholds are
percentages (``5%``) or fractions (``0.05``); none given, nothing is flagged and the exit code
is 0. Exit codes: 0 no regression, 1 regression past a threshold, 2 bad input (for CI).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

EXIT_REGRESSION = 1


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare", help="compare two runs: peak memory, throughput, max batch; fail on regressions",
        description="Show, per batch size, the peak memory and throughput of two runs side by "
                    "side with the change, and each run's max batch. OLD and NEW are report "
                    "directories, results.json files or pytest-benchmark JSONs with batchprof "
                    "figures in extra_info. Exits 1 when a threshold given is crossed.")
    p.add_argument("old", help="the baseline: report dir, results.json or benchmark JSON")
    p.add_argument("new", help="the run to check against it")
    p.add_argument("--max-peak-increase", metavar="PCT", default=None,
                   help="flag a peak-memory rise above this, e.g. 5%% (a batch that fit and no "
                        "longer does is flagged too)")
    p.add_argument("--max-throughput-decrease", metavar="PCT", default=None,
                   help="flag a samples/s drop above this, e.g. 10%%")
    p.add_argument("--max-batch-decrease", metavar="PCT", default=None,
                   help="flag a max-batch drop above this, e.g. 0%%")
    p.add_argument("--json", action="store_true", help="print the comparison as JSON")
    p.set_defaults(handler=run)


def thresholds_from(args: argparse.Namespace) -> Any:
    from batchprof.compare import Thresholds, parse_fraction

    def frac(value: str | None, option: str) -> float | None:
        return None if value is None else parse_fraction(value, option)

    return Thresholds(
        max_peak_increase=frac(args.max_peak_increase, "--max-peak-increase"),
        max_throughput_decrease=frac(args.max_throughput_decrease, "--max-throughput-decrease"),
        max_batch_decrease=frac(args.max_batch_decrease, "--max-batch-decrease"))


def run(args: argparse.Namespace, console: Any) -> int:
    from batchprof.compare import compare, load_figures
    from batchprof.render.tables import comparison_tables

    thresholds = thresholds_from(args)  # bad thresholds fail before any file is read
    result = compare(load_figures(args.old), load_figures(args.new), thresholds)
    if args.json:
        console.print_json(json.dumps(result.to_dict(), default=str))
    else:
        for table in comparison_tables(result):
            console.print(table)
        for note in result.notes:
            console.print(f"  [dim]note: {note}[/]", highlight=False, soft_wrap=True)
        flagged = result.regressions
        if flagged:
            console.print(f"[bold red]{len(flagged)} regression(s):[/]", highlight=False)
            for row in flagged:
                where = f"batch {row.batch_size}" if row.batch_size is not None else "run"
                console.print(f"  {row.subject} {where}: {row.why}", highlight=False,
                              soft_wrap=True)
        elif any(v is not None for v in vars(thresholds).values()):
            console.print("no regression past the thresholds given", highlight=False)
        else:
            console.print("no thresholds given (--max-peak-increase ...): nothing flagged",
                          highlight=False)
    return EXIT_REGRESSION if result.regressions else 0
