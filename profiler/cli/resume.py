"""``batchprof run --resume REPORT_DIR``: continue a killed or interrupted run from its probe log.

Every ``batchprof run`` writes ``run.json`` into its report directory before the first probe:
the workload reference and the run's options as parsed. ``--resume DIR`` reads it back, checks
that the command line asks for the same run (an option given now that differs from the recorded
one is a ConfigError naming it; options left out are taken from run.json), hands the finished
probes of ``probes.jsonl`` to ``profile(replay=...)`` so none is run again, appends the new
probes to the same log and writes the report into the same directory.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from batchprof import __version__
from batchprof.errors import ConfigError

RUN_FILE = "run.json"
FORMAT = 1
# Not part of what was run: where output goes and how, and the resume request itself.
_NOT_THE_RUN = {"resume", "out", "json", "handler", "command"}


def _recorded_options(args: argparse.Namespace) -> dict[str, Any]:
    out = {}
    for key, value in vars(args).items():
        if key in _NOT_THE_RUN:
            continue
        if value is None or isinstance(value, (bool, int, float, str)):
            out[key] = value
    return out


def write_run_file(directory: Path, args: argparse.Namespace, workload: str) -> None:
    """run.json: what this run is, so ``--resume`` can continue it (written atomically)."""
    from batchprof.render.atomic import write_text_atomic

    payload = {"format": FORMAT, "batchprof": __version__, "workload": workload,
               "options": _recorded_options(args)}
    write_text_atomic(directory / RUN_FILE, json.dumps(payload, indent=1) + "\n")


def resume_request(args: argparse.Namespace) -> tuple[argparse.Namespace, Path, list[Any]]:
    """(the recorded run's options as args, its report directory, its finished probes).

    Raises ConfigError when the directory is not a resumable run (no run.json, a run that
    finished), or when an option given on this command line differs from the recorded one.
    """
    from batchprof.cli.main import build_parser
    from batchprof.render.files import PROBE_LOG, read_probe_log

    directory = Path(args.resume)
    run_file = directory / RUN_FILE
    if not run_file.is_file():
        raise ConfigError(f"--resume {str(directory)!r}: no {RUN_FILE} there; name a report "
                          "directory written by `batchprof run` (it holds probes.jsonl)")
    try:
        recorded = json.loads(run_file.read_text(encoding="utf-8"))
        options = dict(recorded["options"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"--resume: {run_file} is not a run record "
                          f"({type(exc).__name__}); it cannot be resumed") from None
    _refuse_finished(directory)
    defaults = vars(build_parser().parse_args(["run"]))
    for key, then in options.items():
        now = getattr(args, key, then)
        if now != defaults.get(key) and now != then:
            flag = "workload" if key in ("workload", "workload_opt") else \
                "--" + key.replace("_", "-")
            raise ConfigError(f"--resume {str(directory)!r}: that run was made with {flag} "
                              f"{then!r}, this command gives {now!r}; resume with the same "
                              "options, or give none (they are read from run.json)")
    merged = argparse.Namespace(**{**vars(args), **options})
    log = directory / PROBE_LOG
    probes = read_probe_log(log) if log.exists() else []
    return merged, directory, probes


def _refuse_finished(directory: Path) -> None:
    results = directory / "results.json"
    if not results.is_file():
        return
    try:
        done = json.loads(results.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return  # a torn results.json: the run did not finish writing it
    if not done.get("interrupted") and not done.get("error"):
        raise ConfigError(f"--resume {str(directory)!r}: that run finished (results.json is "
                          "complete); there is nothing to resume. Start a new run instead")
