"""``batchprof report REPORT_DIR``: rebuild a report's files from its results.json.

Rewrites report.html, summary.md, the CSV tables and the plots with this version of batchprof
(for a report written by an older one, or after editing nothing but wanting the HTML page);
results.json itself is read, never changed in substance, and probes.jsonl is left alone.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report", help="rebuild report.html and the other files of a report from results.json",
        description="Read REPORT_DIR/results.json and write report.html, summary.md, "
                    "results.csv, probes.csv and the plots again, next to it.")
    p.add_argument("report_dir", metavar="REPORT_DIR",
                   help="a directory written by `batchprof run` (holding results.json)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace, console: Any) -> int:
    from batchprof.errors import ConfigError
    from batchprof.render.files import load_result, write_report

    directory = Path(args.report_dir)
    source = directory / "results.json"
    if not source.is_file():
        what = "is not a directory" if not directory.is_dir() else "has no results.json"
        raise ConfigError(f"{directory} {what}: give a report directory written by "
                          "`batchprof run`")
    try:
        result = load_result(directory)
    except (ValueError, KeyError, TypeError) as exc:  # JSONDecodeError is a ValueError
        raise ConfigError(f"{source} does not load as a batchprof result: "
                          f"{type(exc).__name__}: {exc}") from None
    files = write_report(result, directory)
    written = sorted(p.name for p in files.directory.iterdir() if p.is_file())
    console.print(f"rebuilt {files.directory}: {', '.join(written)}", highlight=False,
                  soft_wrap=True)
    return 0
